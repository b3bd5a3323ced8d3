"""Figures of training runs: loss and accuracy curves per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.viz._common import agg_figure


def draw_training_curves(fig: Any, history: list[dict[str, float]], title: str | None = None) -> None:
    """Loss and accuracy (classification) or MAPE (regression) per epoch, training and validation, on
    ``fig`` (cleared first); the napari Train widget redraws its live plot with this after every epoch."""
    fig.clear()
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ep = [h["epoch"] for h in history]
    key = "mape" if history and "train_mape" in history[0] else "accuracy"
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train")
    ax2.plot(ep, [h.get(f"train_{key}", np.nan) for h in history], "o-", ms=3, label="train")
    if history and "val_loss" in history[0]:
        ax1.plot(ep, [h.get("val_loss", np.nan) for h in history], "s-", ms=3, label="validation")
        ax2.plot(ep, [h.get(f"val_{key}", np.nan) for h in history], "s-", ms=3, label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    if key == "mape":
        ax2.set(xlabel="epoch", ylabel="MAPE (%)", title="Mean absolute percentage error", yscale="log")
    else:
        ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs, never 1.25 or 1.5
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()


def training_curves_figure(history: list[dict[str, float]], path: str | Path, title: str | None = None) -> Path:
    """PNG of the training curves (see :func:`draw_training_curves`)."""
    fig = agg_figure(9, 3.6)
    draw_training_curves(fig, history, title)
    fig.savefig(path)
    return Path(path)
