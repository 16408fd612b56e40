"""Text classification data: every source format, every check, tokenization and batching."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hfkit.data.text import (
    TextSampler,
    TextSplits,
    load_text_classification,
    make_text_loader,
    tokenize_splits,
)
from hfkit.recipes import DataArgs

IMDB = Path(__file__).resolve().parents[2] / "shared/data/imdb"
GOOD, BAD = ["good", "great", "lovely", "superb"], ["bad", "awful", "dull", "boring"]
FILLER = ["the", "film", "story", "actor", "plot", "and", "was", "very"]


def review(positive: bool, n_words: int, rng: random.Random) -> str:
    """A review whose sentiment words give its class away, so label/text pairing can be checked."""
    words = [rng.choice(FILLER) for _ in range(n_words - 1)] + [rng.choice(GOOD if positive else BAD)]
    return " ".join(words)


def reviews(n: int, seed: int = 0, max_words: int = 12) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [review(bool(y), rng.randint(2, max_words), rng) for y in labels], labels


def is_positive(text: str) -> bool:
    return any(word in text.split() for word in GOOD)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    """A tiny BERT-style WordPiece tokenizer, trained here and reloaded like a Hub one."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator([" ".join(GOOD + BAD + FILLER)] * 10,
                            trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece()
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                      model_max_length=512)
    folder = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def write_hub_parquet(root: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """The Hub's parquet layout of stanfordnlp/imdb, with ClassLabel neg/pos in the metadata."""
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        texts, labels = reviews(n, seed)
        (root / "plain_text").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features).to_parquet(
            root / "plain_text" / f"{split}-00000-of-00001.parquet")
    return root


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_pairs(ds: datasets.Dataset) -> None:
    """Texts still sit next to their own labels after renaming, encoding and splitting."""
    assert ds.column_names == ["text", "label"]
    assert all(is_positive(t) == bool(y) for t, y in zip(ds["text"], ds["label"]))


# -- sources ------------------------------------------------------------------------------------

def test_parquet_hub_layout(tmp_path):
    root = write_hub_parquet(tmp_path / "imdb")
    for config in (None, "plain_text"):
        splits = load_text_classification(DataArgs(path=str(root), config=config), seed=0)
        assert splits.label_names == ["neg", "pos"]
        assert (len(splits.train), len(splits.eval)) == (20, 10)  # the test split is the eval split
        check_pairs(splits.train)
        check_pairs(splits.eval)


def test_csv_with_custom_columns_and_string_labels(tmp_path):
    texts, labels = reviews(30)
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"id": range(30), "review": texts,
                  "sentiment": ["positive" if y else "negative" for y in labels]}).to_csv(path, index=False)
    args = DataArgs(path=str(path), text_column="review", label_column="sentiment", val_fraction=0.2)
    splits = load_text_classification(args, seed=0)
    assert splits.label_names == ["negative", "positive"]  # sorted class names
    assert (len(splits.train), len(splits.eval)) == (24, 6)
    assert isinstance(splits.train.features["label"], datasets.ClassLabel)
    check_pairs(splits.train)
    check_pairs(splits.eval)


def test_held_out_split_is_stratified(tmp_path):
    rng = random.Random(0)
    labels = [1] * 8 + [0] * 32  # imbalanced: a random 10-row split rarely keeps exactly 2 positives
    path = write_jsonl(tmp_path / "data.jsonl", [{"text": review(bool(y), 4, rng), "label": y}
                                                 for y in labels])
    for seed in range(5):
        splits = load_text_classification(DataArgs(path=str(path), val_fraction=0.25), seed=seed)
        assert sorted(splits.eval["label"]) == [0] * 8 + [1] * 2
        check_pairs(splits.eval)


def test_jsonl_integer_labels_drop_other_columns(tmp_path):
    rng = random.Random(0)
    rows = [{"text": f"text number {i} " + review(bool(i % 2), 3, rng), "label": i % 3, "meta": {"i": i}}
            for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    splits = load_text_classification(DataArgs(path=str(train)), seed=0)
    assert splits.label_names == ["0", "1", "2"]
    assert splits.train.column_names == ["text", "label"]
    assert sorted(set(splits.eval["label"])) == [0, 1, 2]  # stratified: every class is evaluated


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_broken_json_line_is_named_by_its_line_number(tmp_path, suffix):
    """Line 18 (row 17 counted from 0, as pyarrow reports it) is broken: the error says line 18."""
    lines = [json.dumps({"text": f"review {i} good", "label": i % 2}) for i in range(30)]
    lines[17] = '{"text": "broken, "label": 1}'
    path = tmp_path / f"train{suffix}"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"train{suffix}, line 18, column 20: Expecting ',' delimiter"):
        load_text_classification(DataArgs(path=str(path)), seed=0)


