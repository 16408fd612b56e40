"""Shared fixtures: tiny generated image folders and a fast recipe for them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Keep tests hermetic: never touch the network or the user's Hugging Face cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """train/ and val/ with two separable classes, 12 + 6 images per class."""
    return write_image_folder(tmp_path / "images", {"train": 12, "val": 6})


@pytest.fixture
def tiny_overrides(image_folder: Path) -> list[str]:
    """Overrides that make the hymenoptera recipe a seconds-long CPU run on ``image_folder``."""
    return [f"data.path={image_folder}", "model.pretrained=false", "model.name=resnet18",
            "data.image_size=32", "data.num_workers=0", "train.batch_size=4", "train.epochs=2",
            "train.mixed_precision=no", "eval.num_preview_images=4"]


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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT with a WordPiece vocabulary, saved with save_pretrained."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = _wordpiece_tokenizer([t for t, _ in toy_reviews(200)] + POSITIVE + NEGATIVE)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


REPETITIVE = "the quick brown fox jumps over the lazy dog . " * 4


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained on test text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-gpt2")
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
