"""Plots: class names in any script must show as glyphs, not as empty boxes."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import PIL.Image
import pytest

from hfkit.plots import plot_confusion_matrix, plot_curves, plot_prediction_grid

LABELS = np.array([0, 0, 1, 1])
PREDS = np.array([0, 1, 1, 1])


def draw(plot, *args) -> tuple[np.ndarray, list[str]]:
    """Run one plot function; return its picture and the missing-glyph warnings it raised."""
    path = Path(args[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plot(*args)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    return np.asarray(PIL.Image.open(path).convert("L")), missing


def confusion(names: list[str], path: Path) -> tuple[np.ndarray, list[str]]:
    return draw(plot_confusion_matrix, LABELS, PREDS, names, path)


def test_chinese_names_have_glyphs(tmp_path):
    _, missing = confusion(["蚂蚁", "蜜蜂"], tmp_path / "cm.png")
    assert missing == []


def test_chinese_names_are_not_boxes(tmp_path):
    # A font without the glyphs draws one and the same box for every character, so two label sets
    # of equal length give identical pictures; real glyphs make them differ.
    ants, _ = confusion(["蚂蚁", "蜜蜂"], tmp_path / "a.png")
    pets, _ = confusion(["猫狗", "鸟鱼"], tmp_path / "b.png")
    assert ants.shape == pets.shape
    assert (ants != pets).sum() > 100


def test_prediction_grid_titles_have_glyphs(tmp_path):
    images = [np.zeros((8, 8, 3), dtype=np.uint8)] * 2
    _, missing = draw(plot_prediction_grid, images, [0, 1], [0, 0], ["猫", "狗"], tmp_path / "grid.png")
    assert missing == []


def test_fonts_do_not_leak_into_other_plots(tmp_path):
    """The CJK fallback is set around our plots only, not in matplotlib's global settings."""
    before = list(plt.rcParams["font.family"])
    confusion(["蚂蚁", "蜜蜂"], tmp_path / "cm.png")
    assert plt.rcParams["font.family"] == before


def test_curves_still_draw(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "eval_loss": 1 / e, "eval_accuracy": e / 3} for e in (1, 2)]
    plot_curves(history, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_the_prediction_grid_shows_what_hfkit_predict_answers_and_how_sure(tmp_path, monkeypatch):
    """predictions.png is drawn from the saved best model's answers: each title's class and
    probability are what ImageClassifier (hfkit predict) gives for that image."""
    from conftest import tiny_image_overrides, write_image_folder

    from hfkit import plots
    from hfkit.finetune import finetune
    from hfkit.inference import ImageClassifier
    from hfkit.recipes import load_recipe

    drawn = {}
    draw_grid = plots.plot_prediction_grid

    def spy(images, labels, preds, names, path, probs=None):
        drawn.update(images=images, preds=preds, names=names, probs=probs)
        draw_grid(images, labels, preds, names, path, probs)
    monkeypatch.setattr(plots, "plot_prediction_grid", spy)
    data = write_image_folder(tmp_path / "images", {"train": 8, "val": 4})
    finetune(load_recipe("hymenoptera", [*tiny_image_overrides(data), "train.epochs=1"],
                         output_dir=str(tmp_path / "run")))
    assert (tmp_path / "run" / "predictions.png").is_file() and len(drawn["images"]) == 4
    expected = [top[0] for top in ImageClassifier(str(tmp_path / "run")).predict(drawn["images"], top_k=1)]
    assert [drawn["names"][p] for p in drawn["preds"]] == [name for name, _ in expected]
    assert drawn["probs"] == pytest.approx([p for _, p in expected], abs=1e-6)
    assert plots.prediction_title("ants", "bees", 0.934) == "ants 93%\n(bees)"


def test_grid_tiles_are_square_so_a_tall_image_keeps_out_of_the_title_above():
    import matplotlib.pyplot as plt

    from hfkit.plots import _square

    fig, (tall, wide) = plt.subplots(1, 2)
    for ax, (h, w) in ((tall, (300, 100)), (wide, (50, 200))):
        _square(ax, h, w)
        (x0, x1), (y1, y0) = ax.get_xlim(), ax.get_ylim()
        assert x1 - x0 == y1 - y0 == max(h, w)  # one square box, whatever the image's shape
        assert (x0 + x1) / 2 == (w - 1) / 2 and (y0 + y1) / 2 == (h - 1) / 2  # the image at its centre
    plt.close(fig)
