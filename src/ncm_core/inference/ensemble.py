"""Regression ensembles over cross-validation folds, and honest intervals for a section's prediction.

A cross-validation folder (:func:`ncm_core.training.cross_validation.cross_validate`) holds
``ensemble.json``: the kept model, its fold bundles, the relative error of that model on held-out
sections (from the folds, per target) and the range of the training sections' mean descriptors.
:func:`load_members` reads it (or one bundle) for :func:`ncm_core.inference.sections.predict_section`,
which predicts with every fold's bundle and averages.

The 90 % interval of a section's prediction ``p`` (per target), :func:`section_interval`::

    half = 1.645 * widen * sqrt((r * p)^2 + s_folds^2 + s_crops^2)

* ``r``: the model's relative RMS error on held-out sections in cross-validation (0 without it);
* ``s_folds``: the standard deviation of the fold bundles' section means (the ensemble's spread);
* ``s_crops``: the standard deviation of the crops' predictions over sqrt(number of crops);
* ``widen`` = 1, or ``1.5 + 2 * excess`` when a section's mean descriptors lie outside the training
  sections' range by more than 10 % of its width (``excess``: the largest distance outside, in widths),
  with a warning: the model extrapolates.

How often the interval holds on held-out sections is measured on the folds
(:func:`ncm_core.evaluation.intervals.interval_calibration`) and written to the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.descriptors import RANGE_MARGIN
from ncm_core.errors import NcmError

ENSEMBLE = "ensemble.json"
#: z of a two-sided 90 % normal interval
Z90 = 1.6448536269514722
#: a descriptor this far outside the training range (share of the range's width) counts as extrapolation:
#: where the descriptor model stops following it (its clamp, :data:`ncm_core.models.hybrid.CLAMP_MARGIN`)
RANGE_TOLERANCE = RANGE_MARGIN


@dataclass
class Members:
    """The bundles that predict together and what the ensemble knows about their errors."""

    bundles: list[Any]
    path: Path | None = None
    rel_rmse: dict[str, float] = field(default_factory=dict)
    descriptors: dict[str, Any] = field(default_factory=dict)  # names, pixel_size, train_range
    model: str = "cnn"


def is_ensemble(path: Any) -> bool:
    """True for a folder holding ``ensemble.json`` (a cross-validation folder)."""
    return isinstance(path, (str, Path)) and (Path(path).expanduser() / ENSEMBLE).is_file()


def load_members(bundle: Any, device: str = "cpu") -> Members:
    """One bundle (path or loaded), or the fold bundles of a cross-validation folder's ``ensemble.json``."""
    from ncm_core.models.bundle import load_bundle

    if not is_ensemble(bundle):
        b = load_bundle(bundle, device=device)
        reg = b.config.regression
        return Members([b], b.path, {}, dict(reg.get("descriptors") or {}), str(reg.get("model", "cnn")))
    root = Path(bundle).expanduser()
    try:
        info = json.loads((root / ENSEMBLE).read_text())
        paths = [root / p for p in info["bundles"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise NcmError(f"{ENSEMBLE} is damaged ({type(exc).__name__}: {exc})", root / ENSEMBLE) from None
    return Members(
        [load_bundle(p, device=device) for p in paths],
        root,
        dict(info.get("interval", {}).get("rel_rmse") or {}),
        dict(info.get("descriptors") or {}),
        str(info.get("model", "cnn")),
    )


def extrapolation(means: dict[str, float], train_range: dict[str, list[float]]) -> tuple[float, list[str]]:
    """How far a section's mean descriptors lie outside the training range: ``(excess, messages)``;
    excess 0 and no messages inside (within :data:`RANGE_TOLERANCE` of the range's width)."""
    worst, notes = 0.0, []
    for name, (lo, hi) in train_range.items():
        if name not in means:
            continue
        v, width = float(means[name]), max(hi - lo, 1e-12)
        out = max(lo - v, v - hi, 0.0) / width
        if out > RANGE_TOLERANCE:
            worst = max(worst, out)
            notes.append(f"{name} {v:.3g} is outside the training range {lo:.3g}-{hi:.3g}")
    return worst, notes


def section_interval(
    member_values: np.ndarray,
    target_names: list[str],
    rel_rmse: dict[str, float] | None = None,
    excess: float = 0.0,
) -> dict[str, dict[str, float]]:
    """90 % interval per target of a section predicted by ``member_values (members, crops, targets)``
    (module docstring): ``{target: {mean, low, high, s_folds, s_crops, widen}}``."""
    v = np.asarray(member_values, np.float64)
    per_member = v.mean(1)  # (members, targets)
    ens = v.mean(0)  # (crops, targets)
    p = ens.mean(0)
    s_folds = per_member.std(0, ddof=1) if len(v) > 1 else np.zeros_like(p)
    s_crops = ens.std(0, ddof=1) / math.sqrt(len(ens)) if len(ens) > 1 else np.zeros_like(p)
    widen = 1.0 if excess <= 0 else 1.5 + 2.0 * excess
    out = {}
    for k, n in enumerate(target_names):
        r = float((rel_rmse or {}).get(n, 0.0))
        half = Z90 * widen * math.sqrt((r * p[k]) ** 2 + s_folds[k] ** 2 + s_crops[k] ** 2)
        out[n] = {
            "mean": float(p[k]),
            "low": float(p[k] - half),
            "high": float(p[k] + half),
            "s_folds": float(s_folds[k]),
            "s_crops": float(s_crops[k]),
            "widen": widen,
        }
    return out
