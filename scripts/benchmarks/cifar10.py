"""CIFAR-10: the course's per-image torchvision pipeline and training loop against the hfkit recipe.

    python scripts/benchmarks/cifar10.py --data ../shared/data/cifar10          # parts (a) and (b)
    python scripts/benchmarks/cifar10.py --images 10000 --train-images 2560     # quicker
    python scripts/benchmarks/cifar10.py --full --parts "" --device cuda        # (c), on a GPU

The data is the Hub parquet layout (``plain_text/{train,test}-00000-of-00001.parquet``); both
sides use the same seeded subset of the training images (hfkit's ``data.max_train_samples``).
Prints the machine facts, then one Markdown table per part. Each row also shows "other CPU":
the share of the machine's CPU time other processes used while it ran (from /proc/stat); on a
shared machine, rerun rows where it is more than a few percent.

(a) Input pipeline alone, images/s over one pass of ``--images`` training images (default all
    50,000), each side producing normalised float batches [128, 3, 32, 32] that are consumed
    (summed) on ``--device``:
    - course: ``Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), RandomRotation(10),
      ColorJitter(0.2, 0.2, 0.2), ToTensor(), Normalize(mean, std)])`` per PIL image,
      ``DataLoader(batch_size=128, shuffle=True, num_workers=2)`` (worker start-up included, as
      in every epoch of the course). To time the transforms and not PNG decoding, the images
      are decoded to PIL once up front (not timed) and held in a list: this favours the course,
      whose torchvision/HF dataset decodes every image in every epoch;
    - hfkit: ``decode_all`` once (timed separately, not in the pass), then ``TensorImages`` +
      ``make_tensor_loader(ds, 128, True, seed)`` and ``BatchAugment`` per batch on the device:
      crop with 4 px (reflect) padding, flip, brightness/contrast jitter 0.2 (the recipe's own
      ``color_jitter`` is 0). It does no rotation and no saturation jitter, so it does less
      work than the course's Compose; the table measures the pipelines as each side uses them.
      (The first batch's mean differs: the course pads and rotates with black, hfkit reflects.)
    Both one-off decodes are printed: on a 2-core machine ``decode_all``'s thread pool is
    slower than the course's serial PIL loop (tiny PNGs, the GIL), which is outside the pass.
    Target: hfkit >= 10x the course's images/s.

(b) Training images/s, the same architecture on both sides: ResNet-18 for 32x32 (BasicBlock
    [2, 2, 2, 2], 3x3 stride-1 stem, no max-pool). The course side uses a hand-written
    (kuangliu-style) ResNet18; hfkit's ``timm.create_model("resnet18_cifar")`` is checked to
    have the same parameter shapes and count (both printed); ``--course-model timm`` runs the
    course loop on timm's module instead (in fp32 it is a few percent faster per step here).
    - course loop: fp32, SGD(lr 0.1, momentum 0.9, wd 5e-4), cross-entropy, batch 128, the
      per-image pipeline of (a) with 2 workers, plain ``for x, y in loader`` on
      ``--train-images`` images (default 5,120); the first 5 batches are warm-up, not timed;
    - hfkit: ``finetune(load_recipe("cifar10", ...))`` with ``data.max_train_samples`` =
      ``--train-images``, ``data.max_eval_samples=1000``, ``train.epochs=1`` and
      ``train.batch_size`` 128 (and the recipe's own 512, see ``--hfkit-batches``);
      ``train_samples_per_second`` of the returned metrics, timed over the whole training loop
      (first batches included, so no warm-up is skipped on this side): bf16 autocast (fp32 on a
      CPU without bf16 kernels),
      channels-last and in-memory device augmentation (crop + flip).
    Target: hfkit >= 1.5x the course loop's images/s.

(c) Only with ``--full`` (meant for a GPU): whole runs, each a process, for every ``--seeds`` seed:
    - the ``cifar10`` recipe through the README's command (``accelerate launch scripts/finetune.py
      --recipe cifar10 --set data.path=<data>``), and with ``--compile-modes default,...`` the same
      with ``train.compile=true`` in each mode;
    - the plain loop of ``loop_overhead.py`` with the recipe's model and settings;
    - ``airbench94`` (Keller Jordan's CIFAR-10 speed-run trainer, the ``airbench`` package) fed the
      same images: it reads ``cifar10/{train,test}.pt`` before it would download (CUDA only; on the
      GPU machine install its wheel, e.g. ``pip wheel airbench --no-deps -w .gpu/whl``).
    Prints per row the process wall time, training seconds and the final test accuracy per seed
    and their mean; targets: the recipe >= airbench94's accuracy, in <= 2 minutes end to end.
    On a CPU, try it on a subset: ``--full --parts "" --c-train-images 2000 --c-eval-images 500
    --c-epochs 1 --seeds 0``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import PIL.Image
import torch
import torch.nn.functional as F
from common import cpu_seconds, last_json_line, percent, run_process, run_recipe
from torch import nn

REPO = Path(__file__).resolve().parents[2]
BATCH = 128
WARMUP_BATCHES = 5


# -- data -------------------------------------------------------------------------------------

def recipe_for(data: Path, overrides: list[str], output_dir: str | None = None):
    from hfkit.recipes import load_recipe

    return load_recipe("cifar10", [f"data.path={data}", *overrides], output_dir=output_dir)


def train_split(data: Path, n: int, seed: int):
    """The seeded subset of ``n`` training images the recipe itself would use."""
    from hfkit.data.images import load_image_splits

    recipe = recipe_for(data, [f"data.max_train_samples={n}", "data.max_eval_samples=1",
                               f"train.seed={seed}"])
    return recipe, load_image_splits(recipe.data, seed)


def decode_pil(ds, image_col: str) -> list[PIL.Image.Image]:
    """Every image as a loaded RGB PIL image (what a course's dataset hands its transforms)."""
    import datasets

    entries = ds.cast_column(image_col, datasets.Image(decode=False))[image_col]
    return [PIL.Image.open(io.BytesIO(e["bytes"])).convert("RGB") for e in entries]


def course_transform():
    from torchvision import transforms

    from hfkit.models import CIFAR_MEAN, CIFAR_STD

    return transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        transforms.ToTensor(),
        transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])


