"""What hfkit's loop costs: the README's command against a plain PyTorch loop doing the same work.

    python scripts/benchmarks/loop_overhead.py                                   # CPU, tiny model
    python scripts/benchmarks/loop_overhead.py --device cuda --model resnet18_cifar \\
        --train-images 50000 --eval-images 10000 --epochs 10                      # GPU, the recipe's model

Both sides are whole processes (start-up included), on the same seeded CIFAR-10 subset of
``--data``, decoded by the same ``decode_all`` into one uint8 tensor, augmented by the same
``BatchAugment`` (the ``cifar10`` recipe's crop, flip and Cutout), with the same model, SGD
settings, schedule (linear warm-up and decay), label smoothing, precision (bf16 autocast, or fp32
where hfkit falls back to it on a CPU without bf16 kernels), channels-last and flip-TTA
evaluation after every epoch:

- plain: a 40-line loop (``--plain-worker``): images on the device, one ``randperm`` per epoch,
  no accelerate, no checkpoints, no plots — the fastest honest reference;
- hfkit: ``accelerate launch scripts/finetune.py --recipe cifar10 --set ...`` (checkpoints,
  best-model saving, plots and all).

A tiny model (timm's ``test_resnet``, 0.4M parameters) at 32 px on a CPU makes the loop, not
the model, set the pace. Prints training images/s (training steps only) and process wall time;
target: hfkit >= 0.9x the plain loop.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from common import REPO, last_json_line, machine_line, percent, run_process, run_recipe


def recipe_overrides(args) -> list[str]:
    return [f"data.path={args.data}", f"model.name={args.model}", "data.image_size=32",
            f"data.max_train_samples={args.train_images}", f"data.max_eval_samples={args.eval_images}",
            f"train.epochs={args.epochs}", f"train.seed={args.seed}", "eval.num_preview_images=0"]


def plain_worker(args) -> dict:
    """The plain loop, on the recipe's own settings and data (read through hfkit's loaders)."""
    import timm
    import torch
    import torch.nn.functional as F

    import hfkit.models  # noqa: F401  (registers resnet18_cifar)
    from hfkit.data.images import load_image_splits
    from hfkit.data.tensor_images import decode_all
    from hfkit.data.transforms import batch_augment
    from hfkit.devices import training_precision
    from hfkit.recipes import load_recipe

    recipe = load_recipe("cifar10", recipe_overrides(args))
    d, t, device = recipe.data, recipe.train, torch.device(args.device)
    bf16 = training_precision(t.mixed_precision, device.type)[0] == "bf16"  # as hfkit decides
    torch.manual_seed(t.seed)
    splits = load_image_splits(d, t.seed)
    data = {name: (decode_all(ds, splits.image_column).to(device),
                   torch.tensor(ds[splits.label_column], device=device))
            for name, ds in (("train", splits.train), ("eval", splits.eval))}
    model = timm.create_model(args.model, num_classes=len(splits.label_names))
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, 32, 32))
    augment = batch_augment(model, d, channels_last=True)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                                weight_decay=t.weight_decay)
    (images, labels), n = data["train"], len(data["train"][1])
    steps = math.ceil(n / t.batch_size) * t.epochs
    warmup = int(t.warmup_ratio * steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / max(1, warmup) if s < warmup
                                                  else max(0.0, (steps - s) / max(1, steps - warmup)))
    train_seconds, accuracies = 0.0, []
    for epoch in range(t.epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(n, device=device)
        for i in range(0, n, t.batch_size):
            idx = order[i:i + t.batch_size]
            x = augment(images[idx], seed=epoch * 100_003 + i, train=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x).float(), labels[idx], label_smoothing=t.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - start
        accuracies.append(evaluate(model, augment, *data["eval"], device, bf16))
    return {"train_images_per_s": n * t.epochs / train_seconds, "train_seconds": train_seconds,
            "best_accuracy": max(accuracies), "final_accuracy": accuracies[-1]}


def evaluate(model, augment, images, labels, device, bf16: bool) -> float:
    import torch

    model.eval()
    correct = torch.zeros((), device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(labels), 1000):
            x = augment(images[i:i + 1000])
            logits = model(x) + model(x.flip(-1))
            correct += (logits.argmax(-1) == labels[i:i + 1000]).sum()
    return correct.item() / len(labels)


def run_plain(args) -> dict:
    cmd = [sys.executable, "scripts/benchmarks/loop_overhead.py", "--plain-worker", "--data", str(args.data),
           "--model", args.model, "--train-images", str(args.train_images), "--eval-images",
           str(args.eval_images), "--epochs", str(args.epochs), "--seed", str(args.seed),
           "--device", args.device]
    row = run_process(cmd)
    return {**last_json_line(row["stdout"]), "wall": row["wall"], "other_cpu": row["other_cpu"]}


def run_hfkit(args) -> dict:
    row = run_recipe("cifar10", [*recipe_overrides(args), *args.overrides])
    results = row["results"]
    return {"train_images_per_s": results["train_samples_per_second"],
            "train_seconds": results["train_runtime"], "best_accuracy": results["eval_accuracy"],
            "wall": row["wall"], "other_cpu": row["other_cpu"]}


def print_table(args, rows: dict) -> None:
    print(f"\n### Loop overhead: {args.model} at 32 px, {args.train_images:,} training / "
          f"{args.eval_images:,} test images, {args.epochs} epochs, {args.device}\n")
    print(machine_line() + "\n")
    print("| side | run | train images/s | train s | process wall s | best test acc | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, runs in rows.items():
        for k, r in enumerate(runs, 1):
            print(f"| {name} | {k} | {r['train_images_per_s']:,.0f} | {r['train_seconds']:.1f} | "
                  f"{r['wall']:.1f} | {r['best_accuracy']:.4f} | {percent(r['other_cpu'])} |")
    plain, ours = (max(runs, key=lambda r: r["train_images_per_s"]) for runs in rows.values())
    ratio = ours["train_images_per_s"] / plain["train_images_per_s"]
    print(f"\nhfkit / plain training images/s (best run of each): {ratio:.2f}x "
          f"(target >= 0.9x: {'met' if ratio >= 0.9 else 'MISSED'}); process wall time "
          f"{min(r['wall'] for r in rows['hfkit']):.1f} s vs {min(r['wall'] for r in rows['plain']):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/cifar10")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--train-images", type=int, default=10_000)
    parser.add_argument("--eval-images", type=int, default=2_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="cpu", help="the plain loop's device (hfkit picks its own)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating the order")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra recipe overrides for the hfkit side only")
    parser.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.plain_worker:
        print(json.dumps(plain_worker(args)))
        return
    rows: dict[str, list[dict]] = {"plain": [], "hfkit": []}
    for k in range(args.repeats):
        for side in (("plain", "hfkit") if k % 2 == 0 else ("hfkit", "plain")):
            rows[side].append(run_plain(args) if side == "plain" else run_hfkit(args))
    print_table(args, rows)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
