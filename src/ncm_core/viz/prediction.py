"""Figures of predictions: mosaic overviews with class maps, probability bars, confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.inference.predict import Prediction, open_prediction
from ncm_core.io.mosaic import Mosaic, open_mosaic
from ncm_core.viz._common import agg_figure


def overview_image(mosaic: Mosaic, max_side: int = 1600) -> tuple[np.ndarray, int]:
    """A downsampled copy of the mosaic for display and its downsampling factor.

    Uses the coarsest pyramid level that is still at least ``max_side`` pixels,
    else strided reading, chunk by chunk.
    """
    level, f = mosaic.data, 1
    for k, lv in enumerate(mosaic.levels):
        if max(lv.shape[:2]) >= max_side or k == 0:
            level, f = lv, 2**k
    step = max(1, math.ceil(max(level.shape[:2]) / max_side))
    return np.asarray(level[::step, ::step].compute()), f * step


def grid_extent(pred: Prediction) -> tuple[float, float, float, float]:
    """matplotlib extent (pixel coordinates of the mosaic) of the one-value-per-cell arrays."""
    g = pred.grid
    rows, cols = g.shape
    top = g.offset[0] + (g.tile - 1) / 2 - g.stride / 2
    left = g.offset[1] + (g.tile - 1) / 2 - g.stride / 2
    return left, left + cols * g.stride, top + rows * g.stride, top


def prediction_overview(
    mosaic: Any,
    prediction: str | Path | Prediction,
    path: str | Path,
    *,
    truth_tiles: np.ndarray | None = None,
    alpha: float = 0.45,
    title: str | None = None,
) -> Path:
    """PNG of the mosaic with its predicted class map, a legend, and (with
    ``truth_tiles``) a panel marking wrongly classified tiles."""
    from matplotlib.patches import Patch

    mosaic = open_mosaic(mosaic)
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    img, f = overview_image(mosaic)
    H, W = mosaic.shape
    classes = pred.classes
    colors = np.array(pred.colors)
    rgba = np.zeros(classes.shape + (4,))
    rgba[classes >= 0] = colors[classes[classes >= 0]]
    rgba[..., 3] = np.where(classes >= 0, alpha, 0)
    panels = 2 if truth_tiles is not None else 1
    aspect = H / W
    fig = agg_figure(7.5 * panels + 2.3, 7.5 * aspect + 1.0)
    ext_img = (-0.5, W - 0.5, H - 0.5, -0.5)
    cmap = "gray" if img.ndim == 2 else None
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(img, cmap=cmap, extent=ext_img, interpolation="antialiased")
    ax.imshow(rgba, extent=grid_extent(pred), interpolation="nearest")
    ax.set_title(title or "Predicted class per tile")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    if truth_tiles is not None:
        ax2 = fig.add_subplot(1, panels, 2)
        ax2.imshow(img, cmap=cmap, extent=ext_img, interpolation="antialiased")
        valid = (classes >= 0) & (truth_tiles >= 0)
        err = np.zeros(classes.shape + (4,))
        err[valid & (classes == truth_tiles)] = (0.1, 0.8, 0.2, 0.35)
        err[valid & (classes != truth_tiles)] = (0.95, 0.05, 0.05, 0.7)
        ax2.imshow(err, extent=grid_extent(pred), interpolation="nearest")
        acc = (classes == truth_tiles)[valid].mean() if valid.any() else float("nan")
        ax2.set_title(f"Tiles against truth: {acc:.1%} correct (red = wrong)")
        ax2.set_xlim(-0.5, W - 0.5)
        ax2.set_ylim(H - 0.5, -0.5)
    handles = [Patch(color=colors[k][:3], label=n) for k, n in enumerate(pred.class_names)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.03, right=1 - 2.2 / fig.get_figwidth(), top=0.93, bottom=0.05, wspace=0.1)
    fig.savefig(path)
    return Path(path)


def draw_confusion_matrix(fig: Any, cm: Any, class_names: list[str], title: str = "Confusion matrix") -> None:
    """A confusion matrix on ``fig`` (cleared first): rows true class, columns predicted, colours
    normalised per row, counts printed."""
    cm = np.asarray(cm)
    n = len(class_names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig.clear()
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of true class")
    fig.tight_layout()


def confusion_matrix_figure(cm: Any, class_names: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """PNG of a confusion matrix (see :func:`draw_confusion_matrix`)."""
    n = len(class_names)
    fig = agg_figure(2.5 + 0.55 * n, 2.0 + 0.5 * n)
    draw_confusion_matrix(fig, cm, class_names, title)
    fig.savefig(path)
    return Path(path)


def probability_bars(
    ax: Any, probs: Any, class_names: list[str], colors: list[Any] | None = None, title: str | None = None
) -> None:
    """Horizontal bars of one tile's class probabilities on ``ax`` (the napari probability dock)."""
    ax.clear()
    y = np.arange(len(class_names))
    ax.barh(y, probs, color=None if colors is None else [c[:3] for c in colors])
    ax.set_yticks(y, class_names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    if title:
        ax.set_title(title, fontsize=9)