def test_single_file_seeded_split_and_subsets(tmp_path):
    texts, labels = reviews(40)
    texts = [f"{i} {text}" for i, text in enumerate(texts)]  # unique, so sets tell the splits apart
    path = tmp_path / "data.parquet"
    pd.DataFrame({"text": texts, "label": labels}).to_parquet(path)

    def load(seed: int, **kw) -> TextSplits:
        return load_text_classification(DataArgs(path=str(path), val_fraction=0.25, **kw), seed=seed)

    a, b, c = load(0), load(0), load(1)
    assert (len(a.train), len(a.eval)) == (30, 10)
    assert set(a.train["text"]).isdisjoint(a.eval["text"])
    assert sorted(a.eval["label"]) == [0] * 5 + [1] * 5  # stratified
    assert a.eval["text"] == b.eval["text"] and a.eval["text"] != c.eval["text"]
    small, again = load(0, max_train_samples=7, max_eval_samples=3), load(0, max_train_samples=7,
                                                                           max_eval_samples=3)
    assert (len(small.train), len(small.eval)) == (7, 3)
    assert small.train["text"] == again.train["text"]
    assert set(small.train["text"]) <= set(a.train["text"])


def write_aclimdb(root: Path) -> Path:
    rng = random.Random(0)
    for split, n in (("train", 3), ("test", 2)):
        for name in ("pos", "neg"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                (root / split / name / f"{i}_{7 if name == 'pos' else 2}.txt").write_text(
                    review(name == "pos", 6, rng) + " <br /><br />the end")
    # parts of the real download that are not labelled reviews
    (root / "train" / "unsup").mkdir()
    (root / "train" / "unsup" / "0_0.txt").write_text("an unlabelled review")
    (root / "train" / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0453418/usercomments\n")
    (root / "train" / "labeledBow.feat").write_text("0 9:1 12:2\n")
    (root / "imdb.vocab").write_text("the\nfilm\n")
    return root


def test_raw_aclimdb_folder(tmp_path):
    folder = write_aclimdb(tmp_path / "download" / "aclImdb")
    for path in (folder, folder.parent):  # the folder itself or where it was unpacked
        splits = load_text_classification(DataArgs(path=str(path)), seed=0)
        assert splits.label_names == ["neg", "pos"]
        assert (len(splits.train), len(splits.eval)) == (6, 4)  # unsup/ and urls_pos.txt left out
        check_pairs(splits.train)
        check_pairs(splits.eval)
        assert "an unlabelled review" not in splits.train["text"]


# -- checks -------------------------------------------------------------------------------------

def test_missing_columns_name_the_setting(tmp_path):
    path = tmp_path / "reviews.csv"
    table = {"review": ["good", "bad"], "sentiment": [1, 0], "stars": ["five", "one"]}
    pd.DataFrame(table).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"'label' not found.*\['review', 'sentiment', 'stars'\].*"
                                         r"data\.label_column"):
        load_text_classification(DataArgs(path=str(path)), seed=0)
    # two string columns: which one is the text is not guessed
    with pytest.raises(ValueError, match=r"text column 'text' not found.*data\.text_column"):
        load_text_classification(DataArgs(path=str(path), label_column="sentiment"), seed=0)
    with pytest.raises(ValueError, match=r"'body' not found.*data\.text_column"):
        load_text_classification(DataArgs(path=str(path), text_column="body", label_column="sentiment"), 0)


@pytest.mark.parametrize(("labels", "message"), [
    ([0.5, 1.0, 0.0, 1.0], r"double.*not classes"),
    ([-1, 0, 1, 0], r"0\.\.N-1.*\[-1, 0, 1\]"),
    ([0, 2, 0, 2], r"0\.\.N-1.*\[0, 2\]"),
    ([0, None, 1, 0], r"1 missing label.*index 1"),
])
def test_labels_that_are_not_classes(tmp_path, labels, message):
    rows = [{"text": f"review {i}", "label": y} for i, y in enumerate(labels)]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        load_text_classification(DataArgs(path=str(path)), seed=0)


def test_empty_texts_are_counted_and_located(tmp_path):
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(["fine", "ok", "  ", "good", "", "bad"])]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(ValueError, match=r"2 empty text\(s\) in column 'text' of the train split "
                                         r"\(first at index 2\)"):
        load_text_classification(DataArgs(path=str(path)), seed=0)


def test_empty_split(tmp_path):
    root = write_hub_parquet(tmp_path / "imdb", n_test=0)
    with pytest.raises(ValueError, match=r"'test' split of .*imdb is empty.*data\.eval_split"):
        load_text_classification(DataArgs(path=str(root)), seed=0)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl' holds no rows"):
        load_text_classification(DataArgs(path=str(tmp_path / "empty.jsonl")), seed=0)
    # a partly unpacked aclImdb download: test/pos and test/neg exist but hold no reviews
    folder = write_aclimdb(tmp_path / "aclImdb")
    for review_file in (folder / "test").rglob("*.txt"):
        review_file.unlink()
    with pytest.raises(ValueError, match=r"'test' split of .*aclImdb is empty"):
        load_text_classification(DataArgs(path=str(folder)), seed=0)


