"""Causal language modelling data: texts from the Hub or local files, cut into token blocks.

``load_lm_texts`` reads a recipe's ``data`` section into a train and an eval split with one
column, ``text`` (empty lines dropped); ``group_into_blocks`` tokenizes them, joins the token
streams with an EOS token after each text, and cuts the stream into rows of exactly
``block_size`` tokens, like ``group_texts`` in transformers' ``run_clm.py`` example.

Seeded splits and subsets keep the rows in their original order, so consecutive lines of a
text file (paragraphs of one article) stay next to each other in the token stream.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import default_data_collator

from hfkit.data.sources import (
    FILE_BUILDERS,
    check_kind,
    is_string_feature,
    load_splits,
    pick_splits,
    seeded_subset,
)
from hfkit.offline import load_hub_dataset

__all__ = ["default_block_size", "group_into_blocks", "load_lm_splits", "load_lm_texts", "make_block_loader"]

GROUP_BATCH_SIZE = 1000  # texts per grouping batch; each batch drops its last partial block


def load_lm_texts(args, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and eval texts for a causal LM from a recipe's ``data`` section (a ``DataArgs``).

    ``args.path`` is a Hub data set id (with ``args.config`` for its configuration, e.g.
    ``Salesforce/wikitext`` and ``wikitext-2-raw-v1``), a ``.txt`` file or a folder of them
    (one example per line), or a JSON/JSONL/CSV/parquet file or folder with a text column
    (``args.text_column``, else ``text``, else the only string column). The eval split is
    ``args.eval_split``, else validation/valid/val/test, else a seeded ``args.val_fraction`` of
    the training rows. Both returned data sets have the single column ``text``.
    """
    splits = load_lm_splits(args)
    train_name, eval_name = pick_splits(splits, args.train_split, args.eval_split)
    if not args.text_column:
        check_kind(splits[train_name], args.path, "causal-lm")
    column = _text_column(splits[train_name], args.text_column, args.path)
    train = _texts(splits[train_name], column, args.path, train_name)
    if eval_name is None:
        train, evaluation = _seeded_split(train, args.val_fraction, seed)
    else:
        evaluation = _texts(splits[eval_name], column, args.path, eval_name)
    return (seeded_subset(train, args.max_train_samples, seed),
            seeded_subset(evaluation, args.max_eval_samples, seed))


def default_block_size(tokenizer, config) -> int:
    """The block length when the recipe does not say: 1024 tokens, fewer where the model reads fewer."""
    return min(1024, tokenizer.model_max_length, getattr(config, "n_positions", 1024))


