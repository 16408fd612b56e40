"""Web demos of trained models (Gradio): image classification, Chinese extractive QA, sentiment and
text generation, each a thin page over :mod:`hfkit.inference` (no second copy of preprocessing).

``hfkit demo RUN_DIR`` picks the demo from the run's task and serves it on http://127.0.0.1:7860;
``spaces/<name>/app.py`` serve one demo each, for the model named by the ``MODEL`` variable.

Safe defaults: bound to 127.0.0.1 (Hugging Face Spaces set ``GRADIO_SERVER_NAME`` themselves), no
share link unless asked, uploads up to :data:`MAX_FILE_SIZE`, no folder served beyond the demo's
own uploads and example files, analytics off, and nothing fetched from outside when the page
loads (the theme uses the system's fonts). Bad input shows a message in the page, which stays until
the user closes it or makes the next request; the demo goes on serving. Gradio and the models are
imported only when a demo is built, so importing this module (as ``hfkit --help`` does) stays cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio as gr

DEMOS = ("image", "qa", "sentiment", "generation")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "10mb"
MAX_TEXT_CHARS = 20_000  # longest question/context/review/prompt accepted (characters)
IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Noto Sans",
                "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", "sans-serif"]
SYSTEM_MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "Liberation Mono", "monospace"]
REPO = Path(__file__).resolve().parent.parent
SHIPPED_EXAMPLES = REPO / "spaces" / "image-classifier" / "examples"  # present in a repository checkout

QA_EXAMPLE = ("谁是人工智能之父？", "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。")
SENTIMENT_EXAMPLES = ["A wonderful film: the actors were brilliant and the story kept me hooked.",
                      "This movie was a waste of two hours."]
GENERATION_EXAMPLE = "Once upon a time"


def _gradio():
    """Import gradio with its analytics off (it reads the variable when it would send them)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio

    return gradio


# -- which demo -----------------------------------------------------------------------------------

def pick_demo(name_or_path: str | os.PathLike) -> str:
    """The demo for a result folder or Hub model: one of :data:`DEMOS`, from its task (the saved
    recipe's, else what its config.json's architecture says; see :mod:`hfkit.results`)."""
    from hfkit.results import read_result

    return read_result(str(name_or_path)).task.demo


def _shown_name(name_or_path: str) -> str:
    """What the page calls the model: a folder's name (never the machine's paths) or the Hub id."""
    path = Path(name_or_path).expanduser()
    return path.resolve().name if path.exists() else name_or_path


def _blocks(title: str):
    """``gr.Blocks`` with analytics off; gradio 5 takes the theme here (gradio 6: in ``launch``)."""
    import inspect

    gr = _gradio()
    themed = "theme" in inspect.signature(gr.Blocks.__init__).parameters
    return gr.Blocks(title=title, analytics_enabled=False, **({"theme": theme()} if themed else {}))


def _user_error(message: str):
    gr = _gradio()
    # shown until the user closes it or makes the next request (see CLEAR_ERRORS_JS), not for 10 s
    return gr.Error(message, duration=None, print_exception=False)


# A new request makes the messages still shown about an earlier try stale, but gradio has no call to
# dismiss them: the page closes them itself (gradio groups its error messages under one close button).
CLEAR_ERRORS_JS = ("() => { document.querySelectorAll('.toast-body.error [data-testid=toast-close]')"
                   ".forEach((button) => button.click()); }")


def _closes_old_errors(*triggers) -> None:
    """When a request starts from any of ``triggers`` (e.g. ``button.click``), close the error
    messages on the page: what shows is then about the latest try only.

    Call it before adding the request's own listener: gradio runs the listeners of one trigger in
    the order they were added, each after the one before has finished, so one added after the
    request would close the request's own new message."""
    _gradio().on(list(triggers), None, None, None, js=CLEAR_ERRORS_JS)


