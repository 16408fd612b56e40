"""hfkit serve: a real uvicorn on a free loopback port, spoken to over HTTP (httpx)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import make_image, write_image_run

from hfkit import serve


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return write_image_run(tmp_path_factory.mktemp("serve-image"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = {"ant": folder / "blue.jpg", "bee": folder / "yellow.png", "bad": folder / "notes.jpg"}
    make_image((60, 40, 200), seed=7).save(paths["ant"])
    make_image((230, 200, 40), seed=8).save(paths["bee"])
    paths["bad"].write_text("these are notes, not a JPEG\n" * 20)
    return paths


class Server:
    """``hfkit serve``'s app on uvicorn in a thread, as ``serve()`` runs it."""

    def __init__(self, model, **options) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = serve.create_app(str(model), **options)
        self.server = uvicorn.Server(uvicorn.Config(app, host=serve.DEFAULT_HOST, port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def image_server(image_run):
    server = Server(image_run, max_upload_bytes=200_000, max_inputs=4)
    yield server
    server.stop()


def _files(*paths: Path) -> list:
    return [("image", (p.name, p.read_bytes())) for p in paths]


def test_image_predictions_equal_hfkit_predict(image_server, image_run, pictures):
    from hfkit.inference import ImageClassifier

    reply = httpx.post(f"{image_server.url}/predict?top_k=2", files=_files(pictures["ant"], pictures["bee"]))
    assert reply.status_code == 200, reply.text
    got = reply.json()["predictions"]
    expected = ImageClassifier(str(image_run)).predict([pictures["ant"], pictures["bee"]], top_k=2)
    assert [[p["label"] for p in r] for r in got] == [[label for label, _ in r] for r in expected]
    for r, e in zip(got, expected):
        assert [p["score"] for p in r] == pytest.approx([s for _, s in e], abs=1e-5)


def test_bad_input_is_a_4xx_and_the_server_goes_on(image_server, pictures):
    bad = httpx.post(f"{image_server.url}/predict", files=_files(pictures["bad"]))
    assert bad.status_code == 400 and "cannot read notes.jpg as an image" in bad.json()["error"]
    none = httpx.post(f"{image_server.url}/predict")
    assert none.status_code == 422 and "image" in none.json()["error"]
    k = httpx.post(f"{image_server.url}/predict?top_k=0", files=_files(pictures["ant"]))
    assert k.status_code == 422 and "top_k" in k.json()["error"]
    wrong = httpx.post(f"{image_server.url}/qa", json={"question": "?", "context": "."})
    assert wrong.status_code == 404 and "POST /predict" in wrong.json()["error"]
    assert httpx.post(f"{image_server.url}/predict", files=_files(pictures["ant"])).status_code == 200


def test_an_oversize_upload_is_refused_before_it_is_read(image_server, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000)  # over this server's 200 kB
    reply = httpx.post(f"{image_server.url}/predict", files=_files(big))
    assert reply.status_code == 413 and "larger than this server takes" in reply.json()["error"]
    chunked = httpx.post(f"{image_server.url}/predict", content=iter([b"x" * 10]),
                         headers={"content-type": "application/octet-stream"})
    assert chunked.status_code == 411
    # a small stated length with a chunked body: h11 would read the chunks, of any size
    body = b"x" * 300_000
    with socket.create_connection(("127.0.0.1", image_server.port)) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
        status = conn.makefile("rb").readline()
    assert status.split()[1] == b"411", status


def test_more_images_in_one_request_than_the_server_takes_are_refused(image_server, pictures):
    before = httpx.get(f"{image_server.url}/health").json()["inputs"]
    # a bad file among them: refused for the count, before any is decoded
    many = httpx.post(f"{image_server.url}/predict", files=_files(*[pictures["ant"]] * 4, pictures["bad"]))
    assert many.status_code == 413
    assert many.json()["error"] == ("5 images in one request; this server takes at most 4: "
                                    "send them in several requests")
    assert httpx.get(f"{image_server.url}/health").json()["inputs"] == before  # none reached the model
    four = httpx.post(f"{image_server.url}/predict", files=_files(*[pictures["ant"]] * 4))
    assert four.status_code == 200 and len(four.json()["predictions"]) == 4


def test_requests_arriving_together_share_a_batch(image_server, pictures):
    """32 requests from 16 clients at once, ants and bees mixed: fewer forward passes than requests,
    and each reply is its own picture's (as served alone, up to float noise of the batch size)."""
    alone = {name: httpx.post(f"{image_server.url}/predict", files=_files(pictures[name])).json()
             for name in ("ant", "bee")}
    before = httpx.get(f"{image_server.url}/health").json()
    names = ["ant", "bee"] * 16
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda name: httpx.post(f"{image_server.url}/predict",
                                                        files=_files(pictures[name]), timeout=60), names))
    assert all(r.status_code == 200 for r in replies)
    for name, reply in zip(names, replies):
        (got,), (want,) = reply.json()["predictions"], alone[name]["predictions"]
        assert [p["label"] for p in got] == [p["label"] for p in want]
        assert [p["score"] for p in got] == pytest.approx([p["score"] for p in want], abs=1e-4)
    after = httpx.get(f"{image_server.url}/health").json()
    inputs, batches = after["inputs"] - before["inputs"], after["batches"] - before["batches"]
    assert inputs == 32 and batches < 32, (inputs, batches)


def test_health_and_an_offline_api_page(image_server):
    health = httpx.get(f"{image_server.url}/health").json()
    assert health["status"] == "ok" and health["task"] == "image-classification"
    assert health["endpoint"] == "POST /predict" and sorted(health["labels"]) == ["ants", "bees"]
    page = httpx.get(f"{image_server.url}/docs").text
    assert "swagger-ui-bundle.js" in page and "cdn." not in page  # the page's scripts come from here
    script = page.split('src="')[1].split('"')[0]
    assert httpx.get(image_server.url + script).status_code == 200
    assert "/predict" in httpx.get(f"{image_server.url}/openapi.json").json()["paths"]


