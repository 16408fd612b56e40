"""Extractive question answering data: SQuAD-style JSON (CMRC 2018, DRCD, SQuAD) or Hub data sets.

Every split ends up with the columns of the Hub ``squad`` data set: ``id``, ``question``,
``context`` and ``answers`` (``{"text": [...], "answer_start": [...]}``, character offsets).
Contexts longer than the model's window are cut into overlapping windows; nothing here splits
on whitespace, so Chinese text (no spaces between words) is handled like any other.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from hfkit.data.sources import check_kind, load_splits, pick_splits, seeded_subset

logger = logging.getLogger(__name__)

QA_COLUMNS = ("id", "question", "context", "answers")
ANSWERS = datasets.Sequence({"text": datasets.Value("string"), "answer_start": datasets.Value("int32")})
FEATURES = datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                              "context": datasets.Value("string"), "answers": ANSWERS})
# file names of the SQuAD-style releases -> split (cmrc2018_train.json, dev-v1.1.json, DRCD_test.json)
SPLIT_WORDS = {"train": "train", "dev": "validation", "valid": "validation", "val": "validation",
               "test": "test", "trial": "trial"}


@dataclass
class QASplits:
    train: datasets.Dataset
    eval: datasets.Dataset


# -- reading ------------------------------------------------------------------------------------

def read_squad_json(path: str | Path) -> datasets.Dataset:
    """One SQuAD-format file (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``) as flat rows."""
    with open(path, encoding="utf-8") as f:
        tree = json.load(f)
    if not isinstance(tree, dict) or not isinstance(tree.get("data"), list):
        raise ValueError(f"{path}: not a SQuAD-style file (expected {{\"data\": [{{\"paragraphs\": ...}}]}})")
    rows: dict[str, list] = {k: [] for k in QA_COLUMNS}
    for article in tree["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                answers = qa.get("answers") or []
                rows["id"].append(str(qa["id"]))
                rows["question"].append(qa["question"])
                rows["context"].append(para["context"])
                rows["answers"].append({"text": [a["text"] for a in answers],
                                        "answer_start": [int(a["answer_start"]) for a in answers]})
    if not rows["id"]:
        raise ValueError(f"{path}: no questions found")
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def load_qa_data(path: str) -> datasets.DatasetDict:
    """Splits from a SQuAD-style JSON file, a folder of them, or anything :func:`load_splits` reads."""
    if not path:
        raise ValueError("data.path is not set; give a Hub data set id, a folder or a SQuAD-style JSON file")
    local = Path(path).expanduser()
    if local.is_file() and _is_squad_file(local):
        return datasets.DatasetDict({_split_of(local, "train"): read_squad_json(local)})
    if local.is_dir():
        files = sorted(p for p in local.glob("*.json") if _is_squad_file(p))
        if files:
            return datasets.DatasetDict({_split_of(p, p.stem): read_squad_json(p) for p in files})
    splits = load_splits(path)
    for ds in splits.values():
        check_kind(ds, path, "question-answering")
    return datasets.DatasetDict({name: _standardize(ds, name) for name, ds in splits.items()})


def load_qa_splits(args, seed: int) -> QASplits:
    """A recipe's ``data`` section as checked train/eval splits, with seeded subsets."""
    splits = load_qa_data(args.path)
    train_split, eval_split = pick_splits(splits, args.train_split, args.eval_split)
    if eval_split is None:
        parts = splits[train_split].train_test_split(test_size=args.val_fraction, seed=seed)
        train, evaluation = parts["train"], parts["test"]
    else:
        train, evaluation = splits[train_split], splits[eval_split]
    return QASplits(seeded_subset(train, args.max_train_samples, seed),
                    seeded_subset(evaluation, args.max_eval_samples, seed))


