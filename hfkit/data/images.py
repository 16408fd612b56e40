"""Image classification data: local folders, Hub data sets and zip URLs, through ``datasets``.

Images are decoded by PIL (``hfkit.data.transforms.decode_image``) rather than by ``datasets``,
so that unreadable files can be skipped up front (keeping every label with its own image), big
JPEGs are decoded at a reduced scale (``draft``), and small data sets are decoded once and kept
in memory.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import PIL.Image
import torch
from tqdm.auto import tqdm

from hfkit.data.layouts import detect_layout
from hfkit.data.sources import (
    EVAL_SPLIT_NAMES,
    check_kind,
    dataset_root,
    load_splits,
    pick_splits,
    seeded_subset,
)
from hfkit.data.transforms import UNREADABLE, decode_image, decode_size, image_transforms

logger = logging.getLogger(__name__)

CACHE_LIMIT = 20_000  # images kept decoded in memory when data.cache_images is left unset


@dataclass
class ImageSplits:
    """Train and eval splits (undecoded) and what their columns mean."""

    train: datasets.Dataset
    eval: datasets.Dataset
    image_column: str
    label_column: str
    label_names: list[str]


def load_image_splits(args, seed: int) -> ImageSplits:
    """Read a recipe's ``data`` section into train/eval splits, with seeded subsets."""
    check_class_folders(args.path)
    splits = load_splits(args.path)
    train_split, eval_split = pick_splits(splits, args.train_split, args.eval_split)
    train = splits[train_split]
    if not args.image_column:
        check_kind(train, args.path, "image-classification")
    image_col = args.image_column or _find_column(train, datasets.Image, "image_column")
    if not args.label_column and train.column_names == [image_col]:
        raise ValueError(_no_classes(args.path))
    label_col = args.label_column or _find_column(train, datasets.ClassLabel, "label_column",
                                                  fallback="label")
    for name in (image_col, label_col):
        if name not in train.column_names:
            raise ValueError(f"column '{name}' not found in {args.path}; columns are "
                             f"{train.column_names} (set data.image_column / data.label_column)")
    if eval_split is None:
        held_out = train.train_test_split(test_size=args.val_fraction, seed=seed,
                                          stratify_by_column=_stratify_column(train, label_col))
        train, evaluation = held_out["train"], held_out["test"]
    else:
        evaluation = splits[eval_split]
    return ImageSplits(seeded_subset(train, args.max_train_samples, seed),
                       seeded_subset(evaluation, args.max_eval_samples, seed),
                       image_col, label_col, _label_names(train, label_col))


def _no_classes(path: str) -> str:
    """Images without labels: most often a folder above the data set, or images not in class folders."""
    message = (f"data.path '{path}' gives images but no classes: an image folder holds one folder per "
               "class (ants/1.jpg, bees/2.jpg), or train/ and val/ each holding them")
    local = Path(path).expanduser()
    inside = list(_folders(local)) if local.is_dir() else []
    if len(inside) == 1 and any(f.is_file() for f in (local / inside[0]).iterdir()):
        message += (f". It holds one class folder, '{inside[0]}': training a classifier needs a folder per "
                    "class, two or more (hfkit evaluate scores a model on the images of one class)")
    elif inside and not {"train", *EVAL_SPLIT_NAMES} & set(inside):  # split folders: the data set itself
        message += (f". It holds {', '.join(inside[:6])}{' ...' if len(inside) > 6 else ''}: is the data set "
                    "one of them? Give that folder")
    return message + "."


