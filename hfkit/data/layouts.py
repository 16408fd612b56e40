"""Raw data set layouts as downloaded from their authors, read straight into ``datasets``.

* CIFAR-10 / CIFAR-100 python pickles (``cifar-10-batches-py/``, ``cifar-100-python/``): splits
  ``train`` and ``test``, columns ``img`` (PNG bytes) and ``label`` (``ClassLabel`` with the real
  class names), the column names of the Hub data sets ``uoft-cs/cifar10`` / ``uoft-cs/cifar100``
  (CIFAR-100 adds ``coarse_label``; ``label`` holds the 100 fine classes).
* Tiny ImageNet (``tiny-imagenet-200/``): splits ``train`` and ``validation``, columns ``image``
  (the JPEG files, by path) and ``label`` (``ClassLabel`` in ``wnids.txt`` order, named from
  ``words.txt``). The unlabelled ``test/`` folder is ignored.

:func:`detect_layout` recognises them, so ``data.path`` may point at either folder, its parent,
or the ``.tar.gz`` / ``.zip`` archive (``hfkit.data.sources.load_splits`` unpacks archives first).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import pickle
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import numpy as np
import PIL.Image

logger = logging.getLogger(__name__)

CIFAR_FOLDERS = ("cifar-10-batches-py", "cifar-100-python")
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tar.bz2", ".tar.xz", ".tgz")
TINY_IMAGENET_FOLDERS = ("tiny-imagenet-200",)
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def detect_layout(folder: Path) -> Callable[[], datasets.DatasetDict] | None:
    """A reader for ``folder`` if it holds a raw layout this module knows, else None.

    The reader takes no arguments (it is bound to the folder found). ``folder`` may also be a
    parent whose only entry (besides hidden files and archives) is ``cifar-10-batches-py/``,
    ``cifar-100-python/`` or ``tiny-imagenet-200/``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    reader = _reader_for(folder)
    if reader is None:
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))
                   and not (p.is_file() and p.name.endswith(ARCHIVES))]
        if (len(entries) == 1 and entries[0].is_dir()
                and entries[0].name in CIFAR_FOLDERS + TINY_IMAGENET_FOLDERS):
            folder = entries[0]
            reader = _reader_for(folder)
    return functools.partial(reader, folder) if reader else None


def _reader_for(folder: Path) -> Callable[[Path], datasets.DatasetDict] | None:
    if any((folder / name).is_file() for name in ("batches.meta", "data_batch_1", "test_batch")):
        return read_cifar_pickles
    if (folder / "meta").is_file() and (folder / "train").is_file():
        return read_cifar_pickles
    if (folder / "wnids.txt").is_file() or (folder / "val" / "val_annotations.txt").is_file():
        return read_tiny_imagenet
    return None


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python pickles


def read_cifar_pickles(folder: Path) -> datasets.DatasetDict:
    """The CIFAR python version (``data_batch_1..5`` + ``test_batch`` + ``batches.meta``, or
    CIFAR-100's ``train`` + ``test`` + ``meta``) as splits ``train`` / ``test``.

    Images become PNG bytes (lossless, about 2.3 KB each; all 60,000 take about 10 s on 2 cores,
    nearly all of it PNG encoding).
    """
    folder = Path(folder)
    if (folder / "meta").is_file() and not (folder / "batches.meta").is_file():
        return _read_cifar100(folder)
    meta = _require(folder / "batches.meta", "the class names of CIFAR-10")
    names = _decode_names(_unpickle(meta), b"label_names", meta)
    train_files = sorted((p for p in folder.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)),
                         key=lambda p: _natural_key(p.name))
    if not train_files:
        raise ValueError(f"no training batches (data_batch_1 ... data_batch_5) in {folder}")
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    splits = {}
    test_files = [_require(folder / "test_batch", "the CIFAR-10 test split")]
    for split, files in (("train", train_files), ("test", test_files)):
        images, labels = zip(*(_read_batch(f, b"labels", len(names)) for f in files))
        splits[split] = _cifar_split(np.concatenate(images), {"label": np.concatenate(labels)}, features)
    return datasets.DatasetDict(splits)


