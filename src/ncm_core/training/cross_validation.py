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
from ncm_core.inference.sections import predict_values
from ncm_core.options import merge_options
from ncm_core.outputs import check_inputs
from ncm_core.progress import CancelFlag, ProgressFn
from ncm_core.training.config import RegressConfig
from ncm_core.training.regression_data import (
    crop_features,
    grouped_kfold,
    grouped_split,
    load_for_config,
    standardise,
)
from ncm_core.training.regression_fit import fit_regressor


@dataclass
class CVResult:
    out: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    folds: list[Path]
    seconds: float


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
    """
    from ncm_core.models.bundle import load_bundle

    c = merge_options(RegressConfig, config, overrides).validate()
    check_inputs(out, (data, targets, c.pretrained))
    folds, split_by, seed = c.folds, c.split_by, c.seed
    t0 = time.monotonic()
    d = load_for_config(data, targets, c, progress, cancel)
    grp = d.split_groups(split_by)
    splits = grouped_kfold(grp, folds, seed)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    pred = np.full(d.y.shape, np.nan)
    fold_of = np.full(len(d.files), -1)
    ood = np.full(len(d.files), np.nan)
    fold_metrics, paths = [], []
    for k, (tr_all, test) in enumerate(splits, start=1):
        tr, va = grouped_split(grp[tr_all], c.val_fraction, seed + k)
        tr, va = tr_all[tr], tr_all[va]
        assert not set(grp[test]) & set(grp[tr]) and not set(grp[test]) & set(grp[va])
        fdir = out / f"fold_{k}"
        step = _fold_progress(progress, k, folds)
        cb = None if on_epoch is None else (lambda rec, k=k: on_epoch({**rec, "fold": k}))
        fit_regressor(
            d,
            tr,
            va,
            fdir,
            c,
            progress=step,
            cancel=cancel,
            on_epoch=cb,
            reuse=True,
            extra_training={"fold": k, "folds": folds, "split_by": split_by or "source"},
        )
        b = load_bundle(fdir)
        v, o = predict_values(b, standardise(d.x[test], b.config.input), "cpu", 64, ood=True)
        pred[test], fold_of[test], ood[test] = v, k, o
        fm = regression_metrics(d.y[test], v, d.target_names)
        fm.update(
            fold=k,
            test_groups=sorted(set(grp[test].tolist())),
            best_epoch=b.config.training.get("best_epoch"),
            epochs_run=b.config.training.get("epochs_run"),
        )
        fold_metrics.append(fm)
        paths.append(fdir)
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
            row[f"{n}_pred"] = round(float(pred[i, k]), 6)
        row["ood"] = None if np.isnan(ood[i]) else round(float(ood[i]), 4)
        rows.append(row)
    metrics = cv_report(
        rows,
        d.target_names,
        fold_metrics,
        out,
        group_columns=list(d.groups),
        c_rates=d.targets.c_rates(),
        settings={"folds": folds, "split_by": split_by or "source", "seed": seed, **_settings(c)},
    )
    feats, feat_names = crop_features(d)
    metrics["baselines"] = baseline_report(
        d.y,
        d.sources,
        cv_baselines(feats, d.y, splits, seed),
        d.target_names,
        out,
        cnn=pred,
        descriptors=feat_names,
        what=f"{folds}-fold cross-validation",
    )
    metrics["seconds"] = time.monotonic() - t0
    (out / "metrics.json").write_text(json.dumps({"format": "ncm-cross-validation", **metrics}, indent=2))
    return CVResult(out, metrics, rows, paths, metrics["seconds"])


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


def _fold_progress(progress: ProgressFn | None, k: int, folds: int) -> ProgressFn | None:
    if progress is None:
        return None

    def fn(done: int, total: int, message: str = "") -> None:
        frac = (k - 1 + (done / total if total else 0)) / folds
        progress(int(1000 * frac), 1000, f"fold {k}/{folds}: {message}")

    return fn
