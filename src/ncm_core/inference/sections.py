"""Regression heads at inference: values of prepared crops, and predictions along a cross-section.

:func:`predict_section` finds the section in a mosaic (:mod:`ncm_core.data.sections`), cuts crops of the
bundle's crop size and predicts each, a batch at a time; :func:`predict_values` predicts prepared inputs
(used by cross-validation too). Reports of a :class:`SectionPrediction` are written by
:func:`ncm_core.evaluation.regression.write_section_prediction`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.progress import CancelFlag, ProgressFn, report


def predict_values(
    bundle: Any, x: Any, device: Any = "cpu", batch_size: int = 64, ood: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predicted values ``(N, targets)`` in the targets' units for prepared inputs ``(N, C, H, W)``."""
    import torch

    from ncm_core.models.ood import forward_with_features, has_ood, ood_ratio

    if bundle.config.task != "regress":
        raise NcmError(f"this bundle is a classifier ({len(bundle.class_names)} classes), not a regressor", bundle.path)
    reg = bundle.config.regression
    mean, std = np.asarray(reg.get("mean", 0.0)), np.asarray(reg.get("std", 1.0))
    model, dev = bundle.model.to(device), torch.device(device)
    model.eval()
    out, scores = [], []
    use_ood = ood and has_ood(bundle)
    with torch.inference_mode():
        for k in range(0, len(x), batch_size):
            xb = x[k : k + batch_size].to(dev)
            if use_ood:
                z, f = forward_with_features(model, xb)
                scores.append(ood_ratio(bundle, f).cpu().numpy())
            else:
                z = model(xb)
            out.append(z.float().cpu().numpy())
    z = np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)
    values = z * std + mean
    if ood:
        return values, (np.concatenate(scores) if scores else np.full(len(values), np.nan))
    return values


@dataclass
class SectionPrediction:
    """Predicted values for each crop along one cross-section."""

    geometry: Any  # SectionGeometry
    target_names: list[str]
    values: np.ndarray  # (crops, targets)
    ood: np.ndarray | None = None  # score / threshold per crop

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation over the crops, per target."""
        return {
            n: {
                "mean": float(self.values[:, k].mean()),
                "std": float(self.values[:, k].std(ddof=0)),
                "n": int(len(self.values)),
            }
            for k, n in enumerate(self.target_names)
        }

    def rows(self) -> list[dict[str, Any]]:
        polys = self.geometry.crop_polygons()
        out = []
        for i, (r0, c0) in enumerate(self.geometry.crops):
            row = {"crop": i, "row": r0, "column": c0, "corners_yx": json.dumps(np.round(polys[i], 2).tolist())}
            row.update({n: round(float(self.values[i, k]), 6) for k, n in enumerate(self.target_names)})
            if self.ood is not None:
                row["ood"] = round(float(self.ood[i]), 4)
            out.append(row)
        return out


def predict_section(
    bundle: Any,
    mosaic: Any,
    *,
    mode: str = "center",
    stride: tuple[int, int] | None = None,
    margin: int = 4,
    geometry: Any = None,
    device: str = "auto",
    batch_size: int = 16,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> SectionPrediction:
    """Find the section in ``mosaic``, cut crops of the bundle's crop size and predict each one.

    Crops are read and predicted a batch at a time, so memory depends on crop
    and batch size, not on the mosaic.
    """
    from ncm_core.data.sections import detect_section, iter_crops
    from ncm_core.io.mosaic import Mosaic, open_mosaic
    from ncm_core.models.bundle import load_bundle
    from ncm_core.models.preprocess import tiles_to_tensor

    dev = resolve_device(device)
    b = load_bundle(bundle, device=str(dev))
    if b.config.task != "regress":
        raise NcmError(
            "this bundle is a classifier; section prediction needs a regression bundle ('ncm train --task regress')",
            b.path,
        )
    m = mosaic if isinstance(mosaic, Mosaic) else open_mosaic(mosaic)
    crop = tuple(b.config.regression.get("crop_size") or (224, 672))
    geom = geometry or detect_section(m, crop=crop, mode=mode, stride=stride, margin=margin, cancel=cancel)
    vals, oods, batch = [], [], []
    n = len(geom.crops)

    def flush() -> None:
        x = tiles_to_tensor(np.stack(batch), b.config.input)
        v, o = predict_values(b, x, dev, batch_size, ood=True)
        vals.append(v)
        oods.append(o)
        batch.clear()

    for k, tile in enumerate(iter_crops(m, geom, cancel)):
        batch.append(tile)
        if len(batch) == batch_size:
            flush()
        report(progress, k + 1, n, f"crop {k + 1}/{n}")
    if batch:
        flush()
    values = np.concatenate(vals) if vals else np.zeros((0, b.config.num_outputs))
    ood = np.concatenate(oods) if oods else None
    return SectionPrediction(
        geom, list(b.config.target_names), values, None if ood is None or np.isnan(ood).all() else ood
    )