def _read_cifar100(folder: Path) -> datasets.DatasetDict:
    meta = _unpickle(folder / "meta")  # a file named meta (not batches.meta): CIFAR-100
    fine = _decode_names(meta, b"fine_label_names", folder / "meta")
    features = {"img": datasets.Image(), "label": datasets.ClassLabel(names=fine)}
    coarse = None
    if b"coarse_label_names" in meta:
        coarse = _decode_names(meta, b"coarse_label_names", folder / "meta")
        features["coarse_label"] = datasets.ClassLabel(names=coarse)
    splits = {}
    for split in ("train", "test"):
        path = _require(folder / split, f"the CIFAR-100 {split} split")
        batch = _unpickle(path)
        images, labels = _read_batch(path, b"fine_labels", len(fine), batch)
        columns = {"label": labels}
        if coarse is not None:
            columns["coarse_label"] = _read_batch(path, b"coarse_labels", len(coarse), batch)[1]
        splits[split] = _cifar_split(images, columns, datasets.Features(features))
    return datasets.DatasetDict(splits)


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR's batches hold: dicts, lists, bytes, numbers and numpy arrays.

    A pickle names the functions it calls to rebuild objects; a crafted one names ``os.system``.
    Only numpy's array and dtype constructors are looked up, so nothing else can run.
    """

    # _codecs.encode: how Python 3 writes bytes in protocol 2 (it only turns a str into bytes)
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray",
                                               "numpy.core.numeric", "numpy._core.numeric")
                 for name in ("_reconstruct", "_frombuffer"))}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks to run {module}.{name}, which CIFAR batches never do; "
                                         "it was not loaded")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    # CIFAR's official distribution exists only as pickles: read them, but never run what a
    # crafted file names (see _CifarUnpickler)
    try:
        with open(path, "rb") as f:
            content = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise ValueError(f"{path}: not a CIFAR python pickle ({type(e).__name__}: {e})") from e
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _decode_names(meta: dict, key: bytes, path: Path) -> list[str]:
    names = meta.get(key)
    if not names:
        raise ValueError(f"{path}: no {key.decode()} (keys: {sorted(k.decode() for k in meta)})")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path, label_key: bytes, num_classes: int,
                batch: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 32, 32, 3] uint8 (HWC) and labels [N] of one pickled batch."""
    batch = _unpickle(path) if batch is None else batch
    for key in (b"data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key.decode()} (keys: {sorted(k.decode() for k in batch)})")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {len(data)} images but {labels.size} {label_key.decode()}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: labels must be 0..{num_classes - 1}, "
                         f"got {labels.min()}..{labels.max()}")
    # rows are the red, green and blue 32x32 planes one after another (CHW)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_split(images: np.ndarray, labels: dict[str, np.ndarray],
                 features: datasets.Features) -> datasets.Dataset:
    pngs = encode_png(images)
    return datasets.Dataset.from_dict(
        {"img": [{"bytes": b, "path": None} for b in pngs], **{k: v.tolist() for k, v in labels.items()}},
        features=features)


def encode_png(images: np.ndarray) -> list[bytes]:
    """uint8 images [N, H, W, 3] as PNG bytes, in threads (PIL releases the GIL while encoding).

    ``compress_level=1``: for 32x32 images as small as the default level's and faster.
    """
    def encode(image: np.ndarray) -> bytes:
        out = io.BytesIO()
        PIL.Image.fromarray(image).save(out, format="PNG", compress_level=1)
        return out.getvalue()

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(encode, images, chunksize=512))


# ---------------------------------------------------------------------------------------------
# Tiny ImageNet


