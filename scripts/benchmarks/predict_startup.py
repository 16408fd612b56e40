"""How long `hfkit predict` keeps a user waiting, against the few lines of Python it replaces.

    python scripts/benchmarks/predict_startup.py --text-model runs/imdb-cpu --image-model runs/ants

One prediction is mostly start-up: importing torch and the model library, reading the weights,
and, after the answer, the interpreter's exit. Each side is a whole process, alternating, run
``--repeats`` times:
(a) plain: the script a user writes without hfkit (transformers' Auto classes for a text model;
    timm's ``local-dir:`` loader with ``resolve_data_config`` + ``create_transform`` for an image
    model), printing the top class and its probability;
(b) hfkit: ``hfkit predict --top-k 1 --model FOLDER INPUT`` (the console script).
Both answers are printed: they must agree.
Prints, per side, the median seconds until the answer is printed, until the process has exited,
and between the two (the exit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, clean_env, machine_line

PLAIN_TEXT = """
import sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, text = sys.argv[1:3]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
with torch.inference_mode():
    probs = model(**tokenizer([text], truncation=True, return_tensors="pt")).logits.softmax(-1)[0]
p, i = probs.max(0)
print(f"{p:.2%} {model.config.id2label[int(i)]}", flush=True)
"""

PLAIN_IMAGE = """
import sys, PIL.Image, timm, torch
from timm.data import create_transform, resolve_data_config
folder, path = sys.argv[1:3]
model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
transform = create_transform(**resolve_data_config({}, model=model))
with torch.inference_mode():
    probs = model(transform(PIL.Image.open(path).convert("RGB"))[None]).softmax(-1)[0]
p, i = probs.max(0)
print(f"{p:.2%} {model.pretrained_cfg['label_names'][int(i)]}", flush=True)
"""


def timed(cmd: list[str]) -> dict:
    """Seconds until the process printed its last line (the answer) and until it exited."""
    start = time.perf_counter()
    # unbuffered: a piped stdout is written at exit otherwise, which would time the answer late;
    # stderr in a file, where it cannot fill a pipe while stdout is read
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                                stderr=err, text=True)
        answered, lines = None, []
        for line in proc.stdout:
            answered = time.perf_counter() - start
            lines.append(line.rstrip())
        code = proc.wait()
        exited = time.perf_counter() - start
        if code != 0 or answered is None:
            err.seek(0)
            raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({code}):\n{err.read()[-2000:]}")
    return {"answered": answered, "exited": exited, "exit": exited - answered,
            "output": " ".join(lines[-1].split())}


def sides(args: argparse.Namespace) -> dict[str, list[str]]:
    hfkit = [str(Path(sys.executable).with_name("hfkit")), "predict", "--top-k", "1", "--model"]
    found = {}
    if args.text_model:
        found["text, plain script"] = [sys.executable, "-c", PLAIN_TEXT, str(args.text_model), args.text]
        found["text, hfkit predict"] = [*hfkit, str(args.text_model), args.text]
    if args.image_model:
        found["image, plain script"] = [sys.executable, "-c", PLAIN_IMAGE, str(args.image_model),
                                        str(args.image)]
        found["image, hfkit predict"] = [*hfkit, str(args.image_model), str(args.image)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text-model", type=Path, help="a text-classification result folder")
    parser.add_argument("--image-model", type=Path, help="an image-classification result folder")
    parser.add_argument("--text", default="This movie was a waste of two hours.")
    parser.add_argument("--image", type=Path, default=min(
        (REPO.parent / "shared/data/hymenoptera_data/val/ants").glob("*.jpg"), default=None))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    commands = sides(args)
    if not commands:
        parser.error("give --text-model and/or --image-model")
    rows: dict[str, list[dict]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # alternating, so a busy moment does not fall on one side only
        for name, cmd in commands.items():
            rows[name].append(timed(cmd))
    print(f"\n{machine_line()}\n\nOne prediction as a whole process, median of {args.repeats}\n")
    print("| side | answer printed s | process exited s | exit s | answer |")
    print("|---|---:|---:|---:|---|")
    for name, runs in rows.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("answered", "exited", "exit")}
        print(f"| {name} | {med['answered']:.1f} | {med['exited']:.1f} | {med['exit']:.1f} | "
              f"{runs[0]['output']} |")
    for family in ("text", "image"):
        answers = {runs[0]["output"] for name, runs in rows.items() if name.startswith(family)}
        if answers:
            same = "the same answer" if len(answers) == 1 else "DIFFERENT answers"
            print(f"{family}: {same} on both sides")
    print(json.dumps({"benchmark": "predict_startup", "rows": rows}))


if __name__ == "__main__":
    main()
