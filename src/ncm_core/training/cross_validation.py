"""Grouped k-fold cross-validation of regressors (scikit-learn's ``GroupKFold``).

Per fold, a validation split is taken from the fold's training mosaics for early stopping; the fold's
bundle predicts its test crops. The report (:func:`ncm_core.evaluation.regression.cv_report`) holds
per-fold and mean metrics, per-group errors, predicted-vs-measured scatter plots and the
rate-capability plot, and the baselines fitted on the same folds (the training mean and descriptor
models, :mod:`ncm_core.evaluation.baselines`): ``baselines`` in ``metrics.json`` and ``baselines.csv``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.evaluation.baselines import baseline_report, cv_baselines
from ncm_core.evaluation.regression import cv_report, regression_metrics
from ncm_core.models.bundle import read_bundle_config
from ncm_core.options import merge_options
from ncm_core.outputs import check_inputs
from ncm_core.progress import CancelFlag, ProgressFn
from ncm_core.training.config import RegressConfig
from ncm_core.training.learning_curve import learning_curve, network_learning_curve, write_learning_curve
from ncm_core.training.regression_data import (
    grouped_kfold,
    grouped_split,
    load_for_config,
)
from ncm_core.training.regression_fit import fit_regressor
from ncm_core.training.regression_models import data_descriptors, descriptor_info, predict_crops

#: the models ``auto`` compares on the same folds
AUTO_MODELS = ("cnn", "hybrid", "descriptors")
#: from the simplest: the model kept when two are equally good
SIMPLER = ("descriptors", "hybrid", "cnn")
#: MAPE points within which two models count as equally good
TIE_POINTS = 0.005


@dataclass
class CVResult:
    out: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    folds: list[Path]  # the kept model's fold bundles
    seconds: float
    model: str = "cnn"  # the kept model (``auto``: the best of cnn, hybrid, descriptors by MAPE per mosaic)


def cross_validate(
    data: str | Path,
    targets: str | Path,
    out: str | Path,
    config: RegressConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> CVResult:
    """Grouped k-fold cross-validation: per fold a bundle in ``out/fold_<k>``, then reports in ``out``.

    Settings: ``config`` or keyword ``overrides`` of :class:`~ncm_core.training.config.RegressConfig`
    fields (``folds``, ``split_by``, ``val_fraction``, ``epochs``, ...). Crops of one mosaic (or one
    value of ``split_by``) are never in both a fold's training and test crops; early stopping uses a
    grouped validation share of the training mosaics, never the test fold (``val_fraction`` 0: none,
    each fold keeps its last epoch). A fold whose bundle was already written with the same settings and
    data is not trained again.

    ``model`` ``auto`` fits the CNN, the hybrid and the descriptor model on the same folds (bundles in
    ``out/<model>/fold_<k>``; one model: ``out/fold_<k>``) and keeps the one with the lowest MAPE per
    mosaic. Besides the reports of :func:`~ncm_core.evaluation.regression.cv_report` and the baselines,
    ``out`` gets ``intervals.csv`` and ``metrics.json``'s ``interval`` (how often held-out sections fall in
    their 90 % interval, :mod:`ncm_core.evaluation.intervals`), ``learning_curve.csv`` / ``.png``
    (:mod:`ncm_core.training.learning_curve`) and ``ensemble.json``: ``ncm predict OUT MOSAIC`` then
    predicts with the kept model's fold bundles together, with an interval.
    """
    c = merge_options(RegressConfig, config, overrides).validate()
    check_inputs(out, (data, targets, c.pretrained))
    folds, split_by, seed = c.folds, c.split_by, c.seed
    t0 = time.monotonic()
    d = load_for_config(data, targets, c, progress, cancel)
    grp = d.split_groups(split_by)
    splits = grouped_kfold(grp, folds, seed)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    models = list(AUTO_MODELS) if c.model == "auto" else [c.model]
    feats, feat_names = data_descriptors(d)
    pred = {m: np.full(d.y.shape, np.nan) for m in models}
    fold_of = np.full(len(d.files), -1)
    ood = np.full(len(d.files), np.nan)
    fold_metrics: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    paths: dict[str, list[Path]] = {m: [] for m in models}
    for k, (tr_all, test) in enumerate(splits, start=1):
        tr, va = grouped_split(grp[tr_all], c.val_fraction, seed + k)
        tr, va = tr_all[tr], tr_all[va]
        assert not set(grp[test]) & set(grp[tr]) and not set(grp[test]) & set(grp[va])
        fold_of[test] = k
        for m in models:
            fdir = out / f"fold_{k}" if len(models) == 1 else out / m / f"fold_{k}"
            step = _fold_progress(progress, k, folds, m if len(models) > 1 else "")
            cb = None if on_epoch is None else (lambda rec, k=k, m=m: on_epoch({**rec, "fold": k, "model": m}))
            fit_regressor(
                d,
                tr,
                va,
                fdir,
                c,
                model=m,
                progress=step,
                cancel=cancel,
                on_epoch=cb,
                reuse=True,
                extra_training={"fold": k, "folds": folds, "split_by": split_by or "source"},
            )
            v, o = predict_crops(fdir, d, test)
            pred[m][test] = v
            if m == "cnn" or len(models) == 1:
                ood[test] = o
            fm = regression_metrics(d.y[test], v, d.target_names)
            tr_info = read_bundle_config(fdir).training
            fm.update(
                fold=k,
                test_groups=sorted(set(grp[test].tolist())),
                best_epoch=tr_info.get("best_epoch"),
                epochs_run=tr_info.get("epochs_run"),
            )
            fold_metrics[m].append(fm)
            paths[m].append(fdir)
    baselines = baseline_report(
        d.y,
        d.sources,
        cv_baselines(feats, d.y, splits, seed),
        d.target_names,
        out,
        cnn=pred.get("cnn"),
        models={m: pred[m] for m in models if m != "cnn"},
        descriptors=feat_names,
        what=f"{folds}-fold cross-validation",
    )
    score = {m: float(np.nan_to_num(baselines["models"][m]["mosaics"]["mape"], nan=np.inf)) for m in models}
    # the simplest model within TIE_POINTS of the best (a hybrid that kept its descriptor model ties with it)
    chosen = next(m for m in sorted(models, key=list(SIMPLER).index) if score[m] <= min(score.values()) + TIE_POINTS)
    rows = []
    for i in range(len(d.files)):
        row = {
            "file": d.files[i],
            "source": d.sources[i],
            "fold": int(fold_of[i]),
            **{g: d.groups[g][i] for g in d.groups},
        }
        for k, n in enumerate(d.target_names):
            row[n] = float(d.y[i, k])
            row[f"{n}_pred"] = round(float(pred[chosen][i, k]), 6)
        row["ood"] = None if np.isnan(ood[i]) else round(float(ood[i]), 4)
        rows.append(row)
    metrics = cv_report(
        rows,
        d.target_names,
        fold_metrics[chosen],
        out,
        group_columns=list(d.groups),
        c_rates=d.targets.c_rates(),
        settings={"folds": folds, "split_by": split_by or "source", "seed": seed, **_settings(c)},
    )
    metrics["model"] = chosen
    metrics["models"] = models
    metrics["baselines"] = baselines
    cal = _calibration(d, pred[chosen], fold_of, out)
    metrics["interval"] = {k: v for k, v in cal.items() if k != "rows"}
    curve = learning_curve(feats, d.y, d.sources, splits, d.target_names, seed=seed) if "descriptors" in c.curve else []
    nets = [m for m in c.curve if m != "descriptors"]
    if nets:
        curve += network_learning_curve(d, splits, grp, c, out, nets, progress=progress, cancel=cancel)
    write_learning_curve(curve, out)
    metrics["learning_curve"] = curve
    _write_ensemble(out, chosen, paths[chosen], cal, descriptor_info(d, np.arange(len(d.files))))
    metrics["seconds"] = time.monotonic() - t0
    (out / "metrics.json").write_text(json.dumps({"format": "ncm-cross-validation", **metrics}, indent=2))
    return CVResult(out, metrics, rows, paths[chosen], metrics["seconds"], chosen)


def _calibration(d: Any, pred: np.ndarray, fold_of: np.ndarray, out: Path) -> dict[str, Any]:
    """Interval calibration on the held-out sections (:mod:`ncm_core.evaluation.intervals`), ``intervals.csv``."""
    from ncm_core.evaluation.evaluate import write_rows
    from ncm_core.evaluation.intervals import interval_calibration

    src = np.asarray(d.sources)
    secs = sorted(set(src.tolist()))
    y = np.stack([d.y[src == s].mean(0) for s in secs])
    p = np.stack([pred[src == s].mean(0) for s in secs])
    sc = np.stack(
        [pred[src == s].std(0, ddof=1) / np.sqrt((src == s).sum()) if (src == s).sum() > 1 else 0 * p[0] for s in secs]
    )
    fold = [int(fold_of[src == s][0]) for s in secs]
    cal = interval_calibration(y, p, sc, fold, d.target_names, secs)
    write_rows(out / "intervals.csv", cal["rows"])
    return cal


def _write_ensemble(out: Path, model: str, paths: list[Path], cal: dict[str, Any], descriptors: dict[str, Any]) -> None:
    """``out/ensemble.json``: the kept model's fold bundles predict new sections together (``ncm predict OUT``)."""
    from ncm_core.inference.ensemble import ENSEMBLE

    info = {
        "format": "ncm-ensemble",
        "model": model,
        "bundles": [str(p.relative_to(out)) for p in paths],
        "interval": {"level": cal["level"], "rel_rmse": cal["rel_rmse"], "cv_coverage": cal["coverage"]},
        "descriptors": descriptors,
    }
    (out / ENSEMBLE).write_text(json.dumps(info, indent=2))


def _settings(c: RegressConfig) -> dict[str, Any]:
    """The run's settings as JSON values (the report's ``settings``)."""
    out = {}
    for f in fields(c):
        v = getattr(c, f.name)
        if f.name == "augment":  # the augmentations applied, by name (as the bundle records them)
            from ncm_core.data.augment import parse_augment

            out[f.name] = list(parse_augment(v, "regress"))
        elif f.name not in ("folds", "split_by", "seed", "overwrite"):
            out[f.name] = v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else str(v)
    return out


def _fold_progress(progress: ProgressFn | None, k: int, folds: int, model: str = "") -> ProgressFn | None:
    if progress is None:
        return None
    what = f" {model}" if model else ""

    def fn(done: int, total: int, message: str = "") -> None:
        frac = (k - 1 + (done / total if total else 0)) / folds
        progress(int(1000 * frac), 1000, f"fold {k}/{folds}{what}: {message}")

    return fn
