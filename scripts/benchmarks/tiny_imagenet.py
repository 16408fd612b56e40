"""Tiny ImageNet data path: the raw download read as it is, against the Hub's parquet layout.

    python scripts/benchmarks/tiny_imagenet.py                                 # ../shared/data subset
    python scripts/benchmarks/tiny_imagenet.py --data ~/data/tiny-imagenet-200 --device cuda

First (not timed) the script writes a parquet copy of the same images in the layout of the Hub
data set ``zh-plus/tiny-imagenet`` (``data/train-00000-of-00001.parquet``,
``data/valid-00000-of-00001.parquet``; columns ``image`` {bytes: the original JPEG files, not
re-encoded} and ``label`` ClassLabel) into a temporary folder, which also holds this run's
``datasets`` cache. Then it times, in images/s (train + eval images):

(a) the data path of an in-memory run, end to end: ``load_image_splits(DataArgs(path=...))``
    then ``decode_all`` of the train and the eval split into uint8 tensors, for
    - the raw layout (``wnids.txt``, ``train/<wnid>/images``, ``val/val_annotations.txt``),
      read by ``hfkit.data.layouts.read_tiny_imagenet``;
    - the parquet copy: cold (``datasets`` converts the parquet files into its Arrow cache
      first, as on a first run) and warm (the cache is reused, as on every later run).
    Raw and warm rows are the best of ``--repeat`` runs (default 3).
    The seconds are split into load (listing / reading the split tables) and decode.
(b) the cost of one training epoch, train split only, images/s:
    - the old per-image PIL path: ``image_datasets`` (``ImageDataset`` with timm's training
      transforms of ``--model`` at ``--image-size``, the tiny-imagenet recipe's resnet50.a1_in1k
      at 224 px; decoded PIL images cached in memory, as it does for <= 20,000 images; that
      first decode is not timed) iterated by ``make_loader`` with batch 128 for one epoch;
    - for comparison, the in-memory path of (a): ``TensorImages`` + ``make_tensor_loader`` and
      ``BatchAugment`` per batch on ``--device`` (8 px crops, flips, resize to the same size).
    Both consume each batch (a sum) on ``--device``. The file cache is warm for every row (the
    parquet copy reads every image first).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch imports tqdm: no progress bars in the output
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def write_parquet_copy(raw: Path, out: Path) -> dict[str, int]:
    """The subset in zh-plus/tiny-imagenet's parquet layout, with the JPEG files as they are."""
    import datasets

    from hfkit.data.layouts import read_tiny_imagenet

    splits = read_tiny_imagenet(raw)
    (out / "data").mkdir(parents=True)
    sizes = {}
    for split, file in (("train", "train"), ("validation", "valid")):
        ds = splits[split]
        paths = [e["path"] for e in ds.cast_column("image", datasets.Image(decode=False))["image"]]
        copy = datasets.Dataset.from_dict(
            {"image": [{"bytes": Path(p).read_bytes(), "path": None} for p in paths],
             "label": list(ds["label"])}, features=ds.features)
        copy.to_parquet(str(out / "data" / f"{file}-00000-of-00001.parquet"))
        sizes[split] = len(copy)
    return sizes


def data_path(path: Path, seed: int) -> dict:
    """load_image_splits + decode_all of both splits: what an in-memory run does before step 1."""
    from hfkit.data.images import load_image_splits
    from hfkit.data.tensor_images import decode_all
    from hfkit.recipes import DataArgs

    start = time.perf_counter()
    splits = load_image_splits(DataArgs(path=str(path)), seed)
    loaded = time.perf_counter()
    train = decode_all(splits.train, splits.image_column)
    evaluation = decode_all(splits.eval, splits.image_column)
    end = time.perf_counter()
    n = len(train) + len(evaluation)
    return {"images": n, "load_s": loaded - start, "decode_s": end - loaded, "seconds": end - start,
            "images_per_s": n / (end - start), "shape": tuple(train.shape[1:]), "splits": splits,
            "tensors": (train, evaluation)}


def best_of(repeat: int, fn, *args) -> dict:
    return min((fn(*args) for _ in range(repeat)), key=lambda r: r["seconds"])


