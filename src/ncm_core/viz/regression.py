"""Figures of a regressor's predictions along one cross-section."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncm_core.viz._common import agg_figure
from ncm_core.viz.rate_capability import draw_rate_capability


def section_prediction_figure(
    summary: dict[str, dict[str, float]],
    names: list[str],
    c_rates: list[float] | None,
    label: str,
    path: str | Path,
    crops: int,
) -> Path:
    """Predicted rate capability of one section: mean +- std over its ``crops`` crops per target, as PNG."""
    fig = agg_figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    draw_rate_capability(
        ax,
        {},
        {label: (np.array([summary[n]["mean"] for n in names]), np.array([summary[n]["std"] for n in names]))},
        names,
        c_rates,
        title=f"Predicted rate capability ({crops} crops)",
    )
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
