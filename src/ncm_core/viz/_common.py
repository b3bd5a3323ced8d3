"""Shared figure helpers: an off-screen matplotlib figure, and a grey image shown on an axis."""

from __future__ import annotations

from typing import Any

import numpy as np


def agg_figure(w: float, h: float) -> Any:
    """A matplotlib Figure of ``w`` x ``h`` inches drawn by the Agg backend (no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def show_gray(ax: Any, img: np.ndarray, **kw: Any) -> None:
    """``img`` on ``ax``: grey for one channel, as is for RGB(A)."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, **kw)