def _text(value, what: str, example: str) -> str:
    """A non-empty text of at most MAX_TEXT_CHARS characters, else a message for the page."""
    if not isinstance(value, str) or not value.strip():
        raise _user_error(f"The {what} is empty: type {example}.")
    if len(value) > MAX_TEXT_CHARS:
        raise _user_error(f"The {what} is {len(value):,} characters long; this demo takes at most "
                          f"{MAX_TEXT_CHARS:,}. Shorten it.")
    return value


# -- the four demos -------------------------------------------------------------------------------

def image_demo(model, examples: str | os.PathLike | Sequence | None = None, top_k: int = 5) -> gr.Blocks:
    """Upload an image, get the top-k classes with their probabilities.

    ``model`` is a result folder, Hub id or a loaded :class:`hfkit.inference.ImageClassifier`;
    ``examples`` a folder of images or a list of image files offered below the upload box.
    """
    gr = _gradio()
    from hfkit.inference import ImageClassifier
    from hfkit.results import read_result

    name = str(model) if not isinstance(model, ImageClassifier) else "model"
    # an export folder or its model.int8.onnx runs on onnxruntime, as hfkit predict runs it
    classifier = model if isinstance(model, ImageClassifier) else read_result(name).predictor()(name)
    n_labels = len(classifier.labels)
    from gradio.utils import get_upload_folder

    upload_root = Path(get_upload_folder()).resolve()

    def classify(image, k):
        path = _uploaded_path(image, upload_root)
        try:
            picture = classifier.load(path)  # decoded exactly as the evaluation set was
        except Exception as e:  # not an image, truncated, a decompression bomb, ...
            raise _user_error(f"Cannot read '{Path(path).name}' as an image ({type(e).__name__}). "
                              "Upload a JPEG, PNG or WebP picture.") from e
        (ranked,) = classifier.predict([picture], top_k=int(k or top_k))
        return dict(ranked)

    with _blocks("hfkit · image classification") as demo:
        gr.Markdown(f"## Image classification\nModel: `{_shown_name(name)}` · {n_labels} classes. "
                    "Upload a picture (up to 10 MB) and press **Classify**.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", height=300,
                                 elem_id="image")
                k = gr.Slider(1, max(n_labels, 1), value=min(top_k, n_labels), step=1, label="Classes shown",
                              elem_id="top-k", visible=n_labels > 1)
                button = gr.Button("Classify", variant="primary", elem_id="run")
            with gr.Column():
                labels = gr.Label(label="Top classes", elem_id="labels")
        files = _example_images(examples)
        if files:
            gr.Examples([[f] for f in files], inputs=[image], label="Examples")
        # preprocess=False: the uploaded file's own bytes reach the classifier (gradio would re-encode
        # some images), and an unreadable file gets our message instead of a bare "Error"
        _closes_old_errors(button.click)
        button.click(classify, [image, k], labels, preprocess=False, api_name="classify")
    return demo


def _uploaded_path(value, upload_root: Path) -> str:
    """The server-side file of an uploaded image, which must lie in gradio's upload folder."""
    path = value.get("path") if isinstance(value, dict) else value
    if not path:
        raise _user_error("No image: upload a picture (or click an example) first.")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(upload_root) or not resolved.is_file():
        raise _user_error("This file was not uploaded to the demo: upload the picture again.")
    return str(resolved)


def _example_images(examples) -> list[str]:
    if examples is None:
        return []
    if isinstance(examples, (str, os.PathLike)):
        folder = Path(examples)
        if not folder.is_dir():
            raise FileNotFoundError(f"no examples folder '{examples}'")
        return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_TYPES)
    return [str(p) for p in examples]


