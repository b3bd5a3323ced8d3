"""Figures of a tuning study: Optuna's plots as PNG, and the trials-so-far plot of the napari widget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def draw_trials(fig: Any, values: list[float | None], states: list[str]) -> None:
    """Finished trials in order: complete trials' validation accuracy, the best so far, pruned ones at 0."""
    fig.clear()
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(1, len(values) + 1)
    done = [(k, v) for k, v in zip(x, values) if v is not None]
    if done:
        ax.plot(*zip(*done), "o", ms=4, label="complete trial")
        best = np.maximum.accumulate([v if v is not None else -np.inf for v in values])
        best = np.where(np.isfinite(best), best, np.nan)
        # one step past the last trial, so that the line shows from the first trial on (a single point
        # of a step line draws nothing)
        ax.step([*x, x[-1] + 0.5], [*best, best[-1]], where="post", label="best so far")
    pruned = [k for k, s in zip(x, states) if s == "PRUNED"]
    if pruned:
        ax.plot(pruned, [0.0] * len(pruned), "x", color="grey", label="pruned")
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="finished trials", ylabel="validation accuracy", ylim=(-0.02, 1.02))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ax.get_legend_handles_labels()[0]:  # nothing finished yet: no empty legend
        ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()


def plot_study(study: Any, out: Path) -> list[Path]:
    """Optimisation history, intermediate values and parameter importances as PNG (those that apply)."""
    import sys
    import warnings

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # no GUI backend for these files (napari keeps its own)
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    figs = []
    for name, fn in [
        ("optimization_history", vm.plot_optimization_history),
        ("intermediate_values", vm.plot_intermediate_values),
        ("param_importances", vm.plot_param_importances),
    ]:
        # optuna's plots call plt.style.use("ggplot"), which would restyle every later figure of the process
        # (the napari docks' plots too): rc_context restores the settings afterwards
        with matplotlib.rc_context():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # optuna marks these plots experimental
                    ax = fn(study)
            except Exception:  # e.g. importances need two finished trials with differing parameters
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            path = out / f"{name}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
        figs.append(path)
    return figs
