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
