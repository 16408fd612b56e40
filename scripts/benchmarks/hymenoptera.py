"""The PyTorch transfer-learning tutorial against the README's hfkit command, on the real ants/bees set.

    python scripts/benchmarks/hymenoptera.py --data ../shared/data/hymenoptera_data --epochs 5

Each side is timed as the whole process a user runs, start-up included, in a fresh environment
(no ``OMP_NUM_THREADS``), and both run in the same invocation:
(a) tutorial: this file's ``--tutorial-worker`` mode, i.e. ``python tutorial.py`` with the
    tutorial's ``train_model`` loop: torchvision ImageFolder, RandomResizedCrop(224) + flip,
    ResNet-18, SGD(lr=0.001, momentum=0.9), StepLR(7, 0.1), batch 4, 4 workers, fp32,
    train + val each epoch;
(b) hfkit: ``accelerate launch scripts/finetune.py --recipe hymenoptera`` with the recipe's
    defaults (timm transforms from the model's config, bf16 autocast, channels-last, batch 32,
    images decoded once) plus the data path, the weights and the epoch count.
Both start from the same weights: ImageNet weights cannot be downloaded here, so one random
ResNet-18 is saved to a file and both load it (timm and torchvision share parameter names).
``--repeats K`` runs both K times, alternating which goes first. Target: the median hfkit wall
time at most half the tutorial's, with a mean best val accuracy no worse.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# at module level no more than the tutorial imports: the worker's start-up is part of what is timed
import torch
from common import REPO, last_json_line, machine_line, percent, run_process, run_recipe
from torchvision import datasets, models, transforms


def tutorial_loop(data_dir: Path, weights_pt: Path, epochs: int) -> dict:
    """The tutorial's ``train_model``, timed per epoch (train + val phases, as it does)."""
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tfs = {
        "train": transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize(mean, std)]),
        "val": transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)]),
    }
    image_datasets = {x: datasets.ImageFolder(data_dir / x, tfs[x]) for x in ("train", "val")}
    loaders = {x: torch.utils.data.DataLoader(image_datasets[x], batch_size=4, shuffle=True, num_workers=4)
               for x in ("train", "val")}
    model = models.resnet18()
    model.load_state_dict(torch.load(weights_pt))
    model.fc = torch.nn.Linear(model.fc.in_features, 2)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best_acc, best_wts, epoch_seconds = 0.0, None, []
    for _ in range(epochs):
        start = time.perf_counter()
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += (outputs.argmax(1) == labels).sum().item()
            if phase == "train":
                scheduler.step()
            acc = correct / len(image_datasets[phase])
            if phase == "val" and acc > best_acc:
                best_acc, best_wts = acc, copy.deepcopy(model.state_dict())
        epoch_seconds.append(time.perf_counter() - start)
    n_images = sum(len(d) for d in image_datasets.values())
    return {"epoch_seconds": epoch_seconds, "images": n_images, "best_accuracy": best_acc,
            "kept_best": best_wts is not None, "threads": torch.get_num_threads()}


def save_init_weights(folder: Path) -> Path:
    """One random timm ResNet-18 as .safetensors (for hfkit) and .pt (for the tutorial)."""
    import timm  # the parent's only: keeps the tutorial worker's start-up the tutorial's
    from safetensors.torch import save_file

    weights = folder / "resnet18-init.safetensors"
    torch.manual_seed(0)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    save_file(state, weights)
    torch.save(state, weights.with_suffix(".pt"))
    return weights


def run_tutorial(data: Path, weights: Path, epochs: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--tutorial-worker", "--data", str(data),
           "--weights", str(weights.with_suffix(".pt")), "--epochs", str(epochs)]
    proc = run_process(cmd)
    return {**proc, **last_json_line(proc["stdout"])}


def run_hfkit(data: Path, weights: Path, epochs: int, out: Path, extra: list[str]) -> dict:
    row = run_recipe("hymenoptera", [f"data.path={data}", f"model.pretrained={weights}",
                                     f"train.epochs={epochs}", *extra], out)
    results, history = row.pop("results"), row.pop("history")
    return {**row, "epoch_seconds": [h["epoch_seconds"] for h in history],
            "images": results["train_samples"] + results["eval_samples"],
            "best_accuracy": results["eval_accuracy"], "train_runtime": results["train_runtime"],
            "total_runtime": results["total_runtime"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/hymenoptera_data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating order")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra hfkit recipe overrides, e.g. --set train.batch_size=64")
    parser.add_argument("--skip-tutorial", action="store_true")
    parser.add_argument("--tutorial-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tutorial_worker:
        torch.manual_seed(0)
        print(json.dumps(tutorial_loop(args.data.resolve(), args.weights, args.epochs)))
        return

    data, rows = args.data.resolve(), []  # resolved: the processes run from the repository root
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_init_weights(Path(tmp))
        for i in range(args.repeats):
            # alternating which goes first spreads any drift in the machine's load over both sides
            order = ["tutorial", "hfkit"] if i % 2 == 0 else ["hfkit", "tutorial"]
            for side in [s for s in order if not (args.skip_tutorial and s == "tutorial")]:
                print(f"run {i + 1}/{args.repeats}: {side} ...", file=sys.stderr, flush=True)
                row = (run_tutorial(data, weights, args.epochs) if side == "tutorial" else
                       run_hfkit(data, weights, args.epochs, Path(tmp) / f"run-{i}", args.overrides))
                rows.append({"side": side, "run": i + 1, **row})
    report(rows, args.epochs)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def report(rows: list[dict], epochs: int) -> None:
    print(f"\n{machine_line()}\n\nhymenoptera, {epochs} epoch(s), each side a whole process\n")
    print("| side | run | wall s | s/epoch (mean) | s outside epochs | best val acc | threads | other CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r['run']} | {r['wall']:.1f} | {_mean(r['epoch_seconds']):.2f} | "
              f"{r['wall'] - sum(r['epoch_seconds']):.1f} | {r['best_accuracy']:.3f} | {r['threads']} | "
              f"{percent(r['other_cpu'])} |")
    by_side = {s: [r for r in rows if r["side"] == s] for s in ("tutorial", "hfkit")}
    wall = {s: statistics.median(r["wall"] for r in rs) for s, rs in by_side.items() if rs}
    for side, median in wall.items():
        print(f"| {side} | median | {median:.1f} | | | | | |")
    if len(wall) == 2:
        ratio = wall["hfkit"] / wall["tutorial"]
        acc = {s: _mean([r["best_accuracy"] for r in rs]) for s, rs in by_side.items()}
        print(f"\nhfkit wall / tutorial wall: {ratio:.2f}x (target <= 0.5x: "
              f"{'met' if ratio <= 0.5 else 'MISSED'})")
        print(f"mean best val accuracy: hfkit {acc['hfkit']:.3f}, tutorial {acc['tutorial']:.3f} "
              f"({'no worse' if acc['hfkit'] >= acc['tutorial'] else 'WORSE'})")
    print(json.dumps({"benchmark": "hymenoptera", "epochs": epochs, "rows": [
        {k: v for k, v in r.items() if k not in ("stdout", "stderr")} for r in rows]}))


if __name__ == "__main__":
    main()
