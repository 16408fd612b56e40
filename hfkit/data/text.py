"""Text classification data for BERT-style models: Hub data sets, local files, raw aclImdb.

Every split ends up with exactly two columns, ``text`` (str) and ``label`` (ClassLabel), so
tokenization and training never depend on how the source named or encoded them. All checks
run here, before any model is built, so a bad column or label costs seconds, not a download.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from transformers import DataCollatorWithPadding

from hfkit.data.sources import (
    ARCHIVES,
    FILE_BUILDERS,
    check_kind,
    dataset_root,
    is_string_feature,
    load_splits,
    pick_splits,
    read_local,
    seeded_subset,
)
from hfkit.offline import load_hub_dataset

logger = logging.getLogger(__name__)

IMDB_LABELS = ["neg", "pos"]


@dataclass
class TextSplits:
    """Train and eval splits with columns ``text`` and ``label`` (0..N-1), and the class names."""

    train: datasets.Dataset
    eval: datasets.Dataset
    label_names: list[str]


def load_text_classification(args, seed: int) -> TextSplits:
    """Read a recipe's ``data`` section into checked train/eval splits, with seeded subsets."""
    splits = read_text_splits(args)
    train_split, eval_split = pick_splits(splits, args.train_split, args.eval_split)
    if not args.text_column:
        check_kind(splits[train_split], args.path, "text-classification")
    text_col, label_col = _pick_columns(splits[train_split], args)
    train = _standardize(splits[train_split], text_col, label_col, train_split, args.path)
    train, names = _encode_labels(train, None, train_split)
    if eval_split is None:
        train, evaluation = _hold_out(train, args.val_fraction, seed)
    else:
        evaluation = _standardize(splits[eval_split], text_col, label_col, eval_split, args.path)
        evaluation, _ = _encode_labels(evaluation, names, eval_split)
    return TextSplits(seeded_subset(train, args.max_train_samples, seed),
                      seeded_subset(evaluation, args.max_eval_samples, seed), names)


def tokenize_splits(splits: TextSplits, tokenizer, max_length: int
                    ) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Tokenize both splits, truncated but unpadded: the collator pads each batch to its longest."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {**encoded, "labels": batch["label"]}

    return tuple(ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"Tokenizing {name}")
                 for name, ds in (("train", splits.train), ("eval", splits.eval)))


def make_text_loader(ds: datasets.Dataset, tokenizer, batch_size: int, shuffle: bool, seed: int,
                     group_by_length: bool = False, collate_fn=None) -> torch.utils.data.DataLoader:
    """Batches padded to their own longest item; order seeded by (seed, epoch) via ``set_epoch``."""
    lengths = _lengths(ds) if group_by_length else None
    sampler = TextSampler(len(ds), seed, shuffle, batch_size, lengths)
    # tokenized texts are already in memory: worker processes would only add start-up time. A
    # generator of its own: each iterator takes its seed from it, not from torch's global one, which
    # dropout draws from and checkpoints restore (a resumed epoch's new iterator would shift it)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=0,
                                       collate_fn=collate_fn or DataCollatorWithPadding(tokenizer),
                                       pin_memory=torch.cuda.is_available(), generator=torch.Generator())


class TextSampler(torch.utils.data.Sampler):
    """Indices in an order that depends only on (seed, epoch); optionally grouped by length with
    transformers' own ``get_length_grouped_indices`` (what its ``LengthGroupedSampler`` uses):
    shuffle, cut into mega-batches, sort each by length, the longest batch first. Batches then hold
    texts of similar length, so little padding, while the mega-batch order stays random.
    """

    def __init__(self, n: int, seed: int, shuffle: bool, batch_size: int = 1,
                 lengths: list[int] | None = None) -> None:
        self.n, self.seed, self.shuffle, self.batch_size, self.lengths = n, seed, shuffle, batch_size, lengths
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.lengths is not None and self.n:
            from transformers.trainer_pt_utils import get_length_grouped_indices

            # mega-batches of 50 batches, as LengthGroupedSampler's maximum (its default shrinks them
            # to make 4 on small sets, which leaves more padding)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=50,
                                                   generator=generator))
        return iter(torch.randperm(self.n, generator=generator).tolist() if self.shuffle else range(self.n))


