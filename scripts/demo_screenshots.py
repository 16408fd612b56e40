"""Screenshots of the four web demos for README.md: docs/screenshots/<demo>.png.

Serves each demo on a free local port, fills in an example in headless Chromium (Debian's
``chromium`` package with Playwright's Python package), and saves the page as a small palette PNG.
The model of a demo is a result folder given with ``--run DEMO=DIR`` (the README's pictures come
from real runs, see below); a demo without one gets a tiny model trained here in seconds on the
test suite's synthetic data, which is only good for checking the page.

    apt-get install -y chromium                        # the browser (Chinese: hfkit's Noto Sans SC)
    pip install -e ".[dev]"                            # Playwright comes with the dev extra
    python scripts/demo_screenshots.py --run image=runs/cifar10 --run sentiment=runs/imdb-minilm

The image demo classifies the first of the run's own example images (``<run>/examples``, written
by ``hfkit finetune`` from its evaluation data) that the model gets right; the sentiment demo a
review written for the picture.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the synthetic data and tiny models of the test suite

os.environ.setdefault("HF_HUB_OFFLINE", "1")

QA_QUESTION = "谁是人工智能之父？"
# the toy set's pattern (filler, 答案是, the answer, 。, filler) in the characters the toy model saw
QA_CONTEXT = "这个人说到的答案是艾伦图灵。他在这个国中的地方上发动了一个大的生产。"
TOY_REVIEW = "the film was wonderful and the actors were brilliant"  # what the toy model learnt
REVIEW = ("A wonderful film: the actors were brilliant, the story kept me hooked from the first scene "
          "to the last, and I would happily watch it again.")
PROMPT = "the quick brown"


def train_image(root: Path) -> Path:
    from conftest import tiny_image_overrides, write_image_folder

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_image_folder(root / "images", {"train": 12, "val": 6})
    finetune(load_recipe("hymenoptera", tiny_image_overrides(data), output_dir=str(root / "ants")))
    return root / "ants"


def train_qa(root: Path) -> Path:
    from conftest import write_chinese_qa_model, write_toy_cmrc

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_toy_cmrc(root / "cmrc", train=800, dev=40)
    model = write_chinese_qa_model(root / "qa-untrained", "bin")
    finetune(load_recipe("cmrc2018", [
        f"data.path={data}", f"model.name={model}", "train.epochs=12", "train.lr=2e-3", "data.max_length=64",
        "data.doc_stride=16", "train.mixed_precision=no", "train.warmup_ratio=0"],
        output_dir=str(root / "cmrc2018")))
    return root / "cmrc2018"


def train_sentiment(root: Path) -> Path:
    import datasets
    from conftest import toy_reviews, write_tiny_bert

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    base = write_tiny_bert(root / "bert")
    (root / "imdb" / "plain_text").mkdir(parents=True)
    features = datasets.Features(text=datasets.Value("string"),
                                 label=datasets.ClassLabel(names=["negative", "positive"]))
    for split, n, seed in (("train", 160, 0), ("test", 60, 1)):
        rows = toy_reviews(n, seed)
        datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                   features=features).to_parquet(
            str(root / "imdb" / "plain_text" / f"{split}-00000-of-00001.parquet"))
    finetune(load_recipe("imdb", [
        f"data.path={root / 'imdb'}", f"model.name={base}", "data.max_length=64", "train.epochs=8",
        "train.lr=3e-3", "train.batch_size=16", "train.warmup_ratio=0", "train.mixed_precision=no"],
        output_dir=str(root / "sentiment")))
    return root / "sentiment"


def train_generation(root: Path) -> Path:
    from conftest import REPETITIVE, write_tiny_gpt2

    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    base = write_tiny_gpt2(root / "gpt2")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join([REPETITIVE] * 120))
    finetune(load_recipe("gpt2", [
        f"data.path={corpus}", "data.config=null", f"model.name={base}", "data.block_size=32",
        "train.epochs=10", "train.lr=3e-3", "train.batch_size=8", "train.mixed_precision=no"],
        output_dir=str(root / "generation")))
    return root / "generation"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def right_example(run: Path) -> int:
    """The index, among the demo's examples (its first page), of the first one the model gets right."""
    from hfkit import demo as demos
    from hfkit.finetune import MAX_EXAMPLES, example_file_stem
    from hfkit.inference import ImageClassifier

    files = demos._example_images(demos.default_examples(str(run), None))[:MAX_EXAMPLES]
    classifier = ImageClassifier(str(run))
    for i, file in enumerate(files):
        (ranked,) = classifier.predict([classifier.load(file)], top_k=1)
        if Path(file).stem.rsplit("-", 1)[0] == example_file_stem(ranked[0][0]):  # <class>-<index>.png
            return i
    raise SystemExit(f"{run}: the model gets none of its {len(files)} example images right")


