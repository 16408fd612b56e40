"""The PyTorch transfer-learning tutorial's loop against the hfkit recipe, on the real ants/bees set.

    python scripts/benchmarks/hymenoptera.py --data ../shared/data/hymenoptera_data --epochs 5

(a) the tutorial's own loop: torchvision ImageFolder, RandomResizedCrop(224) + flip, ResNet-18,
    SGD(lr=0.001, momentum=0.9), StepLR(7, 0.1), batch 4, 4 workers, fp32, train + val each epoch;
(b) ``hfkit finetune --recipe hymenoptera`` with its defaults (timm transforms from the model's
    config, bf16 autocast, channels-last, batch 32, images decoded once).
Both start from the same weights: ImageNet weights cannot be downloaded here, so one random
ResNet-18 is saved to a file and both load it (timm and torchvision share parameter names).
Prints seconds per epoch, images/s (train + val images per epoch) and best val accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file
from torchvision import datasets, models, transforms

REPO = Path(__file__).resolve().parents[2]


def tutorial_loop(data_dir: Path, weights: Path, epochs: int) -> dict:
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
    model.load_state_dict(torch.load(weights.with_suffix(".pt")))
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
            "kept_best": best_wts is not None}


def hfkit_recipe(data_dir: Path, weights: Path, epochs: int, out: Path, overrides: list[str]) -> dict:
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    recipe = load_recipe("hymenoptera", [f"data.path={data_dir}", f"model.pretrained={weights}",
                                         f"train.epochs={epochs}", *overrides], output_dir=str(out))
    start = time.perf_counter()
    results = finetune(recipe)
    wall = time.perf_counter() - start
    state = json.loads(sorted((out / "checkpoints").glob("step-*"))[-1].joinpath(
        "trainer_state.json").read_text())
    return {"epoch_seconds": [h["epoch_seconds"] for h in state["history"]],
            "images": results["train_samples"] + results["eval_samples"],
            "best_accuracy": results["eval_accuracy"], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/hymenoptera_data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra hfkit recipe overrides, e.g. --set train.batch_size=64")
    parser.add_argument("--skip-tutorial", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet18-init.safetensors"
        torch.manual_seed(0)
        state = timm.create_model("resnet18", pretrained=False).state_dict()
        save_file(state, weights)
        torch.save(state, weights.with_suffix(".pt"))
        rows = {}
        if not args.skip_tutorial:
            torch.manual_seed(0)
            start = time.perf_counter()
            rows["tutorial loop"] = tutorial_loop(args.data, weights, args.epochs)
            rows["tutorial loop"]["wall"] = time.perf_counter() - start
        rows["hfkit recipe"] = hfkit_recipe(args.data, weights, args.epochs, Path(tmp) / "run",
                                            args.overrides)
    print_table(rows, args.epochs)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def print_table(rows: dict, epochs: int) -> None:
    print(f"\nhymenoptera, {epochs} epochs, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}")
    header = (f"{'':16}{'s/epoch (mean)':>16}{'s/epoch (2nd+)':>16}{'images/s':>10}{'wall s':>9}"
              f"{'best val acc':>14}")
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        mean = _mean(r["epoch_seconds"])
        steady = _mean(r["epoch_seconds"][1:] or r["epoch_seconds"])
        print(f"{name:16}{mean:16.2f}{steady:16.2f}{r['images'] / mean:10.1f}{r['wall']:9.1f}"
              f"{r['best_accuracy']:14.3f}")
    if len(rows) == 2:
        (t, h) = rows["tutorial loop"], rows["hfkit recipe"]
        ratio = _mean(h["epoch_seconds"]) / _mean(t["epoch_seconds"])
        print(f"\nhfkit epoch time / tutorial epoch time: {ratio:.2f}x (target <= 0.45x); "
              f"wall-time ratio incl. start-up: {h['wall'] / t['wall']:.2f}x")


if __name__ == "__main__":
    main()
