"""Regressors that read descriptors: fitting the descriptor head, and what a bundle stores about descriptors.

``RegressConfig.model`` picks the model of a regression run (:mod:`ncm_core.models.hybrid`):

* ``cnn``: the image network alone (``ncm_vgg`` or another ``architecture``);
* ``descriptors``: ridge regression on the standardised logarithms of the crop descriptors
  (:class:`~ncm_core.models.hybrid.DescriptorRegressor`), fitted in closed form here in well under a second;
* ``hybrid``: the CNN's pooled features and the standardised descriptors into one head, added to a
  fitted descriptor model (:class:`~ncm_core.models.hybrid.HybridRegressor`), trained by the epoch loop;
* ``auto``: cross-validation fits all three on the same folds and keeps the one with the lowest MAPE
  per mosaic; a single model (no folds) trains the hybrid and keeps it unless the descriptor model is
  better on the validation mosaics.

Descriptors (:func:`ncm_core.training.regression_data.crop_features`) are measured on each prepared
crop with the Otsu threshold of its own section, so a microscope of other brightness reads the same
porosity. The bundle's ``regression.descriptors`` names them, their lengths' scale, and the range of the
training sections' mean descriptors (the extrapolation check of :mod:`ncm_core.inference.sections`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.training.regression_data import RegressionData, crop_features
from ncm_core.training.result import TrainResult

MODELS = ("cnn", "descriptors", "hybrid", "auto")
#: how a model is named in reports and in the bundle's architecture
ARCHITECTURES = {"descriptors": "ncm_descriptors", "hybrid": "ncm_hybrid"}


def data_descriptors(data: RegressionData) -> tuple[np.ndarray, list[str]]:
    """:func:`crop_features` of ``data``, computed once and kept on the object."""
    cached = data.__dict__.get("_ncm_descriptors")
    if cached is None:
        cached = data.__dict__["_ncm_descriptors"] = crop_features(data)
    return cached


def section_means(feats: np.ndarray, sources: list[str] | np.ndarray) -> tuple[list[str], np.ndarray]:
    """Each section's mean descriptors: ``(names, (sections, D))``."""
    src = np.asarray(sources)
    names = sorted(set(src.tolist()))
    return names, np.stack([feats[src == s].mean(0) for s in names])


def descriptor_info(data: RegressionData, train_idx: np.ndarray) -> dict[str, Any]:
    """What a bundle records about its descriptors: names, the length scale of the prepared crops, and the
    ``[min, max]`` of the training sections' mean of each descriptor."""
    feats, names = data_descriptors(data)
    _, means = section_means(feats[train_idx], [data.sources[i] for i in train_idx])
    return {
        "names": list(names),
        "pixel_size": data.pixel_size,
        "threshold": "otsu per section",
        "train_range": {n: [float(means[:, k].min()), float(means[:, k].max())] for k, n in enumerate(names)},
    }


def log_floor(feats: np.ndarray) -> np.ndarray:
    """Per descriptor, half its smallest positive value (1 where none is positive): the floor below which
    :class:`~ncm_core.models.hybrid.DescriptorRegressor` does not take logarithms."""
    pos = np.where(feats > 0, feats, np.inf).min(0)
    return np.where(np.isfinite(pos), 0.5 * pos, 1.0)


def fit_descriptor_head(head: Any, feats: np.ndarray, z: np.ndarray) -> Any:
    """Fill a :class:`~ncm_core.models.hybrid.DescriptorRegressor`'s buffers from training crops: the floor,
    mean and standard deviation of the descriptors' logarithms, their clamp range (the training range
    widened by :data:`~ncm_core.models.hybrid.CLAMP_MARGIN`), and a ridge fit of ``z`` on them, its
    penalty picked by efficient leave-one-out cross-validation over the crops (scikit-learn ``RidgeCV``).
    Leave-one-*section*-out would be the stricter choice; on the benchmark's sections it picked penalties
    that did worse on held-out sections, since a crop's own porosity scatters around its section's."""
    import torch
    from sklearn.linear_model import RidgeCV

    from ncm_core.models.hybrid import CLAMP_MARGIN

    floor = log_floor(feats)
    logs = np.log(np.maximum(feats, floor))
    mean, std = logs.mean(0), logs.std(0)
    std = np.where(std > 0, std, 1.0)
    zs = (logs - mean) / std
    ridge = RidgeCV(alphas=np.logspace(-4, 3, 15)).fit(zs, z)
    lo, hi = zs.min(0), zs.max(0)
    margin = CLAMP_MARGIN * (hi - lo)
    with torch.no_grad():
        head.d_floor.copy_(torch.as_tensor(floor))
        head.d_mean.copy_(torch.as_tensor(mean))
        head.d_std.copy_(torch.as_tensor(std))
        head.coef.copy_(torch.as_tensor(np.asarray(ridge.coef_).reshape(head.coef.shape)))
        head.intercept.copy_(torch.as_tensor(np.asarray(ridge.intercept_).reshape(-1)))
        head.d_low.copy_(torch.as_tensor(lo - margin))
        head.d_high.copy_(torch.as_tensor(hi + margin))
    return head