def _lengths(ds: datasets.Dataset) -> list[int]:
    return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_pylist()


# -- reading ------------------------------------------------------------------------------------

def read_text_splits(args) -> datasets.DatasetDict:
    path = args.path
    if not path:
        raise ValueError("data.path is not set; give a Hub data set id, a folder or a file")
    local = Path(path).expanduser()
    if not local.exists() and local.name.endswith((*FILE_BUILDERS, *ARCHIVES)):
        # load_splits would take 'reviews.csv' for a Hub id and report a network error instead
        raise FileNotFoundError(f"data.path: no such file: '{path}'")
    imdb = _aclimdb_root(local) if local.is_dir() else None
    if imdb is not None:
        return _read_aclimdb(imdb)
    try:
        return _read_config(path, local, args.config) if args.config else load_splits(path)
    except StopIteration as e:  # what the json builder raises for an empty file
        raise ValueError(f"data.path: '{path}' holds no rows; check the file") from e
    except ValueError as e:
        empty = re.match(r'Instruction "(.+)" corresponds to no data', str(e))
        if empty is None:
            raise
        raise ValueError(f"the '{empty.group(1)}' split of {path} is empty; check the data, or pick "
                         "another split with data.train_split / data.eval_split") from e


def _aclimdb_root(folder: Path) -> Path | None:
    """The raw IMDB download (``aclImdb/{train,test}/{pos,neg}/*.txt``), given itself or its parent."""
    for root in (folder, folder / "aclImdb", dataset_root(folder)):
        if all(any((root / "train" / name).glob("*.txt")) for name in IMDB_LABELS):
            return root
    return None


def _read_aclimdb(root: Path) -> datasets.DatasetDict:
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=IMDB_LABELS)})
    splits = {}
    for split in ("train", "test"):  # unsup/ has no labels; urls_*.txt and *.feat are not reviews
        files = [(f, label) for label, name in enumerate(IMDB_LABELS)
                 for f in sorted((root / split / name).glob("*.txt"))]
        # a split folder without reviews (a partial unpack) must fail, not fall back silently
        if files or any((root / split / name).is_dir() for name in IMDB_LABELS):
            splits[split] = datasets.Dataset.from_dict(
                {"text": [f.read_text(encoding="utf-8") for f, _ in files],
                 "label": [label for _, label in files]}, features=features)
    return datasets.DatasetDict(splits)


def _read_config(path: str, local: Path, config: str) -> datasets.DatasetDict:
    if local.is_dir():
        # a Hub-layout copy without README metadata keeps each configuration in its own folder
        if (local / config).is_dir():
            return load_splits(str(local / config))
        return read_local(str(local), config)
    if local.is_file():
        logger.warning("data.config=%s is ignored for the single file %s", config, path)
        return load_splits(path)
    return load_hub_dataset(path, config)


# -- columns and checks -------------------------------------------------------------------------

def _pick_columns(ds: datasets.Dataset, args) -> tuple[str, str]:
    columns = ds.column_names
    label_col = args.label_column or next(
        (name for name, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), "label")
    if label_col not in columns:
        raise ValueError(f"label column '{label_col}' not found in {args.path}; columns are {columns} "
                         "(set data.label_column)")
    text_col = args.text_column or ("text" if "text" in columns else _only_string_column(ds, label_col))
    if text_col is None or text_col not in columns:
        raise ValueError(f"text column '{text_col or 'text'}' not found in {args.path}; columns are "
                         f"{columns} (set data.text_column)")
    if text_col == label_col:
        raise ValueError(f"data.text_column and data.label_column are both '{text_col}'")
    return text_col, label_col


def _only_string_column(ds: datasets.Dataset, label_col: str) -> str | None:
    strings = [name for name, f in ds.features.items() if name != label_col and is_string_feature(f)]
    return strings[0] if len(strings) == 1 else None



