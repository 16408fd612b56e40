"""Where data comes from: a local folder or file, a Hub data set id, or a URL of an archive."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import numpy as np

from hfkit.data.archives import is_archive, unpack
from hfkit.data.layouts import ARCHIVES, detect_layout
from hfkit.offline import load_hub_dataset
from hfkit.tasks import TASKS

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                 ".parquet": "parquet", ".txt": "text", ".arrow": "arrow"}
EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")


def pick_splits(splits: datasets.DatasetDict, train_split: str | None,
                eval_split: str | None) -> tuple[str, str | None]:
    """The training split (default ``train``) and the evaluation split, if the data has one."""
    train_split = train_split or "train"
    for key, name in (("train_split", train_split), ("eval_split", eval_split)):
        if name is not None and name not in splits:
            raise ValueError(f"no split '{name}' in the data (splits: {list(splits)}); set data.{key}")
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLIT_NAMES if s in splits and s != train_split), None)
    return train_split, eval_split


def seeded_subset(ds: datasets.Dataset, n: int | None, seed: int) -> datasets.Dataset:
    """A seeded random subset of ``n`` rows, kept in their original order (texts stay contiguous)."""
    if n is None or n >= len(ds):
        return ds
    return ds.select(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))


def is_string_feature(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def holds(ds: datasets.Dataset) -> list[str]:
    """What a split holds, in the words of :attr:`hfkit.tasks.Task.data`."""
    kinds = []
    if any(isinstance(f, datasets.Image) for f in ds.features.values()):
        kinds.append("images")
    columns = set(ds.column_names)
    if {"question", "context"} <= columns or {"version", "data"} <= columns:  # the rows, or a SQuAD file
        kinds.append("questions and contexts")
    if any(is_string_feature(f) for f in ds.features.values()):
        kinds.append("texts")
    return kinds


def check_kind(ds: datasets.Dataset, path: str, task: str) -> None:
    """Refuse data that holds none of what ``task`` trains on (a data.path of another task's data,
    or a column error would follow), saying what it holds and which recipes train on that."""
    from hfkit.recipes import list_recipes, load_recipe

    wanted, has = TASKS[task].data, holds(ds)
    if wanted in has or not has:
        return
    takers = [t.name for t in TASKS.values() if t.data == has[0]]
    recipes = [name for name in list_recipes() if load_recipe(name).task in takers]
    column = {"images": " (a column of image paths? name it with data.image_column)",
              "texts": " (name the column that holds them with data.text_column)"}.get(wanted, "")
    raise ValueError(f"data.path '{path}' holds {has[0]} (columns: {', '.join(ds.column_names)}), not the "
                     f"{wanted} that {task} recipes train on{column}. Recipes for {has[0]}: "
                     f"{', '.join(recipes)} (`hfkit recipes`); or give data.path this recipe's data.")


def load_splits(path: str) -> datasets.DatasetDict:
    """Load every split of a data set given by local path, Hub id, or http(s) URL."""
    if path.startswith(("http://", "https://")):
        return load_splits(str(download_archive(path)))
    local = Path(path).expanduser()
    if local.is_dir():
        root = dataset_root(local)
        reader = detect_layout(root)  # raw CIFAR pickles / Tiny ImageNet: read by hfkit.data.layouts
        return reader() if reader else read_local(str(root))
    if local.is_file():
        if local.name.endswith(ARCHIVES):
            return load_splits(str(extract_archive(local)))
        builder = FILE_BUILDERS.get(local.suffix)
        if builder is None:
            raise ValueError(f"data.path: don't know how to read '{local}'; "
                             f"use a folder or one of {', '.join(FILE_BUILDERS)}")
        return read_local(builder, data_files={"train": str(local)})
    if path.startswith((".", "/", "~")) or path.count("/") > 1 or not path:
        raise FileNotFoundError(f"data.path: no such file or folder: '{path}'")
    return load_hub_dataset(path)


def read_local(*args, **kwargs) -> datasets.DatasetDict:
    """``datasets.load_dataset`` on local files; a file it cannot parse is named with its line, not
    under three chained tracebacks."""
    # datasets resolves local files through its download manager, whose bar (kept: a folder of
    # 100,000 images takes a while) would say "Downloading data" about files already here
    kwargs.setdefault("download_config", datasets.DownloadConfig(download_desc="Reading local files"))
    try:
        return datasets.load_dataset(*args, **kwargs)
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e
        files = kwargs.get("data_files", {}).values() or [str(p) for p in Path(args[0]).rglob("*.json*")]
        where = next(filter(None, map(_json_error, files)), None)
        raise ValueError(f"data.path: cannot read the data: {where or f'{type(cause).__name__}: {cause}'}"
                         ) from None


def _json_error(path: str) -> str | None:
    """Where a JSON or JSON Lines file stops parsing: 'file, line N, column M: what'."""
    import json

    def error(text: str) -> json.JSONDecodeError | None:
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            return e
        return None

    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    first = next((line for line in lines if line.strip()), "")
    if error(first) is not None:  # not JSON Lines: one document, whose error knows its line
        e = error("\n".join(lines))
        return e and f"{path}, line {e.lineno}, column {e.colno}: {e.msg}"
    for number, line in enumerate(lines, 1):
        e = error(line) if line.strip() else None
        if e is not None:
            return f"{path}, line {number}, column {e.colno}: {e.msg}"
    return None


def download_archive(url: str) -> Path:
    """Download and extract an archive into the Hugging Face cache, once.

    The extracted folder is remembered per URL, so later runs (offline ones too) use it
    without asking the server again.
    """
    cache = Path(datasets.config.HF_DATASETS_CACHE)
    record = cache / "hfkit-urls" / hashlib.sha256(url.encode()).hexdigest()[:32]
    if record.is_file() and Path(record.read_text()).is_dir():
        return dataset_root(Path(record.read_text()))
    manager = _download_manager(cache)
    try:
        archive = manager.download(url)
    except (ConnectionError, OSError) as e:
        raise ConnectionError(
            f"could not download {url} ({type(e).__name__}: {e}).\nDownload and unpack it by hand, "
            "then pass --set data.path=/path/to/the/unpacked/folder") from e
    if not is_archive(Path(archive)):
        raise ValueError(f"{url} is not a zip or tar archive: download it by hand and pass its path as "
                         "data.path, or the folder it unpacks into")
    extracted = unpack(Path(archive), url, cache)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(str(extracted))
    return dataset_root(extracted)


def extract_archive(archive: Path) -> Path:
    if not is_archive(archive):
        raise ValueError(f"data.path: '{archive}' is named like an archive but is neither a zip nor a tar "
                         "file (a download cut short?): download it again")
    return dataset_root(unpack(archive, str(archive), Path(datasets.config.HF_DATASETS_CACHE)))


def _download_manager(cache: Path) -> datasets.DownloadManager:
    config = datasets.DownloadConfig(cache_dir=cache / "downloads")
    return datasets.DownloadManager(dataset_name="hfkit", download_config=config)


def dataset_root(folder: Path) -> Path:
    """Step into wrapper folders: ``hymenoptera_data.zip`` unpacks to ``hymenoptera_data/``."""
    while True:
        entries = [p for p in folder.iterdir()
                   if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in ("train", "data"):
            folder = entries[0]
        else:
            return folder
