"""Multi-output regression from cross-section crops: rate capability (Deeg et al., Batteries 2024).

:func:`train_regressor` trains one regressor on all mosaics but a grouped validation share, which
picks the best epoch; :func:`cross_validate` runs grouped k-fold cross-validation. Both take a
:class:`~ncm_core.training.config.RegressConfig` (or its fields as keywords). The parts live in
modules named for what they hold, and are importable from here too:

* data, splits and input sizes: :mod:`ncm_core.training.regression_data`;
* losses: :mod:`ncm_core.training.losses`; augmentation: :mod:`ncm_core.data.augment`;
* fitting one model: :mod:`ncm_core.training.regression_fit`;
* cross-validation: :mod:`ncm_core.training.cross_validation`;
* metrics and reports: :mod:`ncm_core.evaluation.regression`;
* prediction along a section: :mod:`ncm_core.inference.sections`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.augment import augment_batch
from ncm_core.evaluation.regression import cv_report, regression_metrics, write_section_prediction
from ncm_core.inference.sections import SectionPrediction, predict_section, predict_values
from ncm_core.options import merge_options
from ncm_core.outputs import check_training_output
from ncm_core.progress import CancelFlag, ProgressFn
from ncm_core.training.config import LOSSES, REGRESS_MONITORS, RegressConfig
from ncm_core.training.cross_validation import CVResult, cross_validate
from ncm_core.training.losses import mape, regression_loss
from ncm_core.training.regression_data import (
    RegressionData,
    grouped_kfold,
    grouped_split,
    load_for_config,
    load_regression_data,
    parse_size,
    standardise,
)
from ncm_core.training.regression_fit import fit_regressor
from ncm_core.training.result import RegressResult, TrainResult

MONITORS = REGRESS_MONITORS

__all__ = [
    "LOSSES",
    "MONITORS",
    "CVResult",
    "RegressConfig",
    "RegressResult",
    "RegressionData",
    "SectionPrediction",
    "TrainResult",
    "augment_batch",
    "cross_validate",
    "cv_report",
    "fit_regressor",
    "grouped_kfold",
    "grouped_split",
    "load_regression_data",
    "mape",
    "parse_size",
    "predict_section",
    "predict_values",
    "regression_loss",
    "regression_metrics",
    "standardise",
    "train_regressor",
    "write_section_prediction",
]


def train_regressor(
    data: str | Path,
    targets: str | Path,
    out: str | Path,
    config: RegressConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> TrainResult:
    """Train one regressor on all mosaics but a grouped validation share (``val_fraction``), which picks
    the best epoch, and write its bundle to ``out``.

    ``val_fraction=0`` or ``holdout=False`` trains on every mosaic for the full number of epochs, without
    early stopping (the last epoch is kept). Other settings (architecture, epochs, loss, ...):
    :class:`~ncm_core.training.config.RegressConfig`, as ``config`` or keywords; ``on_epoch`` is passed
    through to :func:`fit_regressor`.
    """
    on_epoch = overrides.pop("on_epoch", None)
    c = merge_options(RegressConfig, config, overrides).validate()
    check_training_output(out, c.overwrite, (data, targets, c.pretrained))
    d = load_for_config(data, targets, c, progress, cancel)
    if c.holdout:
        tr, va = grouped_split(d.split_groups(c.split_by), c.val_fraction, c.seed)
    else:
        tr, va = np.arange(len(d.files)), np.zeros(0, np.int64)
    extra = {"split_by": c.split_by or "source", "val_fraction": c.val_fraction}
    model = "hybrid" if c.model == "auto" else c.model
    r = fit_regressor(
        d, tr, va, out, c, model=model, progress=progress, cancel=cancel, on_epoch=on_epoch, extra_training=extra
    )
    if c.model == "auto" and len(va):
        r = _keep_better_descriptor_model(d, tr, va, r, extra)
    if len(va):
        r.baselines = _validation_baselines(d, tr, va, r.bundle, c.seed)
    return r


def _validation_baselines(d: RegressionData, tr: np.ndarray, va: np.ndarray, bundle: Path, seed: int) -> dict:
    """The baselines fitted on the training crops against the CNN on the validation mosaics:
    ``bundle/baselines.csv`` and ``bundle/baselines.json`` (:mod:`ncm_core.evaluation.baselines`)."""
    import json

    from ncm_core.evaluation.baselines import baseline_report, fit_predict_baselines
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.regression_models import data_descriptors, predict_crops

    model = load_bundle(bundle).config.regression.get("model", "cnn")
    values, _ = predict_crops(bundle, d, va)
    feats, names = data_descriptors(d)
    rep = baseline_report(
        d.y[va],
        [d.sources[i] for i in va],
        fit_predict_baselines(feats, d.y, tr, va, seed),
        d.target_names,
        bundle,
        cnn=values if model == "cnn" else None,
        models=None if model == "cnn" else {model: values},
        descriptors=names,
        what="validation mosaics",
    )
    (Path(bundle) / "baselines.json").write_text(json.dumps({"format": "ncm-baselines", **rep}, indent=2))
    return rep


def _keep_better_descriptor_model(
    d: RegressionData, tr: np.ndarray, va: np.ndarray, r: TrainResult, extra: dict
) -> TrainResult:
    """``model="auto"`` without folds: the descriptor model replaces the trained hybrid in ``r.bundle`` when
    its MAPE per validation mosaic is lower."""
    import shutil
    import tempfile

    from ncm_core.training.regression_models import fit_descriptor_model, predict_crops

    def per_mosaic(p: np.ndarray) -> float:
        src = np.asarray([d.sources[i] for i in va])
        u = sorted(set(src.tolist()))
        y = np.stack([d.y[va][src == s].mean(0) for s in u])
        return regression_metrics(y, np.stack([p[src == s].mean(0) for s in u]), d.target_names)["mape"]

    with tempfile.TemporaryDirectory(dir=Path(r.bundle).parent) as tmp:
        alt = fit_descriptor_model(d, tr, np.zeros(0, np.int64), Path(tmp) / "descriptors", extra)  # va: the judge
        mine = per_mosaic(predict_crops(alt.bundle, d, va)[0])
        if mine < per_mosaic(predict_crops(r.bundle, d, va)[0]):
            shutil.rmtree(r.bundle)
            shutil.move(str(alt.bundle), str(r.bundle))
            alt.bundle, alt.best_value = r.bundle, mine
            return alt
    return r