def _folders(parent: Path) -> dict[str, Path]:
    """The folders in ``parent`` by name, sorted, without hidden ones."""
    return {d.name: d for d in sorted(parent.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def check_class_folders(path: str) -> None:
    """A local ``split/class/image`` folder, checked for what ``datasets`` would do silently: an
    empty class folder is dropped, a class only in val/ becomes a class no model learns, and one
    class folder gives no label column at all."""
    local = Path(path).expanduser()
    if not local.is_dir() or detect_layout(dataset_root(local)):  # raw CIFAR / Tiny ImageNet: not classes
        return
    root = dataset_root(local)

    top = _folders(root)
    if "train" not in top:  # not a split/class layout
        return
    by_split = {name: _folders(d) for name, d in top.items() if name == "train" or name in EVAL_SPLIT_NAMES}
    for classes in by_split.values():
        for folder in classes.values():
            if not any(f.is_file() and not f.name.startswith(".") for f in folder.rglob("*")):
                raise ValueError(f"class folder {folder} is empty: add its images, or remove the folder "
                                 "if the class is not wanted")
    train = by_split["train"]
    if not train and any(f.is_file() and not f.name.startswith(".") for f in (root / "train").iterdir()):
        # datasets would name the classes after the splits, with no label on any image
        raise ValueError(f"{root / 'train'} holds images but no class folders: put each class's images in a "
                         "folder of its own (train/ants/1.jpg, train/bees/2.jpg; val/ likewise)")
    if len(train) == 1:
        raise ValueError(f"{root / 'train'} holds one class folder "
                         f"('{next(iter(train))}'): classification needs a folder per class, two or more")
    for split, classes in by_split.items():
        extra = sorted(set(classes) - set(train))
        if train and extra:  # (no class folders in train/: files of another layout)
            raise ValueError(f"{root / split} has class folders that train/ lacks ({', '.join(extra)}): "
                             "no model can learn a class it never sees. Add training images for them, "
                             "or remove them from the evaluation folder")


def image_datasets(splits: ImageSplits, model: torch.nn.Module, args, seed: int
                   ) -> tuple[ImageDataset, ImageDataset]:
    """Decode both splits with the transforms of ``model``'s own pretrained_cfg."""
    min_size = decode_size(model)
    n = len(splits.train) + len(splits.eval)
    cache = args.cache_images if args.cache_images is not None else n <= CACHE_LIMIT
    augment = dict(hflip=args.hflip, color_jitter=args.color_jitter or None,
                   auto_augment=args.auto_augment)
    train_tf = image_transforms(model, is_training=True, **augment)
    eval_tf = image_transforms(model, is_training=False)
    col = splits.image_column, splits.label_column
    return (ImageDataset(splits.train, *col, train_tf, min_size, seed, cache, "train"),
            ImageDataset(splits.eval, *col, eval_tf, min_size, seed, cache, "eval"))


def _find_column(ds: datasets.Dataset, feature_type: type, key: str, fallback: str | None = None) -> str:
    for name, feature in ds.features.items():
        if isinstance(feature, feature_type):
            return name
    if fallback and fallback in ds.column_names:
        return fallback
    raise ValueError(f"no {feature_type.__name__} column among {ds.column_names}; set data.{key}")


def _stratify_column(ds: datasets.Dataset, label_col: str) -> str | None:
    return label_col if isinstance(ds.features[label_col], datasets.ClassLabel) else None


def _label_names(ds: datasets.Dataset, label_col: str) -> list[str]:
    feature = ds.features[label_col]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = sorted(set(ds[label_col]))
    if values != list(range(len(values))):
        raise ValueError(f"labels in column '{label_col}' must be a ClassLabel or 0..N-1 integers, "
                         f"got {values[:10]}")
    return [str(v) for v in values]


class ImageDataset(torch.utils.data.Dataset):
    """Decoded, transformed images with integer labels; unreadable files are left out.

    Items are indexed by ``i`` or by ``(epoch, i)``: random augmentation is seeded from
    (seed, epoch, i), so a sample looks the same whichever worker loads it and however a
    run was interrupted and resumed.
    """

    def __init__(self, ds: datasets.Dataset, image_col: str, label_col: str, transform: Callable,
                 min_size: int | None, seed: int, cache: bool, name: str) -> None:
        self.transform, self.min_size, self.seed = transform, min_size, seed
        entries = ds.cast_column(image_col, datasets.Image(decode=False))[image_col]
        self.sources = [_source(entry) for entry in entries]
        labels = list(ds[label_col])
        images, skipped = self._scan(name, keep=cache)
        self.skipped_sources = [describe_source(self.sources[i], i) for i in skipped]
        keep = [i for i in range(len(self.sources)) if i not in skipped]
        self.sources = [self.sources[i] for i in keep]
        self.labels = [int(labels[i]) for i in keep]
        self.images = [images[i] for i in keep] if cache else None
        if not self.labels:
            raise ValueError(f"no readable images in the {name} split")

    def _scan(self, name: str, keep: bool) -> tuple[list, dict[int, str]]:
        """Decode every image once (in threads: PIL releases the GIL) to find unreadable ones."""
        def load(i: int):
            try:
                img = decode_image(self.sources[i], self.min_size)
                return (img if keep else None), None
            except UNREADABLE as e:
                return None, f"{type(e).__name__}: {e}"

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            results = list(tqdm(pool.map(load, range(len(self.sources))), total=len(self.sources),
                                desc=f"Reading {name} images", unit="img", leave=False))
        skipped = {i: err for i, (_, err) in enumerate(results) if err is not None}
        for i, err in skipped.items():
            logger.warning("skipping unreadable image %s (%s)", describe_source(self.sources[i], i), err)
        return [img for img, _ in results], skipped

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> PIL.Image.Image:
        return self.images[i] if self.images is not None else decode_image(self.sources[i], self.min_size)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, i = key if isinstance(key, tuple) else (0, key)
        img = self.image(i)
        with torch.random.fork_rng(devices=[]):
            sample_seed = (self.seed * 1_000_003 + epoch) * 10_000_019 + i
            torch.manual_seed(sample_seed)
            py_state = random.getstate()  # timm's crops draw from Python's random module
            random.seed(sample_seed)
            try:
                x = self.transform(img)
            finally:
                random.setstate(py_state)
        return x, self.labels[i]


def _source(entry: dict[str, Any]) -> str | bytes:
    return entry["bytes"] if entry.get("bytes") else entry["path"]


def describe_source(source: str | bytes, i: int) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"#{i} (embedded bytes)"


class EpochSampler(torch.utils.data.Sampler):
    """Yields ``(epoch, index)`` in an order seeded by (seed, epoch), shuffled or not."""

    def __init__(self, n: int, seed: int, shuffle: bool) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        # built in C: a Python loop over 50,000 tensor elements took 0.27 s per epoch
        return zip(itertools.repeat(self.epoch), order.tolist())


def make_loader(ds: ImageDataset, batch_size: int, shuffle: bool, num_workers: int | None,
                seed: int, drop_last: bool = False) -> torch.utils.data.DataLoader:
    workers = default_workers(cached=ds.images is not None) if num_workers is None else num_workers
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, sampler=EpochSampler(len(ds), seed, shuffle), drop_last=drop_last,
        num_workers=workers, pin_memory=torch.cuda.is_available(),
        # workers stay alive across epochs (a fork per epoch costs seconds on small sets);
        # safe because the epoch reaches them inside each index, not as dataset state
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed),
        worker_init_fn=leave_stop_signals_to_the_trainer)


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A loader worker ignores Ctrl-C and SIGTERM: the terminal's Ctrl-C reaches every process of
    the run, and accelerate 1.16 passes a SIGTERM on to all of them; a worker that died of it
    would end the training process with "DataLoader worker ... killed by signal" instead of the
    stop after the step with a checkpoint. torch still ends its workers when the trainer goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def default_workers(cached: bool) -> int:
    """Workers feed a GPU; on CPU they compete with the model for the same cores, so decoded
    (cached) images are transformed in the main process, where it costs a few percent."""
    cpus = os.cpu_count() or 1
    if torch.cuda.is_available():
        return min(cpus, 8)
    return 0 if cached else min(4, max(1, cpus // 2))