def qa_demo(model) -> gr.Blocks:
    """Question + context (Chinese or any language the model knows) -> the answer, highlighted in the
    context, with its score. ``model`` is a folder, Hub id or a loaded ``QuestionAnswerer``; a result
    folder's recipe.yaml sets the window and answer length as in ``hfkit qa``."""
    gr = _gradio()
    from hfkit.inference import QuestionAnswerer, answer, load_answerer
    from hfkit.results import QA_DEFAULTS, read_result

    name = str(model) if not isinstance(model, QuestionAnswerer) else "model"
    # what training used (a result folder), else hfkit qa's defaults
    settings = argparse.Namespace(**(QA_DEFAULTS if isinstance(model, QuestionAnswerer)
                                     else read_result(name).qa_settings()))
    qa = model if isinstance(model, QuestionAnswerer) else load_answerer(
        name, max_length=settings.max_length, doc_stride=settings.doc_stride)

    def ask(question, context):
        question = _text(question, "question", "a question about the context")
        context = _text(context, "context", "the text that holds the answer")
        try:
            found = answer(question, context, model=qa, max_answer_length=settings.max_answer_length)
        except ValueError as e:  # a question too long for the window, text in an unknown script
            raise _user_error(str(e)[:1].upper() + str(e)[1:]) from e
        start, end = found["start"], found["end"]
        spans = [(context[:start], None), (context[start:end], "answer"), (context[end:], None)]
        return [s for s in spans if s[0]], found["answer"], f"{found['score']:.4f}"

    with _blocks("hfkit · question answering") as demo:
        gr.Markdown(f"## Extractive question answering\nModel: `{_shown_name(name)}`. The answer is a span "
                    "of the context; its score is the softmax of start + end logits over the best answers.")
        with gr.Row():
            with gr.Column():
                question = gr.Textbox(label="Question", placeholder=QA_EXAMPLE[0], elem_id="question")
                context = gr.Textbox(label="Context", lines=6, placeholder=QA_EXAMPLE[1], elem_id="context")
                button = gr.Button("Answer", variant="primary", elem_id="run")
            with gr.Column():
                answer_box = gr.Textbox(label="Answer", interactive=False, elem_id="answer")
                score = gr.Textbox(label="Score", interactive=False, elem_id="score")
                highlighted = gr.HighlightedText(label="Answer in the context", show_legend=False,
                                                 color_map={"answer": "#facc15"}, show_inline_category=False,
                                                 elem_id="highlighted")
        gr.Examples([list(QA_EXAMPLE)], inputs=[question, context], label="Example")
        _closes_old_errors(button.click, question.submit)
        gr.on([button.click, question.submit], ask, [question, context], [highlighted, answer_box, score],
              api_name="answer")
    return demo


def sentiment_demo(model) -> gr.Blocks:
    """A text -> its label, with the probability of every label."""
    gr = _gradio()
    from hfkit.inference import TextClassifier
    from hfkit.results import read_result

    name = str(model) if not isinstance(model, TextClassifier) else "model"
    classifier = model if isinstance(model, TextClassifier) else read_result(name).predictor()(name)

    def classify(text):
        text = _text(text, "text", "a sentence or a review")
        (ranked,) = classifier.predict([text], top_k=len(classifier.labels))
        return dict(ranked)

    with _blocks("hfkit · sentiment") as demo:
        gr.Markdown(f"## Sentiment\nModel: `{_shown_name(name)}` · labels: "
                    f"{', '.join(map(str, classifier.labels))}.")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Text", lines=4, placeholder=SENTIMENT_EXAMPLES[0], elem_id="text")
                button = gr.Button("Classify", variant="primary", elem_id="run")
            with gr.Column():
                labels = gr.Label(label="Sentiment", elem_id="labels")
        gr.Examples([[t] for t in SENTIMENT_EXAMPLES], inputs=[text], label="Examples")
        _closes_old_errors(button.click)
        button.click(classify, text, labels, api_name="classify")
    return demo


