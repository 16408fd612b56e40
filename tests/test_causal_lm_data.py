"""Causal LM data: texts from .txt/JSONL/parquet/Hub sources, grouped into token blocks."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from hfkit.data import causal_lm
from hfkit.data.causal_lm import group_into_blocks, load_lm_texts
from hfkit.recipes import DataArgs

EOS = "<|endoftext|>"
LINES = [f"Line {i}: the quick brown fox {'jumps over' if i % 2 else 'naps beside'} the lazy dog {i}."
         for i in range(30)]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (lossless, like GPT-2's) trained in a blink on the test text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(LINES, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)


@pytest.fixture(autouse=True)
def _private_datasets_cache(tmp_path, monkeypatch):
    """Builders write Arrow files under the test's own folder, never the user's cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# load_lm_texts


def test_single_txt_file_gets_a_seeded_ordered_split(tmp_path):
    lines_with_blanks = [x for line in LINES for x in (line, "", "   ")]
    path = write_lines(tmp_path / "corpus.txt", lines_with_blanks)
    args = DataArgs(path=str(path), val_fraction=0.2)

    train, evaluation = load_lm_texts(args, seed=0)
    assert train.column_names == evaluation.column_names == ["text"]
    train_texts, eval_texts = list(train["text"]), list(evaluation["text"])
    assert len(eval_texts) == 6 and len(train_texts) == 24  # empty and blank lines dropped
    assert sorted(train_texts + eval_texts) == sorted(LINES)
    assert train_texts == [x for x in LINES if x in set(train_texts)]  # original order kept
    assert eval_texts == [x for x in LINES if x in set(eval_texts)]

    again, _ = load_lm_texts(args, seed=0)
    other, _ = load_lm_texts(args, seed=1)
    assert list(again["text"]) == train_texts
    assert list(other["text"]) != train_texts


def test_txt_folder_uses_its_validation_file(tmp_path):
    write_lines(tmp_path / "wiki" / "train.txt", LINES[:20])
    write_lines(tmp_path / "wiki" / "validation.txt", ["", *LINES[20:]])
    train, evaluation = load_lm_texts(DataArgs(path=str(tmp_path / "wiki")), seed=0)
    assert list(train["text"]) == LINES[:20]
    assert list(evaluation["text"]) == LINES[20:]


def test_txt_folder_without_splits_is_split_by_val_fraction(tmp_path):
    write_lines(tmp_path / "books" / "a.txt", LINES[:15])
    write_lines(tmp_path / "books" / "b.txt", LINES[15:])
    train, evaluation = load_lm_texts(DataArgs(path=str(tmp_path / "books"), val_fraction=0.1), seed=3)
    assert (len(train), len(evaluation)) == (27, 3)
    assert sorted([*train["text"], *evaluation["text"]]) == sorted(LINES)


def test_jsonl_with_a_custom_text_column_and_subsets(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"id": i, "body": line, "lang": "en"} for i, line in enumerate(LINES)] + [{"id": 99, "body": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    args = DataArgs(path=str(path), text_column="body", val_fraction=0.5, max_train_samples=5,
                    max_eval_samples=4)
    train, evaluation = load_lm_texts(args, seed=0)
    assert train.column_names == ["text"]
    assert (len(train), len(evaluation)) == (5, 4)
    assert not set(train["text"]) & set(evaluation["text"])
    assert list(train["text"]) == [x for x in LINES if x in set(train["text"])]

    with pytest.raises(ValueError, match="text column 'content' not found.*'body'"):
        load_lm_texts(DataArgs(path=str(path), text_column="content"), seed=0)
    with pytest.raises(ValueError, match="text column 'text' not found.*several string columns"):
        load_lm_texts(DataArgs(path=str(path)), seed=0)  # 'body' and 'lang' are both strings


def test_parquet_picks_its_only_string_column(tmp_path):
    path = tmp_path / "docs.parquet"
    datasets.Dataset.from_dict({"n": list(range(len(LINES))), "content": LINES}).to_parquet(str(path))
    train, evaluation = load_lm_texts(DataArgs(path=str(path)), seed=0)
    assert sorted([*train["text"], *evaluation["text"]]) == sorted(LINES)
    with pytest.raises(ValueError, match="column 'n' .* not text"):
        load_lm_texts(DataArgs(path=str(path), text_column="n"), seed=0)


def test_hub_id_with_config_calls_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name))
        return datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": [" = Title = ", "", *texts]})
                                     for split, texts in (("train", LINES[:20]), ("validation", LINES[20:25]),
                                                          ("test", LINES[25:]))})

    monkeypatch.setattr(causal_lm.datasets, "load_dataset", fake_load_dataset)
    args = DataArgs(path="Salesforce/wikitext", config="wikitext-2-raw-v1")
    train, evaluation = load_lm_texts(args, seed=0)
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1")]
    assert list(train["text"]) == [" = Title = ", *LINES[:20]]
    assert list(evaluation["text"]) == [" = Title = ", *LINES[20:25]]
    _, test = load_lm_texts(DataArgs(path="Salesforce/wikitext", config="x", eval_split="test"), seed=0)
    assert list(test["text"])[1:] == LINES[25:]
    with pytest.raises(ValueError, match="no split 'dev'.*data.eval_split"):
        load_lm_texts(DataArgs(path="Salesforce/wikitext", config="x", eval_split="dev"), seed=0)


