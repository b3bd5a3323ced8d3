"""Figures of regression results: predicted vs measured scatter plots, rate-capability curves."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.datasets import natural_key
from ncm_core.viz._common import agg_figure


def scatter_figure(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    names: list[str],
    path: str | Path,
    *,
    folds: list[int] | None = None,
    units: str = "",
) -> Path:
    """Predicted against measured values, one panel per target, coloured by fold, with the 1:1 line."""
    n = len(names)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = agg_figure(2.6 * cols + 0.4, 2.6 * rows + 0.3)
    folds_arr = np.asarray(folds) if folds is not None else np.zeros(len(y_true), int)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        t, p = y_true[:, k], y_pred[:, k]
        for f in sorted(set(folds_arr.tolist())):
            sel = folds_arr == f
            ax.scatter(t[sel], p[sel], s=6, alpha=0.6, label=f"fold {f}" if folds is not None else None)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo or 1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set(
            xlim=(lo - pad, hi + pad),
            ylim=(lo - pad, hi + pad),
            title=name,
            xlabel=f"measured{(' ' + units) if units else ''}",
            ylabel="predicted" if k % cols == 0 else None,
        )
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        mape = 100 * np.mean(np.abs(p - t) / np.abs(t))
        ax.text(0.04, 0.96, f"MAPE {mape:.2f} %", transform=ax.transAxes, va="top", fontsize=7)
    if folds is not None and len(set(folds_arr.tolist())) > 1:
        fig.axes[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_rate_capability(
    ax: Any,
    measured: dict[str, np.ndarray],
    predicted: dict[str, tuple[np.ndarray, np.ndarray]],
    names: list[str],
    c_rates: list[float] | None,
    *,
    units: str = "",
    title: str | None = None,
    legend_title: str | None = None,
) -> None:
    """Capacity against C-rate (log axis): measured (lines) and predicted mean +- std (error bars) per series.

    ``measured[label]`` is a value per target; ``predicted[label]`` is (mean, std) per target. Without C-rates
    (target names that do not parse), the targets are plotted in order.
    """
    import matplotlib as mpl

    ax.clear()
    x = np.asarray(c_rates, float) if c_rates else np.arange(len(names), dtype=float)
    labels = list(dict.fromkeys([*measured, *predicted]))
    cmap = mpl.colormaps["viridis"]
    for i, label in enumerate(labels):
        color = cmap(i / max(len(labels) - 1, 1))
        if label in measured:
            ax.plot(x, measured[label], "-", color=color, lw=1.2, label=f"{label}")
        if label in predicted:
            m, s = predicted[label]
            ax.errorbar(
                x * (1.03 if label in measured else 1),
                m,
                yerr=s,
                fmt="o",
                ms=3.5,
                color=color,
                capsize=2,
                lw=0.9,
                mfc="white" if label in measured else color,
            )
    if c_rates:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{c:g}C" for c in x])
        ax.minorticks_off()
        ax.set_xlabel("C-rate")
    else:
        ax.set_xticks(x, names, rotation=30, fontsize=7)
    ax.set_ylabel(f"capacity{(' (' + units + ')') if units else ''}")
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    extra = [
        Line2D([], [], color="k", lw=1.2, label="measured"),
        Line2D([], [], color="k", marker="o", mfc="white", ls="", label="predicted (mean +- std)"),
    ]
    if len(labels) <= 12:
        ax.legend(
            handles=extra + handles, fontsize=7, title=legend_title, title_fontsize=7, ncol=2 if len(labels) > 5 else 1
        )
    else:
        ax.legend(handles=extra, fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)


def rate_capability_series(
    rows: list[dict[str, Any]], names: list[str], by: str = "source"
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Group a table of measured (``<target>``) and predicted (``<target>_pred``) values per crop by the
    column ``by``: measured mean per target, and predicted (mean, std) per target, in natural order."""
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(str(r.get(by, r.get("source"))), []).append(r)

    measured, predicted = {}, {}
    for label in sorted(series, key=natural_key):
        rs = series[label]
        measured[label] = np.array([np.mean([r[n] for r in rs]) for n in names])
        p = np.array([[r[f"{n}_pred"] for n in names] for r in rs])
        predicted[label] = (p.mean(0), p.std(0))
    return measured, predicted


def rate_capability_figure(
    rows: list[dict[str, Any]],
    names: list[str],
    c_rates: list[float] | None,
    path: str | Path,
    *,
    by: str = "source",
    units: str = "",
    title: str | None = None,
) -> Path:
    """The rate-capability plot of a cross-validation (or any table of measured and predicted values per crop):
    one series per value of ``by`` (e.g. porosity), predicted mean +- std over its crops (and folds)."""
    measured, predicted = rate_capability_series(rows, names, by)
    fig = agg_figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    draw_rate_capability(
        ax,
        measured,
        predicted,
        names,
        c_rates,
        units=units,
        title=title or "Rate capability: measured and predicted",
        legend_title=by,
    )
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_section_prediction(
    ax: Any, label: str, summary: dict[str, dict[str, float]], names: list[str], n_crops: int
) -> None:
    """A section's predicted rate capability (mean +- std over its crops) on ``ax``, C-rates from the
    target names."""
    from ncm_core.data.sections import summary_arrays
    from ncm_core.data.targets import parse_c_rates

    draw_rate_capability(
        ax,
        {},
        {label: summary_arrays(summary, names)},
        names,
        parse_c_rates(names),
        title=f"Predicted ({n_crops} crops)",
    )
