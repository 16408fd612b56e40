"""Shared fixtures: tiny generated image folders and a fast recipe for them."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep tests hermetic: never touch the network or the user's Hugging Face cache. Every run
# cached its generated data sets in ~/.cache/huggingface/datasets (thousands of entries after a
# few days): the session gets a cache of its own, gone at exit. Set before any test imports
# datasets or huggingface_hub, which read these at import; subprocesses inherit them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
for _stale in Path(tempfile.gettempdir()).glob("hfkit-tests-hf-*"):  # left by a killed session
    with contextlib.suppress(OSError):  # a day old: not another session running beside this one
        if time.time() - _stale.stat().st_mtime > 24 * 3600:
            shutil.rmtree(_stale, ignore_errors=True)
_SESSION_HF_HOME = tempfile.mkdtemp(prefix="hfkit-tests-hf-")
atexit.register(shutil.rmtree, _SESSION_HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _SESSION_HF_HOME
for _var in ("HF_DATASETS_CACHE", "HF_MODULES_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(_var, None)


def make_image(color: tuple[int, int, int], size=(40, 32), seed=0) -> PIL.Image.Image:
    """A noisy image around ``color``: two colours make a task a tiny CNN learns at once."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(color) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
    return PIL.Image.fromarray(pixels.astype(np.uint8))


CLASSES = {"bees": (230, 200, 40), "ants": (60, 40, 200)}


def write_image_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    for split, n in per_class.items():
        for c, (name, color) in enumerate(CLASSES.items()):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                make_image(color, seed=seed + 1000 * c + i).save(folder / f"{name}_{i:03d}.jpg")
    return root


COLORS = [(230, 40, 40), (40, 230, 40), (40, 40, 230)]