def _is_squad_file(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    with open(path, encoding="utf-8") as f:
        head = f.read(4096)
    return '"data"' in head and ('"paragraphs"' in head or '"title"' in head)


def _split_of(path: Path, default: str) -> str:
    words = path.stem.lower().replace("-", "_").split("_")
    return next((SPLIT_WORDS[w] for w in words if w in SPLIT_WORDS), default)


def _standardize(ds: datasets.Dataset, split: str) -> datasets.Dataset:
    missing = [c for c in ("question", "context", "answers") if c not in ds.column_names]
    if missing:
        raise ValueError(f"split '{split}' has no column {missing} (columns: {ds.column_names}); "
                         "expected the SQuAD layout: id, question, context, answers{text, answer_start}")
    if "id" not in ds.column_names:
        ds = ds.add_column("id", [f"{split}-{i}" for i in range(len(ds))])
    return ds.select_columns(list(QA_COLUMNS))


# -- windows ------------------------------------------------------------------------------------

def encode_windows(tokenizer, questions: list[str], contexts: list[str], max_length: int,
                   doc_stride: int):
    """Tokenize (question, context) pairs into overlapping windows of at most ``max_length`` tokens.

    Returns the tokenizer's encoding (one row per window, unpadded) with two extra lists:
    ``example_index`` (which pair a window came from) and ``context_mask`` (1 on context tokens:
    the only tokens an answer may start or end on).
    """
    enc = tokenizer([q.lstrip() for q in questions], contexts, truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True)
    enc["example_index"] = enc.pop("overflow_to_sample_mapping")
    enc["context_mask"] = [[int(s == 1) for s in enc.sequence_ids(i)] for i in range(len(enc["input_ids"]))]
    return enc


def window_room(tokenizer, question: str, max_length: int) -> int:
    """Context tokens that fit in one window beside ``question`` (special tokens counted)."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    return max_length - specials - len(tokenizer(question.lstrip(), add_special_tokens=False)["input_ids"])


def train_features(ds: datasets.Dataset, tokenizer, max_length: int, doc_stride: int) -> datasets.Dataset:
    """Windows with the answer's first/last token as labels; a window without it points at CLS (0)."""

    def encode(batch: dict[str, list]) -> dict[str, list]:
        enc = encode_windows(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        starts, ends = [], []
        for i, offsets in enumerate(enc["offset_mapping"]):
            j = enc["example_index"][i]
            span = _answer_chars(batch["context"][j], batch["answers"][j])
            first, last = _token_span(offsets, enc["context_mask"][i], span)
            starts.append(first)
            ends.append(last)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                **({"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {}),
                "start_positions": starts, "end_positions": ends}

    return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="Windows (train)")


def eval_features(ds: datasets.Dataset, tokenizer, max_length: int, doc_stride: int) -> datasets.Dataset:
    """Windows with ``example_index``, ``context_mask`` and ``offset_mapping`` kept for decoding."""

    def encode(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        enc = encode_windows(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        enc["example_index"] = [indices[j] for j in enc["example_index"]]
        return dict(enc)

    return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names,
                  desc="Windows (eval)")


def _answer_chars(context: str, answers: dict[str, list]) -> tuple[int, int] | None:
    """(start, end) characters of the first answer; a wrong ``answer_start`` is repaired if it can be."""
    if not answers["text"]:
        return None
    text, start = answers["text"][0], answers["answer_start"][0]
    if context[start:start + len(text)] != text:
        # some releases count offsets differently (bytes, stripped spaces): take the nearest match
        found = [i for i in _find_all(context, text)]
        if not found:
            return None
        start = min(found, key=lambda i: abs(i - start))
    return start, start + len(text)


def _find_all(text: str, part: str):
    i = text.find(part)
    while i >= 0 and part:
        yield i
        i = text.find(part, i + 1)


def _token_span(offsets, context_mask: list[int], span: tuple[int, int] | None) -> tuple[int, int]:
    """First and last token of ``span`` in this window, or (0, 0) (CLS) when it is not inside."""
    tokens = [t for t, m in enumerate(context_mask) if m]
    if span is None or not tokens:
        return 0, 0
    start, end = span
    if offsets[tokens[0]][0] > start or offsets[tokens[-1]][1] < end:
        return 0, 0
    first = max(t for t in tokens if offsets[t][0] <= start)
    last = min(t for t in tokens if offsets[t][1] >= end)
    return first, last


# -- batches ------------------------------------------------------------------------------------

class QACollator:
    """Pads a batch to its own longest window; ``context_mask`` is padded with zeros too."""

    MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.tokenizer, self.multiple = tokenizer, pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{k: r[k] for k in self.MODEL_KEYS if k in r} for r in rows],
                                   return_tensors="pt", pad_to_multiple_of=self.multiple)
        width = batch["input_ids"].shape[1]
        if "context_mask" in rows[0]:
            mask = torch.zeros(len(rows), width, dtype=torch.bool)
            for i, r in enumerate(rows):
                mask[i, :len(r["context_mask"])] = torch.tensor(r["context_mask"], dtype=torch.bool)
            batch["context_mask"] = mask
        for key in ("start_positions", "end_positions", "feature_index"):
            if key in rows[0]:
                batch[key] = torch.tensor([r[key] for r in rows])
        return dict(batch)