def test_missing_paths_raise_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_lm_texts(DataArgs(path=str(tmp_path / "nothing.txt")), seed=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_lm_texts(DataArgs(path="data/nothing.jsonl"), seed=0)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_lm_texts(DataArgs(path=str(tmp_path / "no-folder")), seed=0)


# ---------------------------------------------------------------------------------------------
# group_into_blocks


def test_blocks_have_block_size_tokens_and_keep_the_stream(tokenizer):
    texts = LINES[:12]
    ds = datasets.Dataset.from_dict({"text": texts})
    blocks = group_into_blocks(ds, tokenizer, block_size=16)
    assert blocks.column_names == ["input_ids", "labels"]
    assert blocks.features["input_ids"].feature.dtype == blocks.features["labels"].feature.dtype == "int64"
    assert len(blocks) > 3
    assert all(len(row) == 16 for row in blocks["input_ids"])
    assert list(blocks["labels"]) == list(blocks["input_ids"])

    stream = [t for text in texts for t in [*tokenizer(text)["input_ids"], tokenizer.eos_token_id]]
    joined = [t for row in blocks["input_ids"] for t in row]
    assert len(stream) - 16 < len(joined) <= len(stream)
    assert joined == stream[:len(joined)]
    # byte-level BPE is lossless: the blocks decode to the texts joined by EOS, cut off at the end
    decoded = tokenizer.decode(joined)
    assert decoded == "".join(text + EOS for text in texts)[:len(decoded)]
    assert decoded.startswith(texts[0] + EOS + texts[1] + EOS)


def test_tokenizer_without_eos_just_concatenates(tokenizer):
    no_eos = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    assert no_eos.eos_token_id is None
    texts = LINES[:4]
    blocks = group_into_blocks(datasets.Dataset.from_dict({"text": texts}), no_eos, block_size=8)
    decoded = no_eos.decode([t for row in blocks["input_ids"] for t in row])
    assert decoded == "".join(texts)[:len(decoded)]


def test_text_shorter_than_block_size_is_an_error(tokenizer):
    ds = datasets.Dataset.from_dict({"text": ["tiny", "text"]})
    with pytest.raises(ValueError, match="shorter than block_size.*lower data.block_size"):
        group_into_blocks(ds, tokenizer, block_size=512)


def test_txt_file_to_blocks(tmp_path, tokenizer):
    path = write_lines(tmp_path / "corpus.txt", LINES)
    train, evaluation = load_lm_texts(DataArgs(path=str(path), val_fraction=0.25), seed=0)
    train_blocks = group_into_blocks(train, tokenizer, block_size=32)
    eval_blocks = group_into_blocks(evaluation, tokenizer, block_size=32)
    assert {len(row) for row in train_blocks["input_ids"]} == {32}
    assert len(eval_blocks) >= 1 and len(train_blocks) > len(eval_blocks)