def write_cifar_like(root: Path, per_class: int = 24, test_per_class: int = 8, size: int = 32) -> Path:
    """A CIFAR-10-shaped local copy in the Hub parquet layout (``img`` bytes + ClassLabel)."""
    import datasets

    names = datasets.ClassLabel(names=["red", "green", "blue"])
    features = datasets.Features(img=datasets.Image(), label=names)
    (root / "plain_text").mkdir(parents=True)
    for split, n, seed in (("train", per_class, 0), ("test", test_per_class, 99)):
        rows = [(make_image(c, size=(size, size), seed=seed + 100 * k + i), k)
                for k, c in enumerate(COLORS) for i in range(n)]
        ds = datasets.Dataset.from_dict({"img": [r[0] for r in rows], "label": [r[1] for r in rows]},
                                        features=features)
        ds.to_parquet(str(root / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/ and val/ with two separable classes, 12 + 6 images per class."""
    return write_image_folder(tmp_path / "images", {"train": 12, "val": 6})


def tiny_image_overrides(data: Path) -> list[str]:
    """Overrides that make the hymenoptera recipe a seconds-long CPU run on the image folder ``data``."""
    return [f"data.path={data}", "model.pretrained=false", "model.name=resnet18",
            "data.image_size=32", "data.num_workers=0", "train.batch_size=4", "train.epochs=2",
            "train.mixed_precision=no", "eval.num_preview_images=4"]


@pytest.fixture
def tiny_overrides(image_folder: Path) -> list[str]:
    return tiny_image_overrides(image_folder)


def write_image_run(root: Path) -> Path:
    """A timm result folder (two classes, ants and bees) trained for one epoch in seconds: ``root/run``."""
    from hfkit.finetune import finetune
    from hfkit.recipes import load_recipe

    data = write_image_folder(root / "images", {"train": 8, "val": 4})
    overrides = [*tiny_image_overrides(data), "train.epochs=1", "eval.num_preview_images=0"]
    finetune(load_recipe("hymenoptera", overrides, output_dir=str(root / "run")))
    return root / "run"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator (precision may differ between tests)."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


# ---------------------------------------------------------------------------------------------
# Tiny transformers models, built and saved the way users' local model folders look

POSITIVE = ["great", "wonderful", "excellent", "loved", "brilliant", "superb"]
NEGATIVE = ["terrible", "awful", "boring", "hated", "dreadful", "poor"]
FILLER = ["the", "movie", "film", "plot", "actors", "was", "and", "a", "story", "really", "very"]


def toy_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Reviews whose sentiment hangs on one word: a task a tiny BERT learns in a few epochs."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, size=int(rng.integers(3, 20))))
        words.insert(int(rng.integers(0, len(words))), str(rng.choice(POSITIVE if label else NEGATIVE)))
        rows.append((" ".join(words), label))
    return rows


def write_review_parquet(root: Path, train: int = 160, test: int = 60) -> Path:
    """Toy reviews as a local copy in the Hub's parquet layout, like ../shared/data/imdb."""
    import datasets

    (root / "plain_text").mkdir(parents=True)
    features = datasets.Features(text=datasets.Value("string"),
                                 label=datasets.ClassLabel(names=["neg", "pos"]))
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        rows = toy_reviews(n, seed)
        ds = datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]},
                                        features=features)
        ds.to_parquet(str(root / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return root


def _wordpiece_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=128)


def write_tiny_bert(folder: Path) -> Path:
    """A random 2-layer BERT classifier with a WordPiece vocabulary, saved with save_pretrained."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _wordpiece_tokenizer([t for t, _ in toy_reviews(200)] + POSITIVE + NEGATIVE)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


REPETITIVE = "the quick brown fox jumps over the lazy dog . " * 4


def write_tiny_gpt2(folder: Path) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained on test text, in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([REPETITIVE] * 10 + ["once upon a time there was a story"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>",
                                        model_max_length=64)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return write_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


# ---------------------------------------------------------------------------------------------
# A tiny Chinese extractive QA model in the layout users download by hand (uer/roberta-base-
# chinese-extractive-qa: config.json, pytorch_model.bin, vocab.txt, tokenizer_config.json,
# special_tokens_map.json), and a synthetic Chinese QA set it can learn.

FILLER_ZH = ("的一在不了有和人这中大为上个国我以要他时来用们生到作地"
             "于出就分对成会可主发年动同也能下过子说产种面而方后多定行")
ANSWER_ZH = "艾伦图灵李白杜甫苏轼孔孟老庄王维韩愈柳元张衡祖冲华佗孙思邈"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
QA_VOCAB = SPECIAL_TOKENS + sorted(set(FILLER_ZH + ANSWER_ZH + "谁是之父？答案。，·人工智能计算机科学被誉奠基"
                                       + "abcdefghijklmnopqrstuvwxyz0123456789"))


def toy_chinese_qa(n: int, seed: int = 0, filler: tuple[int, int] = (5, 30)) -> dict:
    """SQuAD-format data: the answer always follows 答案是 and ends before 。 among random filler."""
    rng = np.random.default_rng(seed)
    paragraphs = []
    for i in range(n):
        def noise():
            return "".join(rng.choice(list(FILLER_ZH), size=int(rng.integers(*filler))))
        ans = "".join(rng.choice(list(ANSWER_ZH), size=int(rng.integers(2, 5))))
        before = noise() + "答案是"
        context = before + ans + "。" + noise()
        question = "谁是" + "".join(rng.choice(list(FILLER_ZH), size=2)) + "之父？"
        paragraphs.append({"id": f"p{i}", "context": context, "qas": [
            {"id": f"q{i}", "question": question,
             "answers": [{"text": ans, "answer_start": len(before)}]}]})
    return {"version": "toy", "data": [{"title": "toy", "paragraphs": paragraphs}]}


def write_chinese_qa_model(folder: Path, weights: str = "bin", seed: int = 0) -> Path:
    """A random 2-layer BertForQuestionAnswering with a character vocabulary (vocab.txt only)."""
    import json

    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(QA_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128,
                        architectures=["BertForQuestionAnswering"])
    model = BertForQuestionAnswering(config)
    (folder / "vocab.txt").write_text("\n".join(QA_VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
         "mask_token": "[MASK]"}))
    if weights == "bin":  # the seed layout: a pickled state dict, as older checkpoints ship
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)  # config.json + model.safetensors
    return folder


@pytest.fixture(scope="session")
def chinese_qa_bin(tmp_path_factory) -> Path:
    return write_chinese_qa_model(tmp_path_factory.mktemp("zh-qa-bin"), "bin")


@pytest.fixture(scope="session")
def chinese_qa_safetensors(tmp_path_factory) -> Path:
    return write_chinese_qa_model(tmp_path_factory.mktemp("zh-qa-st"), "safetensors")


def write_toy_cmrc(folder: Path, train: int = 400, dev: int = 60) -> Path:
    """cmrc-style ``toy_train.json`` and ``toy_dev.json`` (SQuAD format) in ``folder``."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", train, 0), ("dev", dev, 1)):
        (folder / f"toy_{split}.json").write_text(json.dumps(toy_chinese_qa(n, seed), ensure_ascii=False),
                                                  encoding="utf-8")
    return folder


@pytest.fixture
def chinese_qa_files(tmp_path: Path) -> Path:
    return write_toy_cmrc(tmp_path / "toy-cmrc")
