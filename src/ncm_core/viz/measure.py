"""Figures of a measurement (``ncm measure``): the particle size distribution with its d50, the phase
profile through the thickness, and the tortuosity of the pore phase."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.viz._common import agg_figure


def draw_size_distribution(ax: Any, diameters: np.ndarray, quantiles: Mapping[str, float], unit: str) -> None:
    """Histogram of equivalent diameters with d10 / d50 / d90 marked."""
    d = np.asarray(diameters, np.float64)
    if d.size:
        ax.hist(d, bins=min(40, max(5, d.size // 3)), color="#4C72B0", alpha=0.8)
    for k, style in (("d10", ":"), ("d50", "-"), ("d90", "--")):
        v = quantiles.get(k)
        if v is not None and math.isfinite(v):
            ax.axvline(v, color="#C44E52", ls=style, label=f"{k} = {v:.3g} {unit}")
    ax.set_xlabel(f"equivalent diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title(f"Particle size distribution ({d.size} particles)")
    if d.size:
        ax.legend(fontsize=8)


def size_distribution_figure(
    diameters: np.ndarray, quantiles: Mapping[str, float], unit: str, path: str | Path
) -> Path:
    fig = agg_figure(5.6, 3.8)
    draw_size_distribution(fig.add_subplot(1, 1, 1), diameters, quantiles, unit)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_profile(
    ax: Any, table: Mapping[str, np.ndarray], classes: Sequence[str], pores: Sequence[str], unit: str, xlabel: str
) -> None:
    """Each class's fraction along the profile, the porosity in bold."""
    x = np.asarray(table["position"])
    for name in classes:
        ax.plot(x, table[name], lw=1, alpha=0.7, label=name)
    if pores:
        por = np.sum([np.asarray(table[p]) for p in pores], axis=0)
        ax.plot(x, por, color="k", lw=2, label="porosity")
    ax.set_xlabel(f"{xlabel} ({unit})")
    ax.set_ylabel("fraction")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Phase fractions through the thickness")
    ax.legend(fontsize=8)


def profile_figure(
    table: Mapping[str, np.ndarray],
    classes: Sequence[str],
    pores: Sequence[str],
    unit: str,
    path: str | Path,
    *,
    xlabel: str = "position",
) -> Path:
    fig = agg_figure(5.6, 3.8)
    draw_profile(fig.add_subplot(1, 1, 1), table, classes, pores, unit, xlabel)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def tortuosity_figure(
    pore: np.ndarray, connected: np.ndarray | None, result: Mapping[str, Any], path: str | Path
) -> Path:
    """The pore phase of the measured region (a middle slice of a volume), its part that connects the two
    faces in colour, and the tortuosity factor in the title."""
    fig = agg_figure(5.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    p = np.asarray(pore, bool)
    c = None if connected is None else np.asarray(connected, bool)
    if p.ndim == 3:
        k = p.shape[1] // 2  # a slice that contains the flux axis (axis 0 after moving it first)
        p, c = p[:, k], (None if c is None else c[:, k])
    rgb = np.ones(p.shape + (3,))
    rgb[p] = (0.75, 0.75, 0.75)
    if c is not None:
        rgb[c] = (0.2, 0.45, 0.75)
    ax.imshow(rgb, interpolation="nearest")
    tau = result.get("tau")
    text = "infinite (no path)" if tau is None or not math.isfinite(tau) else f"{tau:.3f}"
    ax.set_title(f"Tortuosity factor along axis {result.get('axis', 0)}: {text}", fontsize=10)
    ax.set_xlabel("blue: pores on paths across the flux axis (drawn top to bottom); grey: dead ends", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
