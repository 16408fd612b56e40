"""A REST API for a trained model: ``hfkit serve RUN_DIR`` (FastAPI on uvicorn).

The task registry says which endpoint a model gets: ``POST /predict`` (image files as multipart
``image`` fields, or texts as JSON), ``POST /qa`` (JSON) or ``POST /generate`` (JSON in, the text
streamed out as it is produced); every model has ``GET /health`` and its OpenAPI page at ``/docs``
(served from the package, so it works offline). Predictions are those of :mod:`hfkit.inference`,
the same as ``hfkit predict`` / ``hfkit qa``.

Requests that arrive together run as one batch (:class:`Batcher`): a forward pass of 16 images
costs far less than 16 passes of one. Bad input is a 4xx with ``{"error": ...}`` saying what was
wrong, and the server goes on serving; bodies must state their size and are refused beyond
``max_upload_bytes``; it binds 127.0.0.1 unless told otherwise.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations as objects, and
# their types are imported inside the functions (fastapi loads only when a server starts).
import argparse
import asyncio
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from hfkit.results import ResultFolder, read_result

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
MAX_UPLOAD_BYTES = 10 * 2**20  # per request: a few photos
MAX_BATCH = 32  # inputs per forward pass
MAX_WAIT_SECONDS = 0.002  # how long the first request of a batch waits for company
MAX_TOP_K = 100
# One request may not hold the server: its inputs all queue before another client's, and a QA
# context costs a forward pass per window of it (a 20,000-character Chinese one: ~85 windows of 384
# tokens overlapping by 128)
MAX_INPUTS = 256  # images or texts per request
MAX_CONTEXT_CHARS = 20_000  # longer texts: `hfkit qa --context-file`, which takes any length


class Batcher:
    """Runs ``run(items) -> results`` on batches of the items that callers await together.

    One worker takes the first waiting item, gathers what else arrives within ``max_wait`` (up to
    ``max_batch``), and runs the batch in a thread, so the event loop keeps accepting requests;
    those queue meanwhile and form the next batch. A batch that fails fails each of its callers.
    """

    def __init__(self, run: Callable[[list], list], max_batch: int = MAX_BATCH,
                 max_wait: float = MAX_WAIT_SECONDS) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait
        self.batches = self.items = 0
        self._queue: asyncio.Queue | None = None

    async def __call__(self, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    async def work(self) -> None:
        self._queue = asyncio.Queue()
        while True:
            batch = [await self._queue.get()]
            await asyncio.sleep(self.max_wait)  # company arriving meanwhile joins the batch
            # get_nowait, not a cancelled wait_for(get()): before Python 3.12 that can drop an item
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await asyncio.to_thread(self.run, [item for item, _ in batch])
            except Exception as e:  # one bad input fails its batch: run each alone, so it fails alone
                results = [e] if len(batch) == 1 else [await self._alone(item) for item, _ in batch]
            self.batches, self.items = self.batches + 1, self.items + len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():  # the client may have gone
                    (future.set_exception if isinstance(result, Exception) else future.set_result)(result)

    async def _alone(self, item: Any) -> Any:
        try:
            return (await asyncio.to_thread(self.run, [item]))[0]
        except Exception as e:
            return e


class InputError(ValueError):
    """Bad input from a client: a 400 with this message."""
    status = 400


class TooMuch(InputError):
    """More input in one request than this server takes: a 413."""
    status = 413


def create_app(model: str, max_batch: int = MAX_BATCH, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               max_inputs: int = MAX_INPUTS):
    """The FastAPI app serving ``model`` (a result folder or Hub id); the model loads now, so a bad
    folder fails here rather than at the first request."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from fastapi_offline import FastAPIOffline

    folder = read_result(model)
    task = folder.task
    endpoint = _ENDPOINTS[task.name]
    route, batcher = endpoint(folder, model, max_batch, max_inputs)

    @asynccontextmanager
    async def lifespan(app):
        worker = asyncio.create_task(batcher.work()) if batcher else None
        yield
        if worker:
            worker.cancel()

    app = FastAPIOffline(title=f"hfkit: {_shown_name(model)}", lifespan=lifespan,
                         description=f"A {task.name} model trained with hfkit. {route.__doc__ or ''}")
    app.add_middleware(_BodyLimit, limit=max_upload_bytes)
    path = "/" + task.command.split()[0]
    app.post(path, summary=route.__doc__)(route)

    @app.get("/health")
    def health() -> dict:
        """Whether the server is up, what it serves, and how requests were batched."""
        return {"status": "ok", "model": _shown_name(model), "task": task.name, "endpoint": f"POST {path}",
                "labels": folder.labels if task.labels else None,
                "batches": batcher.batches if batcher else 0, "inputs": batcher.items if batcher else 0}

    @app.exception_handler(InputError)
    async def bad_input(request: Request, e: InputError):
        return JSONResponse({"error": str(e)}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return JSONResponse({"error": f"the request does not fit POST {path}: {where} (see /docs)"},
                            status_code=422)

    @app.exception_handler(404)
    async def not_here(request: Request, e):
        return JSONResponse({"error": f"no {request.method} {request.url.path} here: this server runs a "
                             f"{task.name} model, served at POST {path} (see /docs)"}, status_code=404)

    return app


# -- one endpoint per task ----------------------------------------------------------------------

def _classify(folder: ResultFolder, model: str, max_batch: int, max_inputs: int):
    from fastapi import Body, File, Query, UploadFile

    predictor = folder.predictor()(model)  # onnxruntime for an export folder
    images = folder.family == "timm"

    def run(items: list[tuple[Any, int]]) -> list:
        ranked = predictor.predict([x for x, _ in items], top_k=max(k for _, k in items))
        return [r[:k] for r, (_, k) in zip(ranked, items)]

    batcher = Batcher(run, max_batch)

    def check_count(n: int) -> None:
        if n > max_inputs:
            raise TooMuch(f"{n} {'images' if images else 'texts'} in one request; this server takes at most "
                          f"{max_inputs}: send them in several requests")

    async def answer(inputs: Sequence, top_k: int) -> dict:
        if not inputs:
            raise InputError("no input: send " + ("one or more 'image' files" if images else
                                                 'JSON such as {"texts": ["A text to classify."]}'))
        check_count(len(inputs))
        ranked = await asyncio.gather(*(batcher((x, top_k)) for x in inputs))
        return {"predictions": [[{"label": label, "score": score} for label, score in r] for r in ranked]}

    if images:
        async def predict(image: Annotated[list[UploadFile], File(description="one or more image files")],
                          top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 5) -> dict:
            """Classify the uploaded images (multipart field `image`, repeated for several)."""
            check_count(len(image))  # before decoding any
            decoded = [await _decode(predictor, f) for f in image]
            return await answer(decoded, top_k)
        return predict, batcher

    async def predict_texts(texts: Annotated[list[str], Body(description="texts to classify")],
                            top_k: Annotated[int, Body(ge=1, le=MAX_TOP_K)] = 5) -> dict:
        """Classify texts: `{"texts": ["...", ...], "top_k": 2}`."""
        if any(not t.strip() for t in texts):
            raise InputError("an empty text: send the text to classify")
        return await answer(texts, top_k)
    return predict_texts, batcher


async def _decode(predictor, upload) -> Any:
    """An uploaded image decoded as ``hfkit predict`` decodes a file (off the event loop)."""
    from hfkit.data.transforms import UNREADABLE

    data = await upload.read()
    try:
        return await asyncio.to_thread(predictor.load, data)
    except UNREADABLE as e:
        raise InputError(f"cannot read {upload.filename or 'the upload'} as an image "
                         f"({type(e).__name__}: {e})") from None


def _answer_questions(folder: ResultFolder, model: str, max_batch: int, max_inputs: int):
    from fastapi import Body

    settings = folder.qa_settings()
    answerer = folder.predictor()(model, max_length=settings["max_length"], doc_stride=settings["doc_stride"])

    def run(items: list[tuple[str, str, int]]) -> list:
        questions, contexts, ks = zip(*items)
        found = answerer(questions, contexts, top_k=max(ks),
                         max_answer_length=settings["max_answer_length"])
        return [answers[:k] for answers, k in zip(found, ks)]

    batcher = Batcher(run, max_batch)

    async def qa(question: Annotated[str, Body(description="the question, in the context's language")],
                 context: Annotated[str, Body(description="the text that holds the answer")],
                 top_k: Annotated[int, Body(ge=1, le=20)] = 1) -> dict:
        """Answer a question from a context: `{"question": "...", "context": "..."}`; the answers
        are spans of the context with their character offsets and scores."""
        if not question.strip() or not context.strip():
            raise InputError("send both a question and a context (neither may be empty)")
        if len(context) > MAX_CONTEXT_CHARS:
            raise TooMuch(f"the context has {len(context):,} characters; this server takes at most "
                          f"{MAX_CONTEXT_CHARS:,}: send the part that holds the answer, or search a long "
                          "text with `hfkit qa --context-file FILE`")
        try:
            return {"answers": await batcher((question, context, top_k))}
        except ValueError as e:  # a question too long for the window, text in an unknown script
            raise InputError(str(e)) from None
    return qa, batcher


def _generate(folder: ResultFolder, model: str, max_batch: int, max_inputs: int):
    from fastapi import Body
    from fastapi.responses import StreamingResponse

    from hfkit.inference import _load_causal_lm, generate_stream

    folder.predictor()  # an export folder cannot generate yet: says so
    _load_causal_lm(model, None)  # now, so a broken folder fails at start-up; generate_stream reuses it

    async def generate(prompt: Annotated[str, Body(description="the text to continue")],
                       max_new_tokens: Annotated[int, Body(ge=1, le=1024)] = 50,
                       temperature: Annotated[float, Body(ge=0)] = 1.0,
                       top_k: Annotated[int | None, Body(ge=1)] = None,
                       top_p: Annotated[float | None, Body(gt=0, le=1)] = None,
                       seed: Annotated[int | None, Body()] = None) -> StreamingResponse:
        """Continue a prompt: `{"prompt": "Once upon a time", "max_new_tokens": 50}`; the reply is
        plain text, streamed piece by piece as tokens are produced."""
        if not prompt.strip():
            raise InputError("the prompt is empty: send the beginning of a text")
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       seed=seed)
        pieces = generate_stream(model, prompt, **options)
        # the first piece before the reply starts: a prompt too long for the model is then a 400
        first = await asyncio.to_thread(_first, pieces)

        def stream():  # Starlette runs a plain generator in a thread
            sent = ""
            for text in (first, *pieces) if first is not None else ():
                yield text[len(sent):]
                sent = text
        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")
    return generate, None