def group_into_blocks(ds: datasets.Dataset, tokenizer, block_size: int) -> datasets.Dataset:
    """Tokenize the ``text`` column and cut the joined token stream into ``block_size`` rows.

    Texts are tokenized without truncation (with the tokenizer's own special tokens, e.g. a
    BOS), followed by the EOS token when the tokenizer has one, and concatenated. Every
    ``GROUP_BATCH_SIZE`` texts the stream is cut into blocks and the remainder shorter than
    ``block_size`` is dropped, as in transformers' ``run_clm.py``. The result has the columns
    ``input_ids`` and ``labels`` (a copy of ``input_ids``; the model shifts them itself).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    if "text" not in ds.column_names:
        raise ValueError(f"group_into_blocks needs a 'text' column, got {ds.column_names}")
    eos = tokenizer.eos_token_id

    def tokenize(texts: list[str]) -> dict[str, list[list[int]]]:
        ids = tokenizer(texts, truncation=False, verbose=False, return_attention_mask=False)["input_ids"]
        if eos is not None:  # don't double an EOS the tokenizer already appends itself
            ids = [x if x and x[-1] == eos else [*x, eos] for x in ids]
        return {"input_ids": ids}

    def group(batch: list[list[int]]) -> dict[str, list[list[int]]]:
        stream = list(itertools.chain.from_iterable(batch))
        end = len(stream) // block_size * block_size
        blocks = [stream[i:i + block_size] for i in range(0, end, block_size)]
        return {"input_ids": blocks, "labels": [list(block) for block in blocks]}

    tokenized = ds.map(tokenize, batched=True, input_columns="text", remove_columns=ds.column_names,
                       desc="Tokenizing")
    ids = datasets.Sequence(datasets.Value("int64"))  # int64: what embeddings and cross_entropy take
    grouped = tokenized.map(group, batched=True, batch_size=GROUP_BATCH_SIZE, input_columns="input_ids",
                            remove_columns=tokenized.column_names,
                            features=datasets.Features({"input_ids": ids, "labels": ids}),
                            desc=f"Grouping into blocks of {block_size}")
    if len(grouped) == 0:
        total = sum(len(row) for row in tokenized["input_ids"])
        where = "in all" if total < block_size else f"in each batch of {GROUP_BATCH_SIZE} texts"
        raise ValueError(f"the text is shorter than block_size: fewer than data.block_size={block_size} "
                         f"tokens {where} ({total} tokens in {len(tokenized)} texts); "
                         "lower data.block_size or use more text")
    return grouped


# ---------------------------------------------------------------------------------------------


def load_lm_splits(args) -> datasets.DatasetDict:
    """Every split of ``args.path`` (with ``args.config`` for a Hub data set's configuration)."""
    path = args.path
    local = Path(path).expanduser() if path else None
    if local is not None and not local.exists() and local.suffix in FILE_BUILDERS:
        raise FileNotFoundError(f"data.path: no such file: '{path}'")
    if args.config is None:
        return load_splits(path)
    if local is not None and local.exists():
        raise ValueError(f"data.config='{args.config}' applies to Hub data sets, but data.path='{path}' "
                         "is a local file or folder; remove data.config")
    if not path or path.startswith(("http://", "https://", ".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"data.path: no such file or folder: '{path}'")
    return load_hub_dataset(path, args.config)


def _text_column(ds: datasets.Dataset, requested: str | None, path: str) -> str:
    columns = ds.column_names
    if requested:
        if requested not in columns:
            raise ValueError(f"text column '{requested}' not found in {path}; columns are {columns} "
                             "(set data.text_column)")
        return requested
    if "text" in columns:
        return "text"
    strings = [name for name, feature in ds.features.items() if is_string_feature(feature)]
    if len(strings) == 1:
        return strings[0]
    which = "several string columns" if strings else "no string column"
    raise ValueError(f"text column 'text' not found in {path} and there are {which}; columns are "
                     f"{columns} (set data.text_column)")


def _texts(ds: datasets.Dataset, column: str, path: str, split: str) -> datasets.Dataset:
    """Only ``column``, renamed ``text``, without empty or blank rows."""
    if column not in ds.column_names:
        raise ValueError(f"text column '{column}' not found in the '{split}' split of {path}; "
                         f"columns are {ds.column_names} (set data.text_column)")
    if not is_string_feature(ds.features[column]):
        raise ValueError(f"column '{column}' of {path} holds {ds.features[column]}, not text "
                         "(set data.text_column)")
    ds = ds.select_columns([column])
    if column != "text":
        ds = ds.rename_column(column, "text")
    ds = ds.filter(lambda texts: [bool(t and not t.isspace()) for t in texts], batched=True,
                   input_columns="text", desc="Dropping empty lines")
    if len(ds) == 0:
        raise ValueError(f"the '{split}' split of {path} has no text (every row of '{column}' is empty)")
    return ds


def _seeded_split(ds: datasets.Dataset, fraction: float, seed: int
                  ) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold out ``ceil(fraction * n)`` random rows for evaluation; both parts keep their order."""
    n = len(ds)
    n_eval = math.ceil(n * fraction)
    if n_eval >= n:
        raise ValueError(f"only {n} non-empty text rows: too few to hold out data.val_fraction={fraction} "
                         "for evaluation; use more text or give an evaluation split (data.eval_split)")
    order = np.random.default_rng(seed).permutation(n)
    return ds.select(np.sort(order[n_eval:])), ds.select(np.sort(order[:n_eval]))


def make_block_loader(ds: datasets.Dataset, batch_size: int, shuffle: bool, seed: int
                      ) -> torch.utils.data.DataLoader:
    """Fixed-length blocks need no padding: stack them; order seeded by (seed, epoch)."""
    from hfkit.data.text import TextSampler

    return torch.utils.data.DataLoader(ds.with_format("torch"), batch_size=batch_size,
                                       sampler=TextSampler(len(ds), seed, shuffle),
                                       collate_fn=default_data_collator,
                                       # its own generator: see make_text_loader (dropout, resume)
                                       pin_memory=torch.cuda.is_available(), generator=torch.Generator())
