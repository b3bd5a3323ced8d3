"""Reports of regressors: metrics, cross-validation reports and section predictions on disk.

* :func:`regression_metrics`: MAPE, MAE and R^2 per target and their means (scikit-learn);
* :func:`cv_report`: a cross-validation's metrics per crop, per mosaic, per fold and per group, its tables
  (``predictions.csv``, ``per_group.csv``, ``per_target.csv``) and figures (scatter, rate capability);
* :func:`write_section_prediction`: ``crops.csv``, ``summary.json`` and the rate-capability plot of a
  :class:`~ncm_core.inference.sections.SectionPrediction`, written whole or not at all.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.evaluation.evaluate import write_rows
from ncm_core.inference.sections import SectionPrediction
from ncm_core.outputs import atomic_output


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """MAPE (%), MAE and R^2 per target (scikit-learn) and their means over targets."""
    from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, r2_score

    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    per = {}
    for k, n in enumerate(names):
        t, p = y_true[:, k], y_pred[:, k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # R^2 of a constant target
            r2 = float(r2_score(t, p)) if len(t) > 1 and np.ptp(t) > 0 else float("nan")
        per[n] = {
            "mape": float(100 * mean_absolute_percentage_error(t, p)),
            "mae": float(mean_absolute_error(t, p)),
            "r2": r2,
            "n": int(len(t)),
        }
    mean = {
        m: float(np.nanmean([per[n][m] for n in names])) if any(np.isfinite(per[n][m]) for n in names) else float("nan")
        for m in ("mape", "mae", "r2")
    }
    return {"targets": per, **mean, "n": int(len(y_true))}


def cv_report(
    rows: list[dict[str, Any]],
    names: list[str],
    fold_metrics: list[dict[str, Any]],
    out: Path,
    *,
    group_columns: Sequence[str] = (),
    c_rates: list[float] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics (per crop and per mosaic), per-group errors, scatter and rate-capability plots in ``out``."""
    from ncm_core.data.datasets import natural_key
    from ncm_core.viz.rate_capability import rate_capability_figure, scatter_figure

    y = np.array([[r[n] for n in names] for r in rows])
    p = np.array([[r[f"{n}_pred"] for n in names] for r in rows])
    sources = [r["source"] for r in rows]
    uniq = sorted(set(sources))
    ym = np.array([y[[s == u for s in sources]].mean(0) for u in uniq])
    pm = np.array([p[[s == u for s in sources]].mean(0) for u in uniq])
    per_fold = {m: [f[m] for f in fold_metrics] for m in ("mape", "mae", "r2")}
    metrics = {
        "settings": settings or {},
        "crops": regression_metrics(y, p, names),
        "mosaics": regression_metrics(ym, pm, names),
        "folds": fold_metrics,
        "fold_mean": {m: float(np.mean(v)) for m, v in per_fold.items()},
        "fold_std": {m: float(np.std(v)) for m, v in per_fold.items()},
    }
    group_rows = []
    for g in ["source", *group_columns]:
        vals = [str(r[g]) for r in rows]
        for v in sorted(set(vals), key=natural_key):
            idx = [i for i, x in enumerate(vals) if x == v]
            gm = regression_metrics(y[idx], p[idx], names)
            group_rows.append(
                {
                    "group": g,
                    "value": v,
                    "crops": len(idx),
                    "mape": round(gm["mape"], 4),
                    "mae": round(gm["mae"], 4),
                    **{f"{n}_mape": round(gm["targets"][n]["mape"], 4) for n in names},
                }
            )
    metrics["groups"] = group_rows
    metrics["group_columns"] = list(group_columns)
    write_rows(out / "predictions.csv", rows)
    write_rows(out / "per_group.csv", group_rows)
    write_rows(
        out / "per_target.csv",
        [
            {
                "target": n,
                **{f"crop_{m}": metrics["crops"]["targets"][n][m] for m in ("mape", "mae", "r2")},
                **{f"mosaic_{m}": metrics["mosaics"]["targets"][n][m] for m in ("mape", "mae", "r2")},
            }
            for n in names
        ],
    )
    scatter_figure(y, p, names, out / "scatter.png", folds=[r["fold"] for r in rows])
    by = group_columns[0] if group_columns else "source"
    rate_capability_figure(rows, names, c_rates, out / "rate_capability.png", by=by)
    return metrics


def write_section_prediction(
    sp: SectionPrediction, out: str | Path, c_rates: list[float] | None = None, overwrite: bool = True
) -> Path:
    """``out/crops.csv`` (values per crop with its corners), ``summary.json`` (mean +- std per target, the
    section's geometry) and ``rate_capability.png``. Written to ``<out>.partial`` and renamed."""
    from ncm_core.data.targets import parse_c_rates
    from ncm_core.viz.regression import section_prediction_figure

    out = Path(out).expanduser()
    with atomic_output(out, overwrite) as part:
        write_rows(part / "crops.csv", sp.rows())
        summary = sp.summary()
        (part / "summary.json").write_text(
            json.dumps(
                {
                    "summary": summary,
                    "crops": len(sp.values),
                    "ood_fraction": None if sp.ood is None else float((sp.ood > 1).mean()),
                    "members": sp.members,
                    "interval": sp.interval,
                    "descriptors": sp.descriptors,
                    "warnings": sp.warnings,
                    "geometry": sp.geometry.to_dict(),
                },
                indent=2,
            )
        )
        section_prediction_figure(
            summary,
            sp.target_names,
            c_rates or parse_c_rates(sp.target_names),
            Path(str(sp.geometry.source)).name,
            part / "rate_capability.png",
            len(sp.values),
        )
    return out