def generation_demo(model) -> gr.Blocks:
    """A prompt and sampling controls -> the continuation, streamed as it is produced."""
    gr = _gradio()
    from hfkit.inference import _load_causal_lm, generate_stream
    from hfkit.text_models import position_limit

    name = str(model)
    lm, tokenizer = _load_causal_lm(name, None)  # loaded once now (generate_stream reuses it): errors now
    limit = position_limit(lm.config, tokenizer) if getattr(lm.config, "max_position_embeddings", None) \
        else 2048
    most = max(1, min(512, limit - 1))

    def run(prompt, max_new_tokens, temperature, top_k, top_p, repetition_penalty, seed):
        prompt = _text(prompt, "prompt", "the beginning of a text")
        seed = None if seed is None or seed == "" or int(seed) < 0 else int(seed)
        text = prompt
        try:
            for text in generate_stream(name, prompt, max_new_tokens=int(max_new_tokens),
                                        temperature=float(temperature), top_k=int(top_k) or None,
                                        top_p=float(top_p) if float(top_p) < 1 else None,
                                        repetition_penalty=float(repetition_penalty), seed=seed):
                yield text
        except ValueError as e:  # a prompt that leaves no room for the new tokens
            raise _user_error(str(e)[:1].upper() + str(e)[1:]) from e
        if text == prompt:
            yield text  # nothing new (an end-of-text token came first)

    with _blocks("hfkit · text generation") as demo:
        gr.Markdown(f"## Text generation\nModel: `{_shown_name(name)}` · reads at most {limit} tokens "
                    "(prompt and continuation). Temperature 0 is greedy decoding.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", lines=4, placeholder=GENERATION_EXAMPLE, elem_id="prompt")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", elem_id="run")
                    stop = gr.Button("Stop", elem_id="stop")
                with gr.Accordion("Sampling", open=True):
                    new_tokens = gr.Slider(1, most, value=min(50, most), step=1, label="New tokens",
                                           elem_id="max-new-tokens")
                    temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature (0: greedy)",
                                            elem_id="temperature")
                    top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k (0: off)", elem_id="top-k")
                    top_p = gr.Slider(0.05, 1, value=0.95, step=0.01, label="Top-p (1: off)", elem_id="top-p")
                    penalty = gr.Slider(1, 2, value=1.0, step=0.05, label="Repetition penalty",
                                        elem_id="repetition-penalty")
                    seed = gr.Number(value=-1, precision=0, elem_id="seed",
                                     label="Seed (-1: random; a fixed seed repeats the same sample)")
            with gr.Column():
                output = gr.Textbox(label="Text", lines=12, interactive=False, elem_id="output")
        gr.Examples([[GENERATION_EXAMPLE]], inputs=[prompt], label="Example")
        _closes_old_errors(button.click)
        event = button.click(run, [prompt, new_tokens, temperature, top_k, top_p, penalty, seed], output,
                             api_name="generate")
        stop.click(None, cancels=[event])
    return demo


BUILDERS = {"image": image_demo, "qa": qa_demo, "sentiment": sentiment_demo, "generation": generation_demo}


def build_demo(name_or_path: str, demo: str | None = None, examples=None) -> gr.Blocks:
    """The demo for a model; ``demo`` (one of :data:`DEMOS`) must then match what the model is."""
    found = pick_demo(name_or_path)
    if demo is not None and demo != found:
        raise ValueError(f"'{name_or_path}' is a model for the {found} demo, not the {demo} demo")
    if found == "image":
        return image_demo(name_or_path, examples=examples)
    return BUILDERS[found](name_or_path)


def theme():
    """Gradio's default look with the system's fonts: the page fetches no font files at all."""
    gr = _gradio()
    return gr.themes.Default(font=SYSTEM_FONTS, font_mono=SYSTEM_MONO_FONTS)


