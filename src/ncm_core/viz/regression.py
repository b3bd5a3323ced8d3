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


def learning_curve_figure(rows: list[dict], path: str | Path, title: str = "Learning curve") -> Path:
    """MAPE per held-out mosaic against the number of training sections, one line per model (mean +- std
    over folds and repeats), as PNG. ``rows``: ``{model, sections, mape, mape_std}``."""
    fig = agg_figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for model in dict.fromkeys(r["model"] for r in rows):
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["sections"])
        n = np.array([r["sections"] for r in rs], float)
        m = np.array([r["mape"] for r in rs], float)
        s = np.array([r["mape_std"] for r in rs], float)
        ax.plot(n, m, marker="o", label=model)
        ax.fill_between(n, m - s, m + s, alpha=0.15)
    ax.set_xlabel("training sections")
    ax.set_ylabel("MAPE per held-out mosaic (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