def test_text_classifier(tiny_bert_dir):
    from hfkit.inference import TextClassifier

    server = Server(tiny_bert_dir)
    try:
        texts = ["A wonderful film.", "A waste of two hours."]
        reply = httpx.post(f"{server.url}/predict", json={"texts": texts, "top_k": 1})
        assert reply.status_code == 200, reply.text
        expected = TextClassifier(str(tiny_bert_dir)).predict(texts, top_k=1)
        assert [r[0]["label"] for r in reply.json()["predictions"]] == [r[0][0] for r in expected]
        assert httpx.post(f"{server.url}/predict", json={"texts": [" "]}).status_code == 400
        assert httpx.post(f"{server.url}/predict", json={"text": "no list"}).status_code == 422
        too_many = httpx.post(f"{server.url}/predict", json={"texts": ["a"] * (serve.MAX_INPUTS + 1)})
        assert too_many.status_code == 413 and f"at most {serve.MAX_INPUTS}" in too_many.json()["error"]
        assert httpx.post(f"{server.url}/predict", json={"texts": ["a"] * serve.MAX_INPUTS},
                          timeout=60).status_code == 200
    finally:
        server.stop()


def test_question_answering(chinese_qa_bin):
    from hfkit.inference import answer

    server = Server(chinese_qa_bin)
    try:
        question, context = "谁是人工智能之父？", "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。"
        reply = httpx.post(f"{server.url}/qa", json={"question": question, "context": context})
        assert reply.status_code == 200, reply.text
        (got,) = reply.json()["answers"]
        assert got["answer"] == answer(question, context, model=str(chinese_qa_bin))["answer"]
        assert got["answer"] and got["answer"] == context[got["start"]:got["end"]]
        assert httpx.post(f"{server.url}/qa", json={"question": "", "context": context}).status_code == 400
        # a question longer than the model's window, among good requests batched with it
        good, bad = {"question": question, "context": context}, {"question": "谁" * 2000, "context": context}
        bodies = [good] * 7 + [bad]
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda b: httpx.post(f"{server.url}/qa", json=b, timeout=60), bodies))
        assert [r.status_code for r in replies] == [200] * 7 + [400], [r.text for r in replies]
        assert all(r.json()["answers"][0]["answer"] == got["answer"] for r in replies[:7])
        assert "question" in replies[7].json()["error"]
        longer = context * (serve.MAX_CONTEXT_CHARS // len(context) + 1)
        long = httpx.post(f"{server.url}/qa", json={"question": question, "context": longer})
        assert long.status_code == 413 and "hfkit qa --context-file" in long.json()["error"]
    finally:
        server.stop()


@pytest.mark.parametrize("source", ["folder", "export"])
def test_generation_is_streamed_and_equals_generate(tiny_gpt2_dir, tmp_path, source):
    from hfkit.inference import generate

    model = tiny_gpt2_dir
    if source == "export":  # onnxruntime under transformers' generate: the folder's tokens
        from hfkit.export import export

        export(str(tiny_gpt2_dir), out_dir=str(tmp_path / "onnx"))
        model = tmp_path / "onnx"
    server = Server(model)
    try:
        body = {"prompt": "the quick brown", "max_new_tokens": 8, "temperature": 0}
        with httpx.stream("POST", f"{server.url}/generate", json=body) as reply:
            assert reply.status_code == 200
            pieces = [p for p in reply.iter_text() if p]
        assert "".join(pieces) == generate(str(tiny_gpt2_dir), "the quick brown", max_new_tokens=8,
                                           temperature=0)
        # colder than floats can divide by: the greedy text it tends to, not a dropped connection
        cold = httpx.post(f"{server.url}/generate", json={**body, "temperature": 1e-300})
        assert cold.status_code == 200 and cold.text == "".join(pieces)
        hot = httpx.post(f"{server.url}/generate", content=b'{"prompt": "the", "temperature": Infinity}',
                         headers={"content-type": "application/json"})
        assert hot.status_code in (400, 422) and "temperature" in hot.json()["error"], hot.text
        too_long = httpx.post(f"{server.url}/generate", json={"prompt": "fox " * 500, "max_new_tokens": 8})
        assert too_long.status_code == 400 and "too long" in too_long.json()["error"]
    finally:
        server.stop()


def test_serve_binds_loopback_unless_told(monkeypatch, image_run):
    import uvicorn

    from hfkit.cli import build_parser

    args = build_parser().parse_args(["serve", str(image_run)])
    assert args.host == "127.0.0.1"
    bound = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: bound.update(host=host, port=port))
    assert args.func(args) == 0
    assert bound == {"host": "127.0.0.1", "port": 8000}


def test_an_export_folder_is_served_with_onnxruntime(image_run, pictures, tmp_path):
    from hfkit.export import export

    folder = tmp_path / "onnx"
    export(str(image_run), out_dir=str(folder))
    server = Server(folder)
    try:
        reply = httpx.post(f"{server.url}/predict", files=_files(pictures["ant"], pictures["bee"]))
        assert reply.status_code == 200, reply.text
        onnx = reply.json()["predictions"]
    finally:
        server.stop()
    from hfkit.inference import ImageClassifier

    expected = ImageClassifier(str(image_run)).predict([pictures["ant"], pictures["bee"]])
    assert [[p["label"] for p in r] for r in onnx] == [[label for label, _ in r] for r in expected]
    for r, e in zip(onnx, expected):
        assert [p["score"] for p in r] == pytest.approx([s for _, s in e], abs=1e-4)
