"""Calibration of section prediction intervals on cross-validation folds.

A section's 90 % interval (:func:`ncm_core.inference.ensemble.section_interval`) is
``p +- 1.645 sqrt((r p)^2 + s_folds^2 + s_crops^2)``. In cross-validation each held-out section is
predicted by one fold's bundle (no fold spread), and ``r``, the model's relative RMS error on held-out
sections, is taken from the *other* folds' sections, so no section helps size its own interval.
:func:`interval_calibration` reports the share of held-out sections inside their interval, per target
and over all (section, target) pairs: about 0.9 means the interval is honest, well below 0.9 that it is
too narrow. The ensemble of all folds predicts better than one fold's bundle, so on new sections of the
same kind the interval is, if anything, wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ncm_core.inference.ensemble import Z90


def relative_rmse(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per target, the RMS of ``(p - y) / y`` over rows (0 for no rows)."""
    if not len(y):
        return np.zeros(y.shape[1] if y.ndim == 2 else 0)
    return np.sqrt(np.mean(((p - y) / np.where(y != 0, y, 1.0)) ** 2, 0))


def interval_calibration(
    y: np.ndarray,
    p: np.ndarray,
    s_crops: np.ndarray,
    fold: Sequence[int],
    names: Sequence[str],
    sections: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Coverage of the 90 % interval on held-out sections.

    ``y``, ``p``, ``s_crops``: ``(sections, targets)`` measured values, held-out predictions and the
    crop spread (std of the crops' predictions over sqrt(crops)); ``fold``: each section's test fold.
    Returns ``coverage`` (all pairs), ``per_target``, ``rel_rmse`` over all sections (what an ensemble
    of the folds uses for new sections), ``level`` and per-section ``rows``.
    """
    y, p, s_crops, fold = np.asarray(y, float), np.asarray(p, float), np.asarray(s_crops, float), np.asarray(fold)
    inside = np.zeros(y.shape, bool)
    low, high = np.zeros(y.shape), np.zeros(y.shape)
    for k in np.unique(fold):
        test, other = fold == k, fold != k
        r = relative_rmse(y[other], p[other])
        half = Z90 * np.sqrt((r * p[test]) ** 2 + s_crops[test] ** 2)
        low[test], high[test] = p[test] - half, p[test] + half
        inside[test] = (y[test] >= low[test]) & (y[test] <= high[test])
    rows = []
    for i in range(len(y)):
        row: dict[str, Any] = {"section": sections[i] if sections is not None else i, "fold": int(fold[i])}
        for k, n in enumerate(names):
            row.update({n: y[i, k], f"{n}_pred": round(p[i, k], 6), f"{n}_low90": round(low[i, k], 6)})
            row.update({f"{n}_high90": round(high[i, k], 6), f"{n}_inside": bool(inside[i, k])})
        rows.append(row)
    return {
        "level": 0.9,
        "coverage": float(inside.mean()) if inside.size else math.nan,
        "per_target": {n: float(inside[:, k].mean()) for k, n in enumerate(names)},
        "rel_rmse": {n: float(v) for n, v in zip(names, relative_rmse(y, p))},
        "sections": int(len(y)),
        "rows": rows,
    }
