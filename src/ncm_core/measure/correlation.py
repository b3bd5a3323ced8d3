"""Correlation curves of a phase: two-point correlation and lineal path (PoreSpy), as plain arrays.

* :func:`two_point_correlation`: ``S2(r)``, the probability that two points a distance ``r`` apart both
  lie in the phase; ``S2(0)`` is the phase fraction and ``S2(inf)`` its square; the distance where it
  levels off is a correlation length (about a particle size).
* :func:`mean_chord_length`: the mean length of the phase's chords (runs along the grid axes), exactly
  from counts: each pixel lies on one chord per axis, so the mean is ``axes * pixels / chords``; through
  discs of radius r it averages pi r / 2, through squares of side s it is s (``data.descriptors``'
  ``pore_chord`` / ``solid_chord``);
* :func:`lineal_path`: the distribution of chord lengths of the phase along one axis (PoreSpy chords);
  the mean chord through discs of radius r is pi r / 2, as in ``data.descriptors``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np


def mean_chord_length(mask: np.ndarray, pixel_size: float | None = None, *, batch: bool = False) -> Any:
    """Mean chord length of the phase ``mask`` along all grid axes (px, or um with ``pixel_size``); 0
    when the phase is absent. ``batch``: the first axis is a stack of images (an ``(N,)`` array)."""
    m = np.asarray(mask, bool)
    first = 1 if batch else 0
    axes = tuple(range(first, m.ndim))
    runs = np.zeros(m.shape[0] if batch else (), np.float64)
    for d in axes:
        head = [slice(None)] * m.ndim
        head[d] = slice(0, 1)
        lo = [slice(None)] * m.ndim
        hi = [slice(None)] * m.ndim
        lo[d], hi[d] = slice(None, -1), slice(1, None)
        starts = m[tuple(hi)] & ~m[tuple(lo)]  # a run starts after a change, or at the first pixel
        runs = runs + np.count_nonzero(m[tuple(head)], axis=axes) + np.count_nonzero(starts, axis=axes)
    pixels = np.count_nonzero(m, axis=axes).astype(np.float64)
    size = 1.0 if pixel_size is None else float(pixel_size)
    out = size * np.divide(len(axes) * pixels, runs, out=np.zeros_like(pixels), where=runs > 0)
    return out if batch else float(out)


def two_point_correlation(
    mask: np.ndarray, pixel_size: float | None = None, *, bins: int = 100
) -> dict[str, np.ndarray]:
    """``{"distance": (px or um), "probability": S2}`` of the phase ``mask`` (2D or 3D), from PoreSpy's
    FFT-based ``two_point_correlation`` (its ``probability_scaled``: its ``probability`` is S2 divided by
    the phase fraction, the chance that the second point is in the phase given the first is)."""
    import porespy as ps

    m = np.asarray(mask, bool)
    r = ps.metrics.two_point_correlation(m, voxel_size=1.0 if pixel_size is None else float(pixel_size), bins=bins)
    return {"distance": np.asarray(r.distance, np.float64), "probability": np.asarray(r.probability_scaled, np.float64)}


def lineal_path(
    mask: np.ndarray, pixel_size: float | None = None, *, axis: int = 0, bins: int = 25
) -> dict[str, np.ndarray]:
    """``{"length": bin centres (px or um), "pdf": ..., "cdf": ...}``: the distribution of the phase's
    chord lengths along ``axis`` (PoreSpy ``apply_chords`` on every other line, then
    ``chord_length_distribution``, by count). PoreSpy's ``lineal_path_distribution`` reads chords
    differently (its lengths come from a distance transform of the chord image, which measures chord
    widths, not lengths, on this image), so the chord-length route is taken."""
    import porespy as ps

    m = np.asarray(mask, bool)
    size = 1.0 if pixel_size is None else float(pixel_size)
    chords = ps.filters.apply_chords(m, axis=axis % m.ndim, spacing=1, trim_edges=False) > 0 if m.any() else m
    if not chords.any():
        return {"length": np.zeros(0), "pdf": np.zeros(0), "cdf": np.zeros(0)}
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PoreSpy 3.2 reads a property scikit-image 0.26 renamed
        r = ps.metrics.chord_length_distribution(chords, bins=bins, voxel_size=size)
    return {
        "length": np.asarray(r.L, np.float64),
        "pdf": np.asarray(r.pdf, np.float64),
        "cdf": np.asarray(r.cdf, np.float64),
    }