def fill_image(page, run: Path, toy: bool) -> None:
    page.locator(".gallery-item").nth(right_example(run)).click()
    page.wait_for_selector("#image img[src*='file=']")
    page.click("#run")
    page.wait_for_selector("#labels [data-testid=label-output-value]")


def fill_qa(page, run: Path, toy: bool) -> None:
    from hfkit.demo import QA_EXAMPLE

    question, context = (QA_QUESTION, QA_CONTEXT) if toy else QA_EXAMPLE
    page.fill("#question textarea", question)
    page.fill("#context textarea", context)
    page.click("#run")
    page.wait_for_selector("#highlighted .highlighted")


def fill_sentiment(page, run: Path, toy: bool) -> None:
    page.fill("#text textarea", TOY_REVIEW if toy else REVIEW)
    page.click("#run")
    page.wait_for_selector("#labels [data-testid=label-output-value]")


def fill_generation(page, run: Path, toy: bool) -> None:
    page.fill("#prompt textarea", PROMPT)
    for elem_id, value in (("temperature", 0), ("max-new-tokens", 24)):
        box = page.locator(f"#{elem_id} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    page.click("#run")
    page.wait_for_function("document.querySelector('#output textarea').value.length > 40")
    page.wait_for_timeout(1000)  # the end of the stream


DEMOS = {"image": (train_image, fill_image), "qa": (train_qa, fill_qa),
         "sentiment": (train_sentiment, fill_sentiment), "generation": (train_generation, fill_generation)}


def save_small_png(raw: bytes, path: Path) -> None:
    """A 256-colour palette PNG: screenshots of flat UI stay sharp and a few tens of KB."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(raw)) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def chinese_fonts(tmp: Path) -> dict[str, str]:
    """Environment for the browser: fontconfig with hfkit's packaged Noto Sans SC added (the one its
    plots use), so the QA page's Chinese shows on a machine without a system CJK font."""
    import pylopdf_fonts_zh_cn

    conf = tmp / "fonts.conf"
    conf.write_text(f"""<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>
  <dir>{Path(pylopdf_fonts_zh_cn.__file__).parent}</dir>
  <cachedir>{tmp / "fontconfig-cache"}</cachedir>
</fontconfig>
""")
    return {**os.environ, "FONTCONFIG_FILE": str(conf)}


def _given_runs(pairs: list[str]) -> dict[str, Path]:
    runs = {}
    for pair in pairs:
        name, _, folder = pair.partition("=")
        if name not in DEMOS or not Path(folder).is_dir():
            raise SystemExit(f"--run {pair}: expected DEMO=DIR with DEMO one of {', '.join(DEMOS)} "
                             "and DIR a result folder")
        runs[name] = Path(folder)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--only", choices=sorted(DEMOS), action="append", help="these demos only")
    parser.add_argument("--run", action="append", default=[], metavar="DEMO=DIR",
                        help="the result folder to show in a demo (default: a toy model trained here)")
    args = parser.parse_args()
    given = _given_runs(args.run)

    from playwright.sync_api import sync_playwright

    from hfkit import demo as demos

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hfkit-screens-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, env=chinese_fonts(Path(tmp)), args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
        for name in args.only or DEMOS:
            train, fill = DEMOS[name]
            run = given.get(name) or train(Path(tmp))
            # what `hfkit demo RUN` offers: the run's own example images, else the shipped ones
            blocks = demos.build_demo(str(run), name, examples=demos.default_examples(str(run), None))
            _, url, _ = demos.launch(blocks, port=_free_port(), block=False)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 640})
                page.set_default_timeout(60_000)
                page.goto(url)
                page.wait_for_selector("#run")
                fill(page, run, name not in given)
                target = args.out / f"{name}.png"
                save_small_png(page.screenshot(full_page=True), target)
                print(f"{target.relative_to(REPO) if target.is_relative_to(REPO) else target}: "
                      f"{target.stat().st_size // 1024} KB, model {run}")
                page.close()
            finally:
                blocks.close()
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