def read_tiny_imagenet(root: Path) -> datasets.DatasetDict:
    """``tiny-imagenet-200/`` as splits ``train`` and ``validation`` (images by path).

    Classes and their order come from ``wnids.txt``; names from ``words.txt`` (first synonym).
    Validation images of classes not in ``wnids.txt`` (a subset's leftovers) are skipped.
    """
    root = Path(root)
    wnids = _read_wnids(_require(root / "wnids.txt", "the class list of Tiny ImageNet"))
    names = class_names(wnids, root / "words.txt")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    index = {wnid: i for i, wnid in enumerate(wnids)}

    train_paths, train_labels = [], []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise ValueError(f"{folder}: missing; wnids.txt lists {wnid} but it has no training images")
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: _natural_key(p.name))
        if not files:
            raise ValueError(f"{folder}: no images (.JPEG) for class {wnid}")
        train_paths += [str(p) for p in files]
        train_labels += [index[wnid]] * len(files)

    val_paths, val_labels = _read_val(root, index)
    return datasets.DatasetDict({
        "train": _path_split(train_paths, train_labels, features),
        "validation": _path_split(val_paths, val_labels, features),
    })


def class_names(wnids: list[str], words: Path) -> list[str]:
    """Human-readable names: the first synonym in ``words.txt`` ("goldfish, Carassius auratus"
    -> "goldfish"); the wnid is appended to names two classes share; wnids without an entry
    keep the wnid as their name."""
    wanted, found = set(wnids), {}
    if words.is_file():
        with open(words, encoding="utf-8") as f:
            for line in f:
                wnid, _, text = line.rstrip("\r\n").partition("\t")
                if wnid in wanted:
                    found[wnid] = text.split(",")[0].strip()
    else:
        logger.warning("%s not found: the classes are named by their wnids", words)
    missing = [w for w in wnids if not found.get(w)]
    if missing and words.is_file():
        logger.warning("%s has no names for %s: named by their wnids", words, ", ".join(missing[:5]))
    names = [found.get(w) or w for w in wnids]
    counts = {n: names.count(n) for n in names}
    return [f"{n} ({w})" if counts[n] > 1 and n != w else n for n, w in zip(names, wnids)]


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wnids:
        raise ValueError(f"{path}: no class ids (one wnid per line, e.g. n01443537)")
    duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
    if duplicates:
        raise ValueError(f"{path}: classes listed twice: {', '.join(duplicates[:5])}")
    for lineno, wnid in enumerate(wnids, 1):
        _plain_name(wnid, f"{path}, class {lineno}", "a folder name inside train/")
    return wnids


def _plain_name(name: str, where: str, what: str) -> None:
    """Refuse a name of the data set's own files that is a path (``../``, ``/``): a crafted file
    would have a run read, and its plots, examples and Hub upload show, images from anywhere."""
    if name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ValueError(f"{where}: {name!r} is not {what}; the data set may only name its own files. "
                         "Is the download damaged or crafted? Download it again from its source.")


def _read_val(root: Path, index: dict[str, int]) -> tuple[list[str], list[int]]:
    annotations = _require(root / "val" / "val_annotations.txt", "the validation labels")
    images = root / "val" / "images"
    paths, labels, skipped = [], [], 0
    with open(annotations, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < 2 or not fields[0] or not fields[1]:
                raise ValueError(f"{annotations}, line {lineno}: expected 'file<TAB>wnid<TAB>box', "
                                 f"got {line.strip()!r}")
            name, wnid = fields[0].strip(), fields[1].strip()
            _plain_name(name, f"{annotations}, line {lineno}", "a file name inside val/images/")
            if wnid not in index:
                skipped += 1
                continue
            path = images / name
            if not path.is_file():
                raise ValueError(f"{annotations}, line {lineno}: lists {name}, but {path} does not exist")
            paths.append(str(path))
            labels.append(index[wnid])
    if skipped:
        logger.info("%s: skipped %d validation images of classes not in wnids.txt", annotations, skipped)
    if not paths:
        raise ValueError(f"{annotations}: no validation images of the classes in wnids.txt")
    return paths, labels


def _path_split(paths: list[str], labels: list[int], features: datasets.Features) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {"image": [{"path": p, "bytes": None} for p in paths], "label": labels}, features=features)


# ---------------------------------------------------------------------------------------------


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ValueError(f"{path}: missing ({what}); is {path.parent} the folder as downloaded?")
    return path


def _natural_key(name: str) -> list:
    """``img_2`` before ``img_10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
