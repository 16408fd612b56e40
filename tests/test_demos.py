"""The web demos (hfkit/demo.py, spaces/): each served on a free local port and driven in headless
Chromium (Debian's ``chromium`` with Playwright's Python package; browsers cannot be downloaded
here). The browser tests skip, saying why, where Playwright or Chromium is missing."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from conftest import REPO, make_image, write_image_run

from hfkit import demo as demos

CHROMIUM = os.environ.get("HFKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
TIMEOUT_MS = 30_000  # a first request also warms up the model
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SPACES = {"image-classifier": "image", "chinese-qa": "qa", "sentiment": "sentiment",
          "text-generation": "generation"}

# gradio's queue statistics use pandas options that pandas 3 deprecates: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")

QUESTION, CONTEXT = "谁是人工智能之父？", "艾伦·图灵是人工智能之父，被誉为计算机科学的奠基人。"


# -- models ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    return write_image_run(tmp_path_factory.mktemp("demo-image"))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pictures")
    paths = {"ant": folder / "blue.jpg", "bee": folder / "yellow.png", "bad": folder / "notes.jpg",
             "big": folder / "huge.png"}
    make_image((60, 40, 200), seed=7).save(paths["ant"])
    make_image((230, 200, 40), seed=8).save(paths["bee"])
    paths["bad"].write_text("these are notes, not a JPEG\n" * 20)
    with open(paths["big"], "wb") as f:  # over the 10 MB upload limit (never decoded)
        f.write(b"\x89PNG\r\n\x1a\n" + os.urandom(11 * 1024 * 1024))
    return paths


# -- unit tests: picking the demo, streaming, the Spaces files, the command line ------------------

def test_pick_demo_from_recipe_and_config(image_run, tiny_bert_dir, tiny_gpt2_dir, chinese_qa_bin, tmp_path):
    assert demos.pick_demo(image_run) == "image"  # recipe.yaml: image-classification
    timm_only = tmp_path / "timm"
    timm_only.mkdir()
    shutil.copy(image_run / "config.json", timm_only / "config.json")
    assert demos.pick_demo(str(timm_only)) == "image"  # timm's config.json: "architecture"
    assert demos.pick_demo(str(tiny_bert_dir)) == "sentiment"
    assert demos.pick_demo(str(tiny_gpt2_dir)) == "generation"
    assert demos.pick_demo(str(chinese_qa_bin)) == "qa"

    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert demos.pick_demo(llama) == "generation"
    (llama / "recipe.yaml").write_text(yaml.safe_dump({"task": "question-answering"}))
    assert demos.pick_demo(llama) == "qa"  # the run's task wins

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match="BertModel"):
        demos.pick_demo(base)
    with pytest.raises(FileNotFoundError, match="config.json"):
        demos.pick_demo(tmp_path / "llama" / "..")  # a folder, but not a model folder
    with pytest.raises(FileNotFoundError, match="no model folder"):
        demos.pick_demo(str(tmp_path / "missing"))


def test_build_demo_refuses_a_model_of_another_kind(tiny_bert_dir):
    with pytest.raises(ValueError, match="sentiment demo, not the image demo"):
        demos.build_demo(str(tiny_bert_dir), "image")


def test_generate_stream_grows_to_what_generate_returns(tiny_gpt2_dir):
    from hfkit.inference import generate, generate_stream

    texts = list(generate_stream(str(tiny_gpt2_dir), "the quick brown fox", max_new_tokens=12, temperature=0))
    assert len(texts) > 1 and all(b.startswith(a) for a, b in zip(texts, texts[1:]))
    assert texts[-1] == generate(str(tiny_gpt2_dir), "the quick brown fox", max_new_tokens=12, temperature=0)
    sampled = [list(generate_stream(str(tiny_gpt2_dir), "once upon", max_new_tokens=8, seed=3))[-1]
               for _ in range(2)]
    assert sampled[0] == sampled[1]  # a seed makes sampling repeat
    with pytest.raises(ValueError, match="too long"):  # the tiny GPT-2 reads 64 tokens
        list(generate_stream(str(tiny_gpt2_dir), "fox " * 80, max_new_tokens=4))
    with pytest.raises(ValueError, match="too long"):
        generate(str(tiny_gpt2_dir), "fox " * 30, max_new_tokens=60)


def test_uploaded_files_must_come_from_the_upload_folder(tmp_path):
    gr = demos._gradio()
    root = (tmp_path / "uploads").resolve()
    inside = root / "a.jpg"
    root.mkdir()
    inside.write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert demos._uploaded_path({"path": str(inside)}, root) == str(inside)
    for value, message in ((None, "No image"), ({"path": ""}, "No image"),
                           ({"path": "/etc/hostname"}, "not uploaded"),
                           ({"path": str(root / ".." / "a.jpg")}, "not uploaded"),
                           ({"path": str(root / "gone.jpg")}, "not uploaded")):
        with pytest.raises(gr.Error, match=message):
            demos._uploaded_path(value, root)


def test_demo_subcommand_parses_with_safe_defaults(monkeypatch):
    parser = argparse.ArgumentParser(prog="hfkit")
    demos.add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", "runs/ants"])
    assert (args.model, args.host, args.port, args.share) == ("runs/ants", "127.0.0.1", 7860, False)
    args = parser.parse_args(["demo", "runs/ants", "--port", "8000", "--host", "0.0.0.0", "--share"])
    assert (args.port, args.host, args.share) == (8000, "0.0.0.0", True)
    served = {}
    monkeypatch.setattr(demos, "serve", lambda model, **kw: served.update(kw, model=model))
    assert args.func(args) == 0
    assert served == {"model": "runs/ants", "host": "0.0.0.0", "port": 8000, "share": True,
                      "examples": demos.SHIPPED_EXAMPLES}


def test_space_app_without_model_says_what_to_set(monkeypatch, capsys):
    monkeypatch.delenv("MODEL", raising=False)
    assert demos.run_app("image") == 2
    assert "set MODEL" in capsys.readouterr().err


@pytest.mark.parametrize("space", sorted(SPACES))
def test_space_folders_are_complete(space):
    import gradio

    folder = REPO / "spaces" / space
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("---\n")
    header = yaml.safe_load(readme.split("---\n")[1])
    assert header["sdk"] == "gradio" and header["sdk_version"] == gradio.__version__
    assert header["app_file"] == "app.py" and header["pinned"] is False
    assert {"title", "emoji", "colorFrom", "colorTo", "license"} <= set(header)
    assert len(header.get("short_description", "")) <= 60  # the Hub's limit
    assert f'run_app("{SPACES[space]}"' in (folder / "app.py").read_text(encoding="utf-8")
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {_requirement_name(r) for r in pyproject["project"]["dependencies"]} - {"gradio"}
    lines = (folder / "requirements.txt").read_text(encoding="utf-8").splitlines()
    listed = {_requirement_name(line) for line in lines if line.strip() and not line.startswith("#")}
    assert needed <= listed, needed - listed
    assert "hfkit" in (folder / "requirements.txt").read_text(encoding="utf-8")


def _requirement_name(requirement: str) -> str:
    for sep in "<>=!~[ ;":
        requirement = requirement.split(sep)[0]
    return requirement.strip().lower()


def test_example_images_are_small_pictures():
    from PIL import Image

    files = sorted((REPO / "spaces" / "image-classifier" / "examples").glob("*.png"))
    assert [f.stem for f in files] == ["ant", "bee"]
    for f in files:
        assert f.stat().st_size < 50_000
        with Image.open(f) as img:
            assert img.size == (256, 256)


# -- the browser tests ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(blocks):
    _, url, share_url = demos.launch(blocks, host="127.0.0.1", port=_free_port(), block=False)
    assert share_url is None and urlparse(url).hostname == "127.0.0.1"
    return url


@pytest.fixture(scope="module")
def image_url(browser, image_run):
    blocks = demos.build_demo(str(image_run), "image", examples=demos.SHIPPED_EXAMPLES)
    yield _serve(blocks)
    blocks.close()


@pytest.fixture(scope="module")
def qa_url(browser, chinese_qa_bin):
    blocks = demos.build_demo(str(chinese_qa_bin), "qa")
    yield _serve(blocks)
    blocks.close()


@pytest.fixture(scope="module")
def sentiment_url(browser, tiny_bert_dir):
    blocks = demos.build_demo(str(tiny_bert_dir), "sentiment")
    yield _serve(blocks)
    blocks.close()


@pytest.fixture(scope="module")
def generation_url(browser, tiny_gpt2_dir):
    blocks = demos.build_demo(str(tiny_gpt2_dir), "generation")
    yield _serve(blocks)
    blocks.close()


class Page:
    """A fresh page on a demo that records every request it makes."""

    def __init__(self, browser, url: str) -> None:
        self.requests: list[str] = []
        self.page = browser.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(url)
        self.page.wait_for_selector("#run")

    def error(self, text: str) -> None:
        """An error message containing ``text`` shows in the page."""
        from playwright.sync_api import expect

        expect(self.page.locator(".toast-body").filter(has_text=text)).to_be_visible(timeout=TIMEOUT_MS)

    def gone(self, text: str) -> None:
        """No error message containing ``text`` shows (any more)."""
        from playwright.sync_api import expect

        expect(self.page.locator(".toast-body").filter(has_text=text)).to_have_count(0, timeout=TIMEOUT_MS)

    def no_errors(self) -> None:
        """No error message shows: ours stay until closed, so the latest request closed them."""
        from playwright.sync_api import expect

        expect(self.page.locator(".toast-body.error")).to_have_count(0, timeout=TIMEOUT_MS)

    def outside(self) -> list[str]:
        return [u for u in self.requests
                if urlparse(u).scheme not in ("data", "blob") and urlparse(u).hostname not in LOCAL_HOSTS]

    def close(self) -> None:
        assert self.outside() == []
        self.page.close()


def _upload(page, path: Path) -> None:
    """Upload a file into the image box and wait until the server holds it."""
    page.set_input_files("#image input[type=file]", str(path))
    page.wait_for_selector("#image img[src*='file=']")


def test_image_demo_shows_the_classifier_label(browser, image_url, image_run, pictures):
    from playwright.sync_api import expect

    from hfkit.inference import ImageClassifier

    classifier = ImageClassifier(str(image_run))
    p = Page(browser, image_url)
    for name in ("ant", "bee"):
        (ranked,) = classifier.predict([pictures[name]], top_k=2)
        _upload(p.page, pictures[name])
        p.page.click("#run")
        expect(p.page.locator("#labels [data-testid=label-output-value]")).to_have_text(ranked[0][0])
        for label, score in ranked:
            expect(p.page.locator(f"#labels [data-testid='{label}-confidence-set']")).to_contain_text(
                f"{round(score * 100)}%")
        p.page.locator("#image").get_by_label("Remove Image").click()
    p.close()


def test_image_demo_messages_for_bad_input_and_keeps_serving(browser, image_url, image_run, pictures):
    from playwright.sync_api import expect

    from hfkit.inference import ImageClassifier

    p = Page(browser, image_url)
    p.page.click("#run")
    p.error("No image")
    _upload(p.page, pictures["bad"])
    p.page.click("#run")
    p.error("Cannot read 'notes.jpg' as an image")
    p.page.locator("#image").get_by_label("Remove Image").click()
    (ranked,) = ImageClassifier(str(image_run)).predict([pictures["bee"]], top_k=1)
    _upload(p.page, pictures["bee"])  # a good upload after the bad one still works
    p.page.click("#run")
    expect(p.page.locator("#labels [data-testid=label-output-value]")).to_have_text(ranked[0][0])
    p.no_errors()  # the two messages above no longer hold: the success closed them
    p.page.locator("#image").get_by_label("Remove Image").click()
    p.page.set_input_files("#image input[type=file]", str(pictures["big"]))  # over the upload limit
    p.error("exceed the maximum allowed size of 10")
    p.close()


def test_image_demo_example_pictures_classify(browser, image_url):
    from playwright.sync_api import expect

    p = Page(browser, image_url)
    p.page.locator(".gallery-item").first.click()
    p.page.wait_for_selector("#image img[src*='file=']")
    p.page.click("#run")
    top = p.page.locator("#labels [data-testid=label-output-value]")
    expect(top).to_have_text(re.compile("^(ants|bees)$"))
    p.close()


def test_qa_demo_highlights_the_answer_with_its_score(browser, qa_url, chinese_qa_bin):
    from playwright.sync_api import expect

    from hfkit.inference import answer

    expected = answer(QUESTION, CONTEXT, model=str(chinese_qa_bin))
    p = Page(browser, qa_url)
    p.page.fill("#question textarea", QUESTION)
    p.page.fill("#context textarea", CONTEXT)
    p.page.click("#run")
    expect(p.page.locator("#highlighted .highlighted")).to_have_text(expected["answer"])
    expect(p.page.locator("#highlighted")).to_contain_text(CONTEXT[:expected["start"]])
    expect(p.page.locator("#answer textarea, #answer input").first).to_have_value(expected["answer"])
    expect(p.page.locator("#score textarea, #score input").first).to_have_value(f"{expected['score']:.4f}")

    p.page.fill("#question textarea", "")
    p.page.click("#run")
    p.error("question is empty")
    p.page.fill("#question textarea", QUESTION)
    p.page.fill("#context textarea", "   ")
    p.page.click("#run")
    p.error("context is empty")
    p.gone("question is empty")  # the next try closed the message about the one before
    p.page.fill("#context textarea", "абвгд ежзий клмно прсту фхцчш щъыьэ юя " * 3)  # a script it never saw
    p.page.click("#run")
    p.error("unknown to this model")
    p.close()


def test_sentiment_demo_shows_the_label_and_scores(browser, sentiment_url, tiny_bert_dir):
    from playwright.sync_api import expect

    from hfkit.inference import TextClassifier

    text = "the film was wonderful and the actors were brilliant"
    (ranked,) = TextClassifier(str(tiny_bert_dir)).predict([text], top_k=2)
    p = Page(browser, sentiment_url)
    p.page.fill("#text textarea", text)
    p.page.click("#run")
    expect(p.page.locator("#labels [data-testid=label-output-value]")).to_have_text(ranked[0][0])
    for label, _ in ranked:
        expect(p.page.locator(f"#labels [data-testid='{label}-confidence-set']")).to_be_visible()
    p.page.fill("#text textarea", "")
    p.page.click("#run")
    p.error("text is empty")
    p.page.wait_for_timeout(11_000)  # past gradio's default 10 s: our message is still there
    p.error("text is empty")
    p.page.fill("#text textarea", text)
    p.page.click("#run")
    p.no_errors()
    expect(p.page.locator("#labels [data-testid=label-output-value]")).to_have_text(ranked[0][0])
    p.close()


def _set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_generation_demo_streams_the_greedy_continuation(browser, generation_url, tiny_gpt2_dir):
    from playwright.sync_api import expect

    from hfkit.inference import generate

    prompt = "the quick brown fox"
    expected = generate(str(tiny_gpt2_dir), prompt, max_new_tokens=20, temperature=0)
    p = Page(browser, generation_url)
    p.page.fill("#prompt textarea", prompt)
    _set_slider(p.page, "temperature", 0)
    _set_slider(p.page, "max-new-tokens", 20)
    p.page.click("#run")
    expect(p.page.locator("#output textarea")).to_have_value(expected)

    p.page.fill("#prompt textarea", "fox " * 80)  # the tiny GPT-2 reads 64 tokens
    p.page.click("#run")
    p.error("prompt is too long")
    p.page.fill("#prompt textarea", "")
    p.page.click("#run")
    p.error("prompt is empty")
    p.page.fill("#prompt textarea", prompt)  # still serving
    p.page.click("#run")
    expect(p.page.locator("#output textarea")).to_have_value(expected)
    p.no_errors()
    p.close()


def test_pages_fetch_nothing_from_outside(browser, image_url, qa_url, sentiment_url, generation_url):
    for url in (image_url, qa_url, sentiment_url, generation_url):
        p = Page(browser, url)
        p.page.wait_for_load_state("networkidle")
        assert p.requests, "the page made no request at all: is the recorder working?"
        assert all(urlparse(u).hostname in LOCAL_HOSTS for u in p.requests if u.startswith("http"))
        p.close()


def test_the_image_demo_offers_the_runs_own_evaluation_images(image_run, tmp_path):
    """finetune saved two evaluation images per class; `hfkit demo RUN` offers them (not the
    shipped clip-art), and --examples still wins."""
    own = sorted(p.name for p in (image_run / "examples").iterdir())
    assert len(own) == 4 and sum(n.startswith("ants-") for n in own) == 2
    assert demos.default_examples(str(image_run), None) == image_run / "examples"
    assert demos.default_examples(str(image_run), str(tmp_path)) == str(tmp_path)
    assert demos._example_images(image_run / "examples") == [str(image_run / "examples" / n) for n in own]


@pytest.mark.parametrize("n_classes, expected", [(2, 4), (10, 10), (30, 10)])
def test_a_runs_examples_fit_one_page_and_cover_the_classes_they_can(n_classes, expected, tmp_path):
    """Two per class, one each past five classes (all ten of CIFAR-10 on the demo's one page of
    examples), the first ten classes beyond that; each named after its class."""
    import PIL.Image

    from hfkit.finetune import MAX_EXAMPLES, write_examples

    class Images:  # what write_examples reads of an evaluation set
        def image(self, i):
            return PIL.Image.new("RGB", (8, 8), (i % 256, 0, 0))

    labels = [i % n_classes for i in range(5 * n_classes)]
    names = [f"class {c}/x" for c in range(n_classes)]
    write_examples(Images(), labels, names, tmp_path / "examples")
    files = sorted(p.name for p in (tmp_path / "examples").iterdir())
    assert len(files) == expected <= MAX_EXAMPLES
    classes = {int(f.split("-")[0].removeprefix("class_").split("_")[0]) for f in files}
    assert classes == set(range(min(n_classes, MAX_EXAMPLES)))
    assert all(f.startswith("class_") and "/" not in f for f in files)


def test_the_demo_says_where_it_is_in_hfkits_words(tiny_bert_dir, capfd):
    """One line with the URL and hfkit's --share, not gradio's advice to edit launch()."""
    blocks = demos.build_demo(str(tiny_bert_dir), "sentiment")
    try:
        capfd.readouterr()
        _, url, _ = demos.launch(blocks, host="127.0.0.1", port=_free_port(), block=False)
        out = capfd.readouterr().out
    finally:
        blocks.close()
    assert out.strip() == f"Demo on {url} (this machine only; --share adds a public link)"
    assert "share=True" not in out