def target_scaling(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the training targets (a constant target is scaled by its size)."""
    t_mean, t_std = y.mean(0), y.std(0)
    return t_mean, np.where(t_std > 0, t_std, np.maximum(np.abs(t_mean), 1.0))


def fit_descriptor_model(
    data: RegressionData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    out: str | Path,
    extra_training: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit the descriptor-only model and write its bundle to ``out`` (no epochs). It has no epoch to pick,
    so it is fitted on the training *and* validation crops (``best_val_mape`` stays NaN)."""

    from ncm_core.models.bundle import BundleConfig, save_bundle
    from ncm_core.models.hybrid import DescriptorRegressor
    from ncm_core.models.preprocess import InputSpec

    t0 = time.monotonic()
    feats, names = data_descriptors(data)
    fit = np.concatenate([train_idx, val_idx]).astype(np.int64)
    t_mean, t_std = target_scaling(data.y[fit])
    head = DescriptorRegressor(len(data.target_names), len(names))
    fit_descriptor_head(head, feats[fit], (data.y[fit] - t_mean) / t_std)
    val_mape = None
    cfg = BundleConfig(
        architecture="ncm_descriptors",
        task="regress",
        target_names=list(data.target_names),
        input=InputSpec(in_chans=data.in_chans, input_size=tuple(int(v) for v in data.x.shape[-2:])),
        tile_size=int(data.crop_size[1]),
        pixel_size=data.pixel_size,
        model_kwargs={"n_descriptors": len(names)},
        regression={
            "mean": t_mean.tolist(),
            "std": t_std.tolist(),
            "loss": "ridge",
            "crop_size": list(data.crop_size),
            "c_rates": data.targets.c_rates(),
            "groups": list(data.groups),
            "model": "descriptors",
            "descriptors": descriptor_info(data, fit),
        },
        training={
            **(extra_training or {}),
            "task": "regress",
            "model": "descriptors",
            "data": str(data.root),
            "targets": str(data.targets.path),
            "epochs_run": 0,
            "best_epoch": 0,
            "best_val_mape": val_mape,
            "kept_epoch": "closed-form ridge fit",
            "train_sources": sorted({data.sources[i] for i in fit}),
            "val_sources": [],
            "history": [],
        },
    )
    path = save_bundle(head, cfg, out)
    best = float("nan") if val_mape is None else val_mape
    return TrainResult(path, 0, best, "val_mape", [], time.monotonic() - t0, 0)


def predict_crops(bundle: Any, data: RegressionData, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A bundle's values ``(len(idx), targets)`` for crops of ``data`` and their OOD scores (NaN where the
    bundle has no detector); the descriptors of a bundle that reads them are taken from ``data``."""
    from ncm_core.inference.sections import predict_values
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.regression_data import standardise

    b = load_bundle(bundle)
    x = standardise(data.x[idx], b.config.input)
    info = b.config.regression.get("descriptors")
    if not info:
        return predict_values(b, x, "cpu", 64, ood=True)
    feats, names = data_descriptors(data)
    missing = [n for n in info["names"] if n not in names]
    if missing:
        from ncm_core.errors import NcmError

        raise NcmError(f"the bundle reads descriptor(s) {', '.join(missing)} that these crops lack", data.root)
    cols = [names.index(n) for n in info["names"]]
    return predict_values(b, x, "cpu", 64, descriptors=feats[idx][:, cols]), np.full(len(idx), np.nan)