def _first(pieces):
    try:
        return next(pieces)
    except StopIteration:
        return None
    except ValueError as e:  # a prompt too long for the model, said as what to do
        raise InputError(str(e)) from None


_ENDPOINTS = {"image-classification": _classify, "text-classification": _classify,
              "question-answering": _answer_questions, "causal-lm": _generate}


class _BodyLimit:
    """Refuse a request body beyond ``limit`` bytes (413) before it is read, and one that does not
    say its size (411): a stated Content-Length is what the HTTP server holds the client to."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            refusal = None
            if length is None or b"transfer-encoding" in headers:  # h11 lets chunking override the length
                refusal = 411, "the request must state its size (Content-Length), not be sent in chunks"
            elif not length.isdigit() or int(length) > self.limit:
                refusal = 413, (f"the request is larger than this server takes ({self.limit / 2**20:g} MiB): "
                                "send fewer or smaller files per request")
            if refusal:
                from fastapi.responses import JSONResponse

                await JSONResponse({"error": refusal[1]}, status_code=refusal[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _shown_name(model: str) -> str:
    path = Path(model).expanduser()
    return path.resolve().name if path.exists() else model


def serve(model: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, max_batch: int = MAX_BATCH,
          max_upload_bytes: int = MAX_UPLOAD_BYTES, max_inputs: int = MAX_INPUTS) -> None:
    """Load ``model`` and serve it until interrupted."""
    import uvicorn

    app = create_app(model, max_batch=max_batch, max_upload_bytes=max_upload_bytes, max_inputs=max_inputs)
    shown = "localhost" if host == DEFAULT_HOST else host
    print(f"Serving {_shown_name(model)} on http://{shown}:{port} (API page: http://{shown}:{port}/docs)"
          + ("" if host == DEFAULT_HOST else "; reachable from other machines: it has no authentication"))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve a model as a REST API (POST /predict, /qa or /generate)",
                       description="Serve a result folder or Hub model over HTTP: the endpoint its task "
                       "uses, GET /health, and the API page at /docs. Requests arriving together run "
                       "as one batch. Try it: curl -F image=@ant.jpg http://127.0.0.1:8000/predict")
    p.add_argument("model", help="result folder (runs/ants), export folder (runs/ants/onnx) or its "
                                 "model.int8.onnx, model folder or Hub id")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
                        "network, with no authentication)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--max-batch", type=_positive, default=MAX_BATCH,
                   help=f"inputs per forward pass when requests arrive together (default {MAX_BATCH})")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20,
                   help=f"largest request body in MiB (default {MAX_UPLOAD_BYTES / 2**20:g})")
    p.add_argument("--max-inputs", type=_positive, default=MAX_INPUTS,
                   help=f"most images or texts in one request (default {MAX_INPUTS})")
    p.set_defaults(func=serve_command)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got '{text}'")
    return int(text)


def serve_command(args: argparse.Namespace) -> int:
    from hfkit.offline import go_offline_if_unreachable

    go_offline_if_unreachable()
    serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_inputs=args.max_inputs)
    return 0