class PILImages(torch.utils.data.Dataset):
    """Pre-decoded PIL images and labels, transformed per item (the course's Dataset)."""

    def __init__(self, images: list[PIL.Image.Image], labels: list[int], transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def course_loader(images, labels, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(PILImages(images, labels, course_transform()), batch_size=BATCH,
                                       shuffle=True, num_workers=2,
                                       generator=torch.Generator().manual_seed(seed))


def measured(fn, *args) -> dict:
    """``fn(*args)`` (a result row), plus ``other_cpu``: the share of the machine's CPU time that
    other processes used meanwhile (a shared machine's noise; a few percent is quiet)."""
    before, start = cpu_seconds(), time.perf_counter()
    row = fn(*args)
    after, wall = cpu_seconds(), time.perf_counter() - start
    row["other_cpu"] = None
    if before is not None and after is not None:
        other = (after[0] - before[0]) - (after[1] - before[1])
        row["other_cpu"] = max(other, 0.0) / (wall * (os.cpu_count() or 1))
    return row


def other_cpu(row: dict) -> str:
    return percent(row.get("other_cpu"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_batch(x: torch.Tensor, checked: list) -> None:
    if not checked:
        if x.shape != (BATCH, 3, 32, 32) or x.dtype != torch.float32:
            raise AssertionError(f"expected float32 [{BATCH}, 3, 32, 32], got {x.dtype} {list(x.shape)}")
        checked.append((float(x.mean()), float(x.std())))


# -- (a) input pipeline -------------------------------------------------------------------------

def pipeline_course(images, labels, device: torch.device, seed: int) -> dict:
    loader = course_loader(images, labels, seed)
    total, n, checked = torch.zeros((), device=device), 0, []
    sync(device)
    start = time.perf_counter()
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        check_batch(x, checked)
        total += x.sum()
        n += len(y)
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "checksum": float(total),
            "first_batch_mean_std": checked[0]}


def pipeline_hfkit(recipe, splits, device: torch.device, seed: int) -> dict:
    import timm

    import hfkit.models  # noqa: F401  (registers resnet18_cifar with timm)
    from hfkit.data.tensor_images import TensorImages, decode_all, make_tensor_loader
    from hfkit.data.transforms import batch_augment

    start = time.perf_counter()
    images = decode_all(splits.train, splits.image_column, desc="decode_all")
    decode_seconds = time.perf_counter() - start
    ds = TensorImages(images, list(splits.train[splits.label_column]), seed)
    loader = make_tensor_loader(ds, BATCH, True, seed)
    # the recipe's BatchAugment (mean/std from the model, crop 4 px, flip 0.5) with jitter 0.2
    model = timm.create_model("resnet18_cifar", num_classes=10)
    augment = batch_augment(model, dataclasses.replace(recipe.data, color_jitter=0.2), channels_last=False)
    total, n, checked = torch.zeros((), device=device), 0, []
    sync(device)
    start = time.perf_counter()
    for batch_images, y, batch_seed in loader:
        x = augment(batch_images.to(device, non_blocking=True), batch_seed, train=True)
        check_batch(x, checked)
        total += x.sum()
        n += len(y)
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": seconds, "images_per_s": n / seconds, "checksum": float(total),
            "first_batch_mean_std": checked[0], "decode_seconds": decode_seconds,
            "augment": {k: getattr(augment, k) for k in ("pad", "hflip", "jitter", "erase")}}


def part_a(args, device: torch.device) -> dict:
    recipe, splits = train_split(args.data, args.images, args.seed)
    start = time.perf_counter()
    pil = decode_pil(splits.train, splits.image_column)
    pil_seconds = time.perf_counter() - start
    labels = list(splits.train[splits.label_column])
    rows = {"course": measured(pipeline_course, pil, labels, device, args.seed)}
    rows["course"]["decode_seconds"] = pil_seconds
    del pil
    rows["hfkit"] = measured(pipeline_hfkit, recipe, splits, device, args.seed)
    return rows


def print_a(rows: dict, device: torch.device) -> None:
    c, h = rows["course"], rows["hfkit"]
    ratio = h["images_per_s"] / c["images_per_s"]
    print(f"\n### (a) Input pipeline alone: one pass over {c['images']:,} training images, "
          f"float batches [{BATCH}, 3, 32, 32] on {device}\n")
    print("| pipeline | images | seconds | images/s | vs course | decode once (not in pass) | other CPU |")
    print("|---|---:|---:|---:|---:|---|---:|")
    print(f"| course: per-image torchvision Compose, DataLoader 2 workers | {c['images']:,} | "
          f"{c['seconds']:.1f} | {c['images_per_s']:,.0f} | 1.00x | "
          f"PIL, 1 thread: {c['decode_seconds']:.1f} s | {other_cpu(c)} |")
    print(f"| hfkit: TensorImages + make_tensor_loader + BatchAugment on {device} | {h['images']:,} | "
          f"{h['seconds']:.1f} | {h['images_per_s']:,.0f} | {ratio:.2f}x | "
          f"decode_all: {h['decode_seconds']:.1f} s ({h['images'] / h['decode_seconds']:,.0f} images/s) | "
          f"{other_cpu(h)} |")
    print(f"\nhfkit / course: {ratio:.1f}x (target >= 10x: {'met' if ratio >= 10 else 'MISSED'}). "
          f"First-batch mean/std: course {c['first_batch_mean_std'][0]:+.3f}/"
          f"{c['first_batch_mean_std'][1]:.3f}, hfkit {h['first_batch_mean_std'][0]:+.3f}/"
          f"{h['first_batch_mean_std'][1]:.3f}; hfkit augmentation {h['augment']}.")


# -- (b) training -------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """kuangliu/pytorch-cifar's BasicBlock."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """kuangliu/pytorch-cifar's ResNet18: 3x3 stride-1 stem, no max-pool, [2, 2, 2, 2] blocks."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, 2, 1)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.linear = nn.Linear(512, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4).flatten(1)
        return self.linear(out)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_same_architecture() -> tuple[int, int]:
    """Parameter counts of the hand-written ResNet18 and timm's resnet18_cifar; shapes must match."""
    import timm

    import hfkit.models  # noqa: F401  (registers resnet18_cifar with timm)

    course, ours = ResNet18(10), timm.create_model("resnet18_cifar", num_classes=10)
    shapes = [sorted(tuple(p.shape) for p in m.parameters()) for m in (course, ours)]
    if shapes[0] != shapes[1]:
        raise AssertionError("resnet18_cifar and the hand-written ResNet18 differ in parameter shapes")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        if course.eval()(x).shape != ours.eval()(x).shape:
            raise AssertionError("output shapes differ")
    return count_params(course), count_params(ours)


def train_course(args, device: torch.device) -> dict:
    """The course's loop: fp32, SGD, per-image transforms in 2 workers; first batches untimed."""
    _, splits = train_split(args.data, args.train_images, args.seed)
    images = decode_pil(splits.train, splits.image_column)
    labels = list(splits.train[splits.label_column])
    loader = course_loader(images, labels, args.seed)
    torch.manual_seed(args.seed)
    if args.course_model == "timm":
        import timm

        import hfkit.models  # noqa: F401  (registers resnet18_cifar with timm)
        model = timm.create_model("resnet18_cifar", num_classes=10).to(device)
    else:
        model = ResNet18(10).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    model.train()
    running_loss, timed, start = 0.0, 0, time.perf_counter()
    for i, (inputs, targets) in enumerate(loader):
        if i == WARMUP_BATCHES:
            sync(device)
            timed, start = 0, time.perf_counter()
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, targets)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        timed += len(targets)
    sync(device)
    seconds = time.perf_counter() - start
    return {"images": len(images), "timed_images": timed, "seconds": seconds,
            "images_per_s": timed / seconds, "batch": BATCH, "params": count_params(model),
            "model": args.course_model}


def train_hfkit(args, batch_size: int) -> dict:
    """The README's command as a process; images/s over its whole training loop (no warm-up skipped)."""
    overrides = [f"data.path={args.data}", f"data.max_train_samples={args.train_images}",
                 "data.max_eval_samples=1000", "train.epochs=1", f"train.batch_size={batch_size}",
                 f"train.seed={args.seed}", "eval.num_preview_images=0"]
    proc = run_recipe("cifar10", overrides)
    results = proc["results"]
    from hfkit.devices import training_precision

    recipe = recipe_for(args.data, overrides)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = training_precision(recipe.train.mixed_precision, device)
    return {"images": results["train_samples"], "timed_images": results["train_samples"],
            "seconds": results["train_runtime"], "images_per_s": results["train_samples_per_second"],
            "batch": batch_size, "wall": proc["wall"],
            "precision": "fp32" if precision[0] == "no" else f"{precision[0]} autocast",
            "channels_last": recipe.model.channels_last, "other_cpu": proc["other_cpu"]}


def part_b(args, device: torch.device) -> dict:
    rows = {"course loop": measured(train_course, args, device)}
    for b in args.hfkit_batches:
        rows[f"hfkit recipe, batch {b}"] = train_hfkit(args, b)
    return rows


def print_b(rows: dict, params: tuple[int, int], device: torch.device) -> None:
    course = rows["course loop"]
    print(f"\n### (b) Training images/s, ResNet-18 (CIFAR stem), {course['images']:,} training images, "
          f"1 epoch, {device}\n")
    print(f"Parameters: hand-written kuangliu ResNet18 {params[0]:,}, timm resnet18_cifar {params[1]:,} "
          f"({'same' if params[0] == params[1] else 'DIFFERENT'}; parameter shapes identical).\n")
    print("| loop | batch | precision | images timed | train s | images/s | vs course | other CPU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        if name == "course loop":
            what = f"fp32, NCHW, per-image PIL transforms (2 workers), {r['model']} model"
            timed = f"{r['timed_images']:,} (first {WARMUP_BATCHES} batches skipped)"
        else:
            what = (f"`accelerate launch scripts/finetune.py --recipe cifar10` ({r['precision']}"
                    f"{', channels-last' if r['channels_last'] else ''}, in-memory device augmentation; "
                    f"process wall {r['wall']:.1f} s)")
            timed = f"{r['timed_images']:,} (all batches)"
        ratio = r["images_per_s"] / course["images_per_s"]
        print(f"| {name} | {r['batch']} | {what} | {timed} | {r['seconds']:.1f} | "
              f"{r['images_per_s']:,.1f} | {ratio:.2f}x | {other_cpu(r)} |")
    print()
    for name, r in rows.items():
        if name != "course loop":
            ratio = r["images_per_s"] / course["images_per_s"]
            verdict = "met" if ratio >= 1.5 else "MISSED"
            print(f"{name} / course loop: {ratio:.2f}x (target >= 1.5x: {verdict})")


# -- (c) the whole recipe against a peer and the plain loop --------------------------------------

def part_c(args) -> dict:
    """Rows of whole processes, each seed once: the recipe (with compile: the first seed only), the
    plain loop of loop_overhead.py with the recipe's model and settings, airbench94 (GPU only)."""
    rows: dict[str, list[dict]] = {}
    compiled = {f"cifar10 recipe, compile {mode}": ["train.compile=true", f"train.compile_mode={mode}"]
                for mode in args.compile_modes}
    for k, seed in enumerate(args.seeds):
        rows.setdefault("cifar10 recipe", []).append(recipe_row(args, seed, []))
        for name, extra in compiled.items() if k == 0 else ():  # compiling costs minutes: one seed
            rows.setdefault(name, []).append(recipe_row(args, seed, extra))
        rows.setdefault("plain loop (loop_overhead.py)", []).append(plain_row(args, seed))
        if torch.cuda.is_available():
            rows.setdefault("airbench94", []).append(airbench_row(args, seed))
    return rows


def subset_overrides(args) -> list[str]:
    return [f"data.max_train_samples={args.c_train_images}" if args.c_train_images else None,
            f"data.max_eval_samples={args.c_eval_images}" if args.c_eval_images else None,
            f"train.epochs={args.c_epochs}" if args.c_epochs else None]


def recipe_row(args, seed: int, extra: list[str]) -> dict:
    overrides = [o for o in (f"data.path={args.data}", f"train.seed={seed}", *subset_overrides(args),
                             *extra, *args.overrides) if o]
    proc = run_recipe("cifar10", overrides)
    results, history = proc["results"], proc["history"]
    return {"seed": seed, "wall": proc["wall"], "train_seconds": results["train_runtime"],
            "epochs": len(history), "final_accuracy": history[-1]["eval_accuracy"],
            "epoch_seconds": [h["epoch_seconds"] for h in history], "other_cpu": proc["other_cpu"]}


def plain_row(args, seed: int) -> dict:
    recipe = recipe_for(args.data, [o for o in subset_overrides(args) if o])
    n_train = args.c_train_images or 50_000
    cmd = [sys.executable, "scripts/benchmarks/loop_overhead.py", "--plain-worker", "--data", str(args.data),
           "--model", recipe.model.name, "--train-images", str(n_train),
           "--eval-images", str(args.c_eval_images or 10_000), "--epochs", str(recipe.train.epochs),
           "--seed", str(seed), "--device", args.device]
    proc = run_process(cmd)
    result = last_json_line(proc["stdout"])
    return {"seed": seed, "wall": proc["wall"], "train_seconds": result["train_seconds"],
            "epochs": recipe.train.epochs, "final_accuracy": result["final_accuracy"],
            "other_cpu": proc["other_cpu"]}


def airbench_row(args, seed: int) -> dict:
    cmd = [sys.executable, "scripts/benchmarks/cifar10.py", "--airbench-worker", "--data", str(args.data),
           "--seed", str(seed)]
    proc = run_process(cmd)
    result = last_json_line(proc["stdout"])
    return {"seed": seed, "wall": proc["wall"], "train_seconds": result["train_seconds"],
            "epochs": result["epochs"], "final_accuracy": result["final_accuracy"],
            "other_cpu": proc["other_cpu"]}


def airbench_worker(args) -> dict:
    """airbench94 on this data copy: it reads ``cifar10/{train,test}.pt`` (uint8 NHWC images,
    labels, classes) from its working directory before it would download anything."""
    import airbench

    from hfkit.data.images import load_image_splits
    from hfkit.data.tensor_images import decode_all

    start = time.perf_counter()
    recipe = recipe_for(args.data, [])
    splits = load_image_splits(recipe.data, 0)
    with tempfile.TemporaryDirectory(prefix="airbench-") as tmp:
        (Path(tmp) / "cifar10").mkdir()
        for name, ds in (("train", splits.train), ("test", splits.eval)):
            torch.save({"images": decode_all(ds, splits.image_column).permute(0, 2, 3, 1).contiguous(),
                        "labels": torch.tensor(ds[splits.label_column]), "classes": splits.label_names},
                       Path(tmp) / "cifar10" / f"{name}.pt")
        os.chdir(tmp)
        torch.manual_seed(args.seed)
        prepared = time.perf_counter()
        model = airbench.train94(verbose=False)
        torch.cuda.synchronize()
        trained = time.perf_counter()
        test = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        accuracy = airbench.evaluate(model, test, tta_level=2)
    return {"train_seconds": trained - prepared, "prepare_seconds": prepared - start,
            "final_accuracy": accuracy, "epochs": 9.9}


def print_c(rows: dict) -> None:
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n### (c) Whole runs on {device}: the cifar10 recipe, the plain loop, airbench94\n")
    print("| row | seeds | epochs | process wall s (mean) | train s (mean) | test acc per seed | "
          "test acc (mean) | other CPU |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, runs in rows.items():
        accs = [r["final_accuracy"] for r in runs]
        mean = sum(accs) / len(accs)
        print(f"| {name} | {len(runs)} | {runs[0]['epochs']:g} | {_avg(runs, 'wall'):.1f} | "
              f"{_avg(runs, 'train_seconds'):.1f} | {', '.join(f'{a:.4f}' for a in accs)} | {mean:.4f} | "
              f"{', '.join(percent(r['other_cpu']) for r in runs)} |")
    if "airbench94" in rows:
        ours, peer = (sum(r["final_accuracy"] for r in rows[k]) / len(rows[k])
                      for k in ("cifar10 recipe", "airbench94"))
        wall = _avg(rows["cifar10 recipe"], "wall")
        verdict, fast = ("met" if ours >= peer else "MISSED"), ("met" if wall <= 120 else "MISSED")
        print(f"\nrecipe {ours:.4f} vs airbench94 {peer:.4f} (target >=: {verdict}); "
              f"recipe wall {wall:.1f} s (target <= 120 s: {fast})")
    else:
        print("\nairbench94 needs a CUDA GPU: its row was not run.")


def _avg(runs: list[dict], key: str) -> float:
    return sum(r[key] for r in runs) / len(runs)


# -- main ---------------------------------------------------------------------------------------

def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_facts(device: torch.device, load_at_start: str) -> None:
    import torchvision

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo", encoding="utf-8")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print("\n## CIFAR-10 benchmark: course pipeline and loop vs hfkit\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- CPU: {cpu}, {os.cpu_count()} logical CPUs "
          f"({len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} usable), "
          f"load average (1, 5, 15 min) {load_at_start} at start, {load_average()} at end")
    print(f"- torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} intra-op threads, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/cifar10")
    parser.add_argument("--images", type=int, default=50_000, help="training images in part (a)")
    parser.add_argument("--train-images", type=int, default=5_120, help="training images in part (b)")
    parser.add_argument("--hfkit-batches", type=lambda s: [int(b) for b in s.split(",") if b],
                        default=[128, 512], help="hfkit rows of part (b), e.g. 128 or 128,512")
    parser.add_argument("--parts", default="ab", help="which of parts a and b to run (default: ab)")
    parser.add_argument("--full", action="store_true", help="also (c): the whole recipe (for a GPU)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="extra recipe overrides for (c), e.g. --set train.compile=true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="device of the batch augmentation (a) and of the course loop (b)")
    parser.add_argument("--course-model", choices=["kuangliu", "timm"], default="kuangliu",
                        help="model of the course loop in (b): the hand-written ResNet18, or timm's "
                        "resnet18_cifar (same architecture) to leave out module-implementation differences")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1],
                        help="seeds of every row of (c), e.g. 0,1")
    parser.add_argument("--compile-modes", type=lambda s: [m for m in s.split(",") if m], default=[],
                        help="(c): also rows of the recipe with train.compile=true in these modes, "
                        "e.g. default,reduce-overhead")
    parser.add_argument("--c-train-images", type=int, help="(c) on a subset: training images (a CPU try)")
    parser.add_argument("--c-eval-images", type=int, help="(c) on a subset: test images")
    parser.add_argument("--c-epochs", type=int, help="(c): epochs instead of the recipe's")
    parser.add_argument("--airbench-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.data = args.data.resolve()
    if args.airbench_worker:
        print(json.dumps(airbench_worker(args)))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device(args.device)
    load_at_start = load_average()
    results: dict = {}
    if "a" in args.parts:
        results["a"] = part_a(args, device)
    if "b" in args.parts:
        results["params"] = check_same_architecture()
        results["b"] = part_b(args, device)
    if args.full:
        results["c"] = part_c(args)
    machine_facts(device, load_at_start)
    if "a" in results:
        print_a(results["a"], device)
    if "b" in results:
        print_b(results["b"], results["params"], device)
    if "c" in results:
        print_c(results["c"])
    print("\n" + json.dumps(results, default=str))


if __name__ == "__main__":
    main()