def _standardize(ds: datasets.Dataset, text_col: str, label_col: str, split: str, path: str
                 ) -> datasets.Dataset:
    """Keep only the text and label columns, renamed, after checking the split is usable."""
    for col, key in ((text_col, "text_column"), (label_col, "label_column")):
        if col not in ds.column_names:
            raise ValueError(f"column '{col}' not found in the {split} split of {path}; columns are "
                             f"{ds.column_names} (set data.{key})")
    if len(ds) == 0:
        raise ValueError(f"the '{split}' split of {path} is empty; check the data, or pick another split "
                         "with data.train_split / data.eval_split")
    if not is_string_feature(ds.features[text_col]):
        raise ValueError(f"column '{text_col}' in {path} holds {ds.features[text_col]}, not text "
                         "(set data.text_column)")
    _check_texts(ds, text_col, split)
    ds = ds.select_columns([text_col, label_col])
    return ds.rename_columns({text_col: "text", label_col: "label"})


def _check_texts(ds: datasets.Dataset, text_col: str, split: str) -> None:
    texts = ds.with_format("arrow")[text_col]
    empty = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(texts), ""), True)
    count = pc.sum(empty).as_py() or 0
    if count:
        first = pc.index(empty, True).as_py()
        raise ValueError(f"{count} empty text(s) in column '{text_col}' of the {split} split "
                         f"(first at index {first}); remove them from the data")


def _encode_labels(ds: datasets.Dataset, names: list[str] | None, split: str
                   ) -> tuple[datasets.Dataset, list[str]]:
    """Make ``label`` a ClassLabel; ``names`` (from train) fixes the classes of the eval split."""
    feature, labels = ds.features["label"], ds.with_format("arrow")["label"]
    if labels.null_count:
        first = pc.index(pc.is_null(labels), True).as_py()
        raise ValueError(f"{labels.null_count} missing label(s) in the {split} split (first at index "
                         f"{first}); every text needs a class")
    if isinstance(feature, datasets.ClassLabel):
        own = list(feature.names)
        values = set(pc.unique(labels).to_pylist())
        if not values <= set(range(len(own))):  # e.g. GLUE test splits use -1 for "no label"
            raise ValueError(f"labels {sorted(values - set(range(len(own))))} of the {split} split are "
                             "not classes; pick another split with data.eval_split")
        if names is not None and own != names:
            raise ValueError(f"the {split} split has classes {own}, the train split {names}")
        return ds, own
    if pa.types.is_integer(labels.type):
        return _encode_integers(ds, labels, names, split)
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        return _encode_strings(ds, labels, names, split)
    sample = pc.unique(labels).to_pylist()[:5]
    raise ValueError(f"labels of the {split} split are {labels.type} (e.g. {sample}), not classes; "
                     "use integers 0..N-1 or class names (regression is not supported)")


def _encode_integers(ds: datasets.Dataset, labels: pa.ChunkedArray, names: list[str] | None, split: str
                     ) -> tuple[datasets.Dataset, list[str]]:
    values = sorted(pc.unique(labels).to_pylist())
    allowed = range(len(names)) if names is not None else range(len(values))
    if (names is None and values != list(allowed)) or not set(values) <= set(allowed):
        raise ValueError(f"integer labels must be the classes 0..N-1; the {split} split has {values[:20]} "
                         "(renumber them, or store class names instead)")
    names = names or [str(v) for v in values]
    return ds.cast_column("label", datasets.ClassLabel(names=names)), names


def _encode_strings(ds: datasets.Dataset, labels: pa.ChunkedArray, names: list[str] | None, split: str
                    ) -> tuple[datasets.Dataset, list[str]]:
    if names is None:
        ds = ds.class_encode_column("label")  # sorted class names: the same order on every run
        return ds, list(ds.features["label"].names)
    unknown = sorted(set(pc.unique(labels).to_pylist()) - set(names))
    if unknown:
        raise ValueError(f"labels {unknown[:10]} of the {split} split are not among the train classes "
                         f"{names}")
    return ds.cast_column("label", datasets.ClassLabel(names=names)), names


def _hold_out(train: datasets.Dataset, fraction: float, seed: int
              ) -> tuple[datasets.Dataset, datasets.Dataset]:
    """A seeded eval split, stratified so every class keeps its share."""
    try:
        parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column="label")
    except ValueError:  # a class with a single example cannot be stratified
        logger.warning("could not stratify the held-out split (a class is too rare); splitting at random")
        parts = train.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]