def launch(demo: gr.Blocks, host: str | None = None, port: int | None = None, share: bool = False,
           block: bool = True):
    """Serve ``demo`` with the safe defaults; ``block=False`` returns at once (tests, notebooks).

    ``host``/``port`` default to ``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` when set (Hugging
    Face Spaces set them), else 127.0.0.1:7860. Returns gradio's ``(app, local_url, share_url)``.
    """
    import inspect

    host = host or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or DEFAULT_PORT)
    demo.queue(max_size=32, default_concurrency_limit=1)
    # quiet: gradio's own lines advise `share=True` in `launch()`; ours name hfkit's --share
    options = dict(server_name=host, server_port=port, share=share, max_file_size=MAX_FILE_SIZE,
                   allowed_paths=None, prevent_thread_lock=True, theme=theme(), show_error=False,
                   # no node server, MCP endpoint, monitoring page, install prompt or run history
                   ssr_mode=False, mcp_server=False, enable_monitoring=False, pwa=False, run_history=False,
                   inbrowser=False, quiet=True)
    known = inspect.signature(demo.launch).parameters  # gradio 5 lacks some (and themes its Blocks)
    started = demo.launch(**{k: v for k, v in options.items() if k in known})
    _, local_url, share_url = started
    print(f"Demo on {local_url}" + (f" and {share_url} (public: anyone with the link can use it)" if share_url
                                    else " (this machine only; --share adds a public link)")
          + ("; Ctrl-C stops it" if block else ""), flush=True)
    if block:
        demo.block_thread()
    return started


def serve(name_or_path: str, demo: str | None = None, host: str | None = None, port: int | None = None,
          share: bool = False, examples=None, block: bool = True):
    """Build the demo for a model and serve it (offline from the local cache when the Hub is out of reach)."""
    from hfkit.offline import go_offline_if_unreachable

    go_offline_if_unreachable()  # before huggingface_hub (imported by gradio) reads HF_HUB_OFFLINE
    blocks = build_demo(name_or_path, demo, examples)
    return launch(blocks, host=host, port=port, share=share, block=block)


# -- command line and Spaces ----------------------------------------------------------------------

def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``hfkit demo RUN_DIR [--port 7860] [--host 127.0.0.1] [--share]`` to ``hfkit``'s subcommands."""
    p = subparsers.add_parser("demo", help="serve a web demo of a result folder or Hub model (image "
                                           "classification, QA, sentiment or text generation)")
    p.add_argument("model", metavar="RUN_DIR", help="result folder (runs/ants), model folder or Hub id; "
                                                    "its task picks the demo")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: the network)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7860)")
    p.add_argument("--share", action="store_true",
                   help="also open a public gradio.live link (off by default: anyone with it can use it)")
    p.add_argument("--examples", metavar="DIR",
                   help="image demo: offer the images in DIR as examples (default: the run's own "
                        "examples/, written by hfkit finetune from its evaluation data)")
    p.set_defaults(func=demo_command)
    return p


def demo_command(args: argparse.Namespace) -> int:
    serve(args.model, host=args.host, port=args.port, share=args.share,
          examples=default_examples(args.model, args.examples))
    return 0


def default_examples(model: str, given: str | None) -> Path | str | None:
    """``--examples`` if given, else the evaluation images the run saved (``<run>/examples``), else
    the pictures shipped in a repository checkout."""
    own = Path(model).expanduser() / "examples"
    if given is not None:
        return given
    return own if own.is_dir() else (SHIPPED_EXAMPLES if SHIPPED_EXAMPLES.is_dir() else None)


def run_app(demo: str, examples=None) -> int:
    """``spaces/<name>/app.py``: serve ``demo`` for the model named by the ``MODEL`` variable."""
    model = os.environ.get("MODEL", "").strip()
    app = Path(sys.argv[0]).as_posix()
    if not model:
        print(f"{app}: error: set MODEL to a result folder or a Hub model id, e.g. MODEL=runs/ants python "
              f"{app}", file=sys.stderr)
        return 2
    try:
        serve(model, demo, examples=examples)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as e:
        print(f"{app}: error: {e}", file=sys.stderr)
        return 2
    return 0