def test_missing_path(tmp_path):
    for path in (tmp_path / "nope", tmp_path / "reviews.csv", "reviews.csv"):
        with pytest.raises(FileNotFoundError, match="reviews.csv|nope"):
            load_text_classification(DataArgs(path=str(path)), seed=0)


# -- tokenization and batches -------------------------------------------------------------------

@pytest.fixture
def splits() -> TextSplits:
    texts, labels = reviews(40, max_words=30)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    ds = datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return TextSplits(ds.select(range(32)), ds.select(range(32, 40)), ["neg", "pos"])


def test_tokenize_truncates_without_padding(splits, tokenizer):
    train, evaluation = tokenize_splits(splits, tokenizer, max_length=512)
    assert set(train.column_names) >= {"input_ids", "attention_mask", "labels"}
    assert "text" not in train.column_names and "label" not in train.column_names
    lengths = [len(ids) for ids in train["input_ids"]]
    assert len(set(lengths)) > 3 and tokenizer.pad_token_id not in sum(train["input_ids"], [])
    assert train["labels"] == splits.train["label"] and len(evaluation) == 8
    short, _ = tokenize_splits(splits, tokenizer, max_length=8)
    assert max(len(ids) for ids in short["input_ids"]) == 8
    assert all(ids[-1] == tokenizer.sep_token_id for ids in short["input_ids"])


def test_loader_pads_each_batch_to_its_longest(splits, tokenizer):
    train, _ = tokenize_splits(splits, tokenizer, max_length=512)
    loader = make_text_loader(train, tokenizer, batch_size=4, shuffle=False, seed=0)
    widths = []
    for b, batch in enumerate(loader):
        longest = max(len(train[i]["input_ids"]) for i in range(4 * b, 4 * b + 4))
        assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, longest)
        assert batch["labels"].dtype == torch.long
        assert batch["labels"].tolist() == train["labels"][4 * b:4 * b + 4]
        widths.append(longest)
    assert len(widths) == 8 and len(set(widths)) > 1


def padding(loader) -> int:
    return sum(int((batch["attention_mask"] == 0).sum()) for batch in loader)


def test_group_by_length_reduces_padding(splits, tokenizer):
    train, _ = tokenize_splits(splits, tokenizer, max_length=512)
    plain = make_text_loader(train, tokenizer, batch_size=4, shuffle=True, seed=0)
    grouped = make_text_loader(train, tokenizer, batch_size=4, shuffle=True, seed=0, group_by_length=True)
    assert padding(grouped) < padding(plain) / 2
    first = next(iter(grouped))["input_ids"].shape[1]
    assert first == max(len(ids) for ids in train["input_ids"])  # longest batch first: OOM shows at once


def test_sampler_order_depends_on_seed_and_epoch():
    lengths = [random.Random(i).randint(1, 500) for i in range(1000)]

    def order(seed: int, epoch: int, **kw) -> list[int]:
        sampler = TextSampler(1000, seed, shuffle=True, batch_size=4, **kw)
        sampler.set_epoch(epoch)
        return list(sampler)

    for kw in ({}, {"lengths": lengths}):
        assert order(0, 1, **kw) == order(0, 1, **kw)
        assert order(0, 1, **kw) != order(0, 2, **kw) and order(0, 1, **kw) != order(1, 1, **kw)
        assert sorted(order(0, 1, **kw)) == list(range(1000))
    grouped = order(0, 3, lengths=lengths)
    for start in range(0, 1000, 200):  # mega-batches of 50 batches, each sorted longest first
        chunk = [lengths[i] for i in grouped[start:start + 200]][1:]  # (first may be the swapped longest)
        assert chunk == sorted(chunk, reverse=True)
    assert list(TextSampler(5, 0, shuffle=False)) == [0, 1, 2, 3, 4]


# -- real data ----------------------------------------------------------------------------------

@pytest.mark.skipif(not IMDB.is_dir(), reason=f"no local copy of IMDB at {IMDB}")
def test_real_imdb_subsets(tokenizer):
    args = DataArgs(path=str(IMDB), max_train_samples=100, max_eval_samples=50)
    splits = load_text_classification(args, seed=0)
    assert splits.label_names == ["neg", "pos"]
    assert (len(splits.train), len(splits.eval)) == (100, 50)
    assert 20 < sum(splits.train["label"]) < 80  # a seeded random subset, not the sorted head
    train, _ = tokenize_splits(splits, tokenizer, max_length=64)
    batch = next(iter(make_text_loader(train, tokenizer, batch_size=8, shuffle=True, seed=0)))
    assert batch["input_ids"].shape[1] <= 64 and batch["labels"].shape == (8,)
