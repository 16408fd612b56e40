"""Pictures a learner wants after a run: curves, a confusion matrix, a prediction grid."""

from __future__ import annotations

import contextlib
import functools
import math
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

# Chinese system fonts (macOS, Windows, Linux), preferred for their native look where installed.
SYSTEM_CJK_FONTS = ("PingFang SC", "Hiragino Sans GB", "Microsoft YaHei", "Noto Sans CJK SC")
BUNDLED_CJK_FONT = "Noto Sans SC"  # from the pylopdf-fonts-zh-cn dependency, so every machine has one


@functools.cache
def _cjk_fallbacks() -> tuple[str, ...]:
    """Installed CJK families; names matplotlib does not know would each log a 'not found' warning."""
    import pylopdf_fonts_zh_cn  # 8 MB font file, found only when a plot needs it

    font_manager.fontManager.addfont(str(pylopdf_fonts_zh_cn.sans_path()))
    known = {font.name for font in font_manager.fontManager.ttflist}
    return (*(name for name in SYSTEM_CJK_FONTS if name in known), BUNDLED_CJK_FONT)


@contextlib.contextmanager
def _fonts_for(texts: Iterable[str]) -> Iterator[None]:
    """Draw ``texts`` with glyph fallback to a CJK font: DejaVu Sans has no Chinese (tofu boxes).

    The user's fonts stay first, so Latin text looks as before; English-only labels change nothing.
    """
    if all(text.isascii() for text in texts):
        yield
        return
    with plt.rc_context({"font.family": [*plt.rcParams["font.family"], *_cjk_fallbacks()]}):
        yield


def plot_curves(history: Sequence[dict[str, Any]], path: Path, metric: str = "accuracy",
                best_epoch: float | None = None) -> None:
    """Loss and the task's main ``metric`` (accuracy, F1 with EM, or perplexity), train against
    eval: the training loss of every optimizer step as a line, per-epoch values as dots, whole
    epochs on the axis, and the epoch of the saved (best) model marked."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name in zip(axes, ("loss", metric)):
        if name == "loss":
            _step_losses(ax, history)
        series = [f"{split}_{name}" for split in ("train", "eval")]
        if name == "f1":  # QA: exact match beside F1
            series.append("eval_exact_match")
        for key in series:
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                label = key.replace("_" + name, "").replace("_", " ")
                label += " (epoch mean)" if key == "train_loss" else ""
                ax.plot(epochs, values, marker="o", label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1,
                       label=f"best model (epoch {best_epoch:g})")
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _step_losses(ax, history: Sequence[dict[str, Any]]) -> None:
    """The loss of each optimizer step, placed within its epoch (epoch e spans e-1 .. e)."""
    xs, ys = [], []
    for h in history:
        losses = h.get("train_step_losses") or []
        xs += [h["epoch"] - 1 + (i + 1) / len(losses) for i in range(len(losses))]
        ys += losses
    if ys:
        ax.plot(xs, ys, color="tab:blue", alpha=0.35, linewidth=1, label="train (each step)")


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                 suggestion: float, path: Path) -> None:
    """The range test: loss against lr (log axis), raw and smoothed, the suggested lr marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses, color="lightgrey", linewidth=1, label="loss")
    ax.plot(lrs, smoothed, label="smoothed loss")
    ax.axvline(suggestion, color="tab:red", linestyle="--", linewidth=1,
               label=f"suggested lr {suggestion:.1e} (steepest descent)")
    # the divergence at the end would squash the curve: show up to a little above the start
    finite = [v for v in (*losses, *smoothed) if math.isfinite(v)]
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="lr range test",
           ylim=(min(finite) * 0.95, max(smoothed[0], min(finite)) * 1.5))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(labels: np.ndarray, preds: np.ndarray, names: Sequence[str],
                          path: Path) -> None:
    with _fonts_for(names):
        _draw_confusion_matrix(labels, preds, names, path)


def _draw_confusion_matrix(labels: np.ndarray, preds: np.ndarray, names: Sequence[str],
                           path: Path) -> None:
    n = len(names)
    matrix = np.zeros((n, n), dtype=int)
    np.add.at(matrix, (labels, preds), 1)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true",
           title="confusion matrix (eval)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    if n <= 30:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center",
                    color="white" if v > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_prediction_grid(images: Sequence[Any], labels: Sequence[int], preds: Sequence[int],
                         names: Sequence[str], path: Path, probs: Sequence[float] | None = None,
                         caption: str | None = None) -> None:
    """Images titled 'pred 93% (true)' (the predicted class's probability when ``probs`` is given):
    green when right, red when wrong, under a caption that says so (or ``caption``)."""
    with _fonts_for(names):
        _draw_prediction_grid(images, labels, preds, names, path, probs, caption)


def _square(ax, height: int, width: int) -> None:
    """Show an image centred in a square box: tiles of one size, so that a tall image does not
    reach up into the title of the tile above it."""
    side = max(height, width)
    ax.set_xlim(-0.5 - (side - width) / 2, width - 0.5 + (side - width) / 2)
    ax.set_ylim(height - 0.5 + (side - height) / 2, -0.5 - (side - height) / 2)


def prediction_title(pred: str, true: str, prob: float | None) -> str:
    return f"{pred}" + ("" if prob is None else f" {prob:.0%}") + f"\n({true})"


def _draw_prediction_grid(images: Sequence[Any], labels: Sequence[int], preds: Sequence[int],
                          names: Sequence[str], path: Path, probs: Sequence[float] | None,
                          caption: str | None) -> None:
    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    wrong = sum(p != t for p, t in zip(preds, labels))
    caption = textwrap.fill(caption or (f"Best model on {n} evaluation images: prediction"
                                        + (" and its probability" if probs is not None else "")
                                        + f" (true class); green right, red wrong ({wrong} wrong)"),
                            width=22 * cols)  # a narrow grid gets it on several lines
    top = 0.2 * (caption.count("\n") + 1)  # inches for the caption
    height = 2.6 * rows + top
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img, true, pred) in enumerate(zip(axes.flat, images, labels, preds)):
        ax.imshow(img)
        _square(ax, *np.asarray(img).shape[:2])
        ax.set_title(prediction_title(names[pred], names[true], None if probs is None else probs[i]),
                     fontsize=8, color="green" if pred == true else "red")
    fig.suptitle(caption, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - top / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)