def pil_epoch(splits, model, seed: int, workers: int | None, device: torch.device) -> dict:
    """One epoch of the train split through ImageDataset + timm transforms + make_loader."""
    from hfkit.data.images import image_datasets, make_loader
    from hfkit.recipes import DataArgs

    args = DataArgs(num_workers=workers, hflip=0.5, color_jitter=0.0)  # the recipe's augmentation
    train, _ = image_datasets(splits, model, args, seed)  # decodes every image once (not timed)
    loader = make_loader(train, 128, shuffle=True, num_workers=workers, seed=seed)
    loader.sampler.set_epoch(1)
    start = time.perf_counter()
    total = 0.0
    for x, _ in loader:
        total += x.to(device, non_blocking=True).sum().item()
    seconds = time.perf_counter() - start
    return {"images": len(train), "seconds": seconds, "images_per_s": len(train) / seconds,
            "workers": loader.num_workers}


def tensor_epoch(splits, tensors, model, seed: int, device: torch.device) -> dict:
    """One epoch of the in-memory path: batches indexed from the uint8 tensor, augmented on device."""
    from hfkit.data.tensor_images import TensorImages, make_tensor_loader
    from hfkit.data.transforms import batch_augment
    from hfkit.recipes import DataArgs

    ds = TensorImages(tensors[0], list(splits.train[splits.label_column]), seed)
    augment = batch_augment(model, DataArgs(crop_padding=8, hflip=0.5, color_jitter=0.0))
    loader = make_tensor_loader(ds, 128, shuffle=True, seed=seed)
    loader.sampler.set_epoch(1)
    start = time.perf_counter()
    total = 0.0
    for images, _, batch_seed in loader:
        total += augment(images.to(device, non_blocking=True), batch_seed, train=True).sum().item()
    seconds = time.perf_counter() - start
    return {"images": len(ds), "seconds": seconds, "images_per_s": len(ds) / seconds, "workers": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/tiny-imagenet-200",
                        help="the raw tiny-imagenet-200 folder (default: the 20-class subset)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model", default="resnet50.a1_in1k",
                        help="timm model whose transforms (b) uses (no weights are loaded)")
    parser.add_argument("--image-size", type=int, default=224, help="model input size, as data.image_size")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers of the PIL path (default: hfkit's default_workers)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="(a): best of this many runs (the cold parquet row: its first, once)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (args.data / "wnids.txt").is_file():
        raise SystemExit(f"{args.data}: not a raw tiny-imagenet-200 folder (no wnids.txt)")
    import datasets
    import timm

    datasets.disable_progress_bars()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        datasets.config.HF_DATASETS_CACHE = str(Path(tmp) / "cache")  # this run's own, removed after
        parquet = Path(tmp) / "tiny-imagenet-parquet"
        sizes = write_parquet_copy(args.data, parquet)
        cold = data_path(parquet, args.seed)  # the first load_dataset of the copy fills the cache
        rows = {"raw folder (wnids.txt, train/, val/)": best_of(args.repeat, data_path, args.data, args.seed),
                "Hub parquet, cold datasets cache": cold,
                "Hub parquet, warm datasets cache": best_of(args.repeat, data_path, parquet, args.seed)}
        raw = rows["raw folder (wnids.txt, train/, val/)"]
        model = timm.create_model(args.model, pretrained=False, num_classes=len(raw["splits"].label_names))
        model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, args.image_size, args.image_size))
        epochs = {"per-image PIL + timm transforms (ImageDataset, make_loader)":
                  pil_epoch(raw["splits"], model, args.seed, args.workers, device),
                  "in memory: TensorImages + BatchAugment": tensor_epoch(raw["splits"], raw["tensors"],
                                                                           model, args.seed, device)}

    print(f"\nTiny ImageNet data path, {args.data} ({len(raw['splits'].label_names)} classes, "
          f"{sizes['train']:,} train + {sizes['validation']:,} validation images, "
          f"{raw['shape'][1]}x{raw['shape'][2]}), seed {args.seed}")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {device}, "
          f"torch {torch.__version__}, datasets {datasets.__version__}\n")
    print("(a) load_image_splits + decode_all (train + eval) into uint8 tensors\n")
    print("| layout | images | load s | decode s | total s | images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['images']:,} | {r['load_s']:.2f} | {r['decode_s']:.2f} | {r['seconds']:.2f} "
              f"| {r['images_per_s']:,.0f} |")
    print(f"\n(b) one training epoch of the train split, batch 128, {args.model} transforms at "
          f"{args.image_size} px, consumed on {device}\n")
    print("| path | workers | images | seconds | images/s |")
    print("|---|---:|---:|---:|---:|")
    for name, r in epochs.items():
        print(f"| {name} | {r['workers']} | {r['images']:,} | {r['seconds']:.2f} "
              f"| {r['images_per_s']:,.0f} |")


if __name__ == "__main__":
    main()
