"""Baselines of a regression report: is the CNN worth it?

On the same grouped folds (or the same training / validation split) as the CNN:

* ``mean``: the training crops' mean of each target;
* ``ridge``: standardised descriptors (:mod:`ncm_core.data.descriptors`) -> ridge regression, its penalty
  picked by leave-one-out CV inside the training crops (scikit-learn ``RidgeCV``);
* ``boosting``: standardised descriptors -> a small gradient-boosted tree ensemble per target
  (``GradientBoostingRegressor``, 150 trees of depth 2).

:func:`baseline_report` ranks them with the CNN by MAPE per mosaic (the mean prediction of a mosaic's
crops), writes ``baselines.csv`` and warns in one line when the CNN does not beat the best descriptor model.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.evaluation.evaluate import write_rows
from ncm_core.evaluation.regression import regression_metrics

BASELINES = ("mean", "ridge", "boosting")
DESCRIPTOR_MODELS = ("ridge", "boosting")
#: the kind of each model of the ranking (the descriptor baselines and the ``descriptors`` model: descriptors)
KINDS = {"cnn": "cnn", "hybrid": "hybrid", "mean": "mean"}


def fit_predict_baselines(
    features: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int = 0
) -> dict[str, np.ndarray]:
    """Predictions ``(len(test), targets)`` of each baseline fitted on the ``train`` rows."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr, xte = features[train], y[train], features[test]
    out = {"mean": np.tile(ytr.mean(0), (len(test), 1))}
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))
    out["ridge"] = ridge.fit(xtr, ytr).predict(xte).reshape(len(test), -1)
    cols = []
    for k in range(y.shape[1]):
        gb = GradientBoostingRegressor(n_estimators=150, max_depth=2, learning_rate=0.05, random_state=seed)
        cols.append(make_pipeline(StandardScaler(), gb).fit(xtr, ytr[:, k]).predict(xte))
    out["boosting"] = np.stack(cols, 1)
    return out


def cv_baselines(
    features: np.ndarray, y: np.ndarray, splits: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> dict[str, np.ndarray]:
    """Out-of-fold predictions ``(N, targets)`` of each baseline over the (train, test) ``splits``."""
    pred = {m: np.full(y.shape, np.nan) for m in BASELINES}
    for train, test in splits:
        for m, v in fit_predict_baselines(features, y, train, test, seed).items():
            pred[m][test] = v
    return pred


def _by_mosaic(values: np.ndarray, sources: Sequence[str]) -> np.ndarray:
    src = np.asarray(sources)
    return np.array([values[src == u].mean(0) for u in sorted(set(src.tolist()))])


def baseline_report(
    y: np.ndarray,
    sources: Sequence[str],
    predictions: dict[str, np.ndarray],
    names: Sequence[str],
    out: str | Path | None = None,
    *,
    cnn: np.ndarray | None = None,
    models: dict[str, np.ndarray] | None = None,
    descriptors: Sequence[str] = (),
    what: str = "cross-validation",
) -> dict[str, Any]:
    """Metrics of each model (``cnn`` first when given, the other trained ``models`` such as ``hybrid`` and
    ``descriptors``, then the baselines) per crop and per mosaic, the ranking by MAPE per mosaic,
    ``out/baselines.csv``; one warning when the CNN does not beat the best descriptor baseline."""
    preds = ({"cnn": cnn} if cnn is not None else {}) | dict(models or {}) | dict(predictions)
    ym = _by_mosaic(y, sources)
    models, rows = {}, []
    for m, p in preds.items():
        crops, mosaics = regression_metrics(y, p, names), regression_metrics(ym, _by_mosaic(p, sources), names)
        models[m] = {"crops": crops, "mosaics": mosaics}
        rows.append(
            {
                "model": m,
                "kind": KINDS.get(m, "descriptors"),
                "mosaic_mape": round(mosaics["mape"], 4),
                "mosaic_mae": round(mosaics["mae"], 4),
                "mosaic_r2": round(mosaics["r2"], 4),
                "crop_mape": round(crops["mape"], 4),
                "crop_mae": round(crops["mae"], 4),
                "crop_r2": round(crops["r2"], 4),
                **{f"{n}_mape": round(mosaics["targets"][n]["mape"], 4) for n in names},
            }
        )
    rows.sort(key=lambda r: (np.nan_to_num(r["mosaic_mape"], nan=np.inf), r["model"]))
    rows = [{"rank": k, **r} for k, r in enumerate(rows, start=1)]
    report: dict[str, Any] = {
        "split": what,
        "ranked_by": "MAPE per mosaic",
        "descriptors": list(descriptors),
        "models": models,
        "ranking": [r["model"] for r in rows],
    }
    if cnn is not None:
        best = min(DESCRIPTOR_MODELS, key=lambda m: models[m]["mosaics"]["mape"])
        c, b = models["cnn"]["mosaics"]["mape"], models[best]["mosaics"]["mape"]
        report["cnn_beats_descriptors"] = bool(c < b)
        if not c < b:
            warnings.warn(
                f"the CNN ({c:.2f} % MAPE per mosaic, {what}) does not beat the descriptor model '{best}' "
                f"({b:.2f} %): it has not learnt more than porosity, pore size and interface say "
                "(see baselines.csv)",
                stacklevel=2,
            )
    if out is not None:
        write_rows(Path(out) / "baselines.csv", rows)
    return report


def ranking_line(report: dict[str, Any]) -> str:
    """One line for a command's summary: the models by MAPE per mosaic, best first."""
    parts = [f"{m} {report['models'][m]['mosaics']['mape']:.2f} %" for m in report["ranking"]]
    return "ranking by MAPE per mosaic: " + ", ".join(parts)
