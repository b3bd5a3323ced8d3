"""Regression heads at inference: values of prepared crops, and predictions along a cross-section.

:func:`predict_section` finds the section in a mosaic (:mod:`ncm_core.data.sections`), cuts crops of the
bundle's crop size and predicts each, a batch at a time; :func:`predict_values` predicts prepared inputs
(used by cross-validation too). Reports of a :class:`SectionPrediction` are written by
:func:`ncm_core.evaluation.regression.write_section_prediction`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.progress import CancelFlag, ProgressFn, report


def predict_values(
    bundle: Any,
    x: Any,
    device: Any = "cpu",
    batch_size: int = 64,
    ood: bool = False,
    descriptors: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predicted values ``(N, targets)`` in the targets' units for prepared inputs ``(N, C, H, W)``;
    ``descriptors (N, D)`` (in the bundle's ``regression.descriptors.names`` order) for a bundle that reads
    them (:mod:`ncm_core.models.hybrid`)."""
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
    reads = bool(reg.get("descriptors"))
    if reads and descriptors is None:
        raise NcmError("this bundle reads crop descriptors; none were given", bundle.path)
    d_all = torch.as_tensor(np.asarray(descriptors), dtype=torch.float32) if reads else None
    with torch.inference_mode():
        for k in range(0, len(x), batch_size):
            xb = x[k : k + batch_size].to(dev)
            if reads:
                z = model(xb, d_all[k : k + batch_size].to(dev))
            elif use_ood:
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
    values: np.ndarray  # (crops, targets): the mean of the members' predictions
    ood: np.ndarray | None = None  # score / threshold per crop
    interval: dict[str, dict[str, float]] | None = None  # 90 % interval per target (inference.ensemble)
    descriptors: dict[str, float] | None = None  # the section's mean descriptors
    warnings: list[str] = field(default_factory=list)  # extrapolation
    members: int = 1

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation over the crops, per target, and the 90 % interval where known."""
        out = {}
        for k, n in enumerate(self.target_names):
            out[n] = {
                "mean": float(self.values[:, k].mean()),
                "std": float(self.values[:, k].std(ddof=0)),
                "n": int(len(self.values)),
            }
            if self.interval:
                out[n].update(low90=self.interval[n]["low"], high90=self.interval[n]["high"])
        return out

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

    ``bundle``: a regression bundle, or a cross-validation folder (its ``ensemble.json``): then every
    fold's bundle predicts and the values are their mean, with a 90 % interval per target and a warning
    when the section's descriptors lie outside the training range (:mod:`ncm_core.inference.ensemble`).
    Bundles that read descriptors get them from the same crops, with the section's own Otsu threshold
    (one more pass over the crops). Crops are read and predicted a batch at a time, so memory depends on
    crop and batch size, not on the mosaic.
    """
    from ncm_core.data.sections import detect_section, iter_crops
    from ncm_core.inference.ensemble import extrapolation, load_members, section_interval
    from ncm_core.io.mosaic import Mosaic, open_mosaic

    dev = resolve_device(device)
    mem = load_members(bundle, device=str(dev))
    b = mem.bundles[0]
    if b.config.task != "regress":
        raise NcmError(
            "this bundle is a classifier; section prediction needs a regression bundle ('ncm train --task regress')",
            b.path,
        )
    m = mosaic if isinstance(mosaic, Mosaic) else open_mosaic(mosaic)
    crop = tuple(b.config.regression.get("crop_size") or (224, 672))
    geom = geometry or detect_section(m, crop=crop, mode=mode, stride=stride, margin=margin, cancel=cancel)
    names = mem.descriptors.get("names") or []
    reads = [bool(x.config.regression.get("descriptors")) for x in mem.bundles]
    threshold = _section_threshold(m, geom, b, cancel) if names or any(reads) else None
    vals: list[list[np.ndarray]] = [[] for _ in mem.bundles]
    oods, descs, batch = [], [], []
    n = len(geom.crops)

    def flush() -> None:
        raw = _raw_tensor(np.stack(batch), b)
        table = None if threshold is None else _descriptors(raw, threshold, geom, b)
        if table is not None:
            descs.append(table)
        for j, member in enumerate(mem.bundles):
            x = _standardised(raw, member.config.input)
            if reads[j]:
                cols = [table[k] for k in member.config.regression["descriptors"]["names"]]
                vals[j].append(predict_values(member, x, dev, batch_size, descriptors=np.stack(cols, 1)))
            else:
                v, o = predict_values(member, x, dev, batch_size, ood=True)
                vals[j].append(v)
                if j == 0:
                    oods.append(o)
        batch.clear()

    for k, tile in enumerate(iter_crops(m, geom, cancel)):
        batch.append(tile)
        if len(batch) == batch_size:
            flush()
        report(progress, k + 1, n, f"crop {k + 1}/{n}")
    if batch:
        flush()
    t = b.config.num_outputs
    member_values = np.stack([np.concatenate(v) if v else np.zeros((0, t)) for v in vals])
    ood = np.concatenate(oods) if oods else None
    sp = SectionPrediction(
        geom,
        list(b.config.target_names),
        member_values.mean(0),
        None if ood is None or np.isnan(ood).all() else ood,
        members=len(mem.bundles),
    )
    if descs:
        sp.descriptors = {k: float(np.concatenate([d[k] for d in descs]).mean()) for k in descs[0]}
    excess, notes = extrapolation(sp.descriptors or {}, mem.descriptors.get("train_range") or {})
    sp.warnings = notes
    if len(sp.values) and (len(mem.bundles) > 1 or mem.rel_rmse or excess):
        sp.interval = section_interval(member_values, sp.target_names, mem.rel_rmse, excess)
    if notes:
        widen = f"; the 90 % interval is widened x{1.5 + 2 * excess:.1f}" if sp.interval else ""
        warnings.warn(f"{Path(str(geom.source)).name}: {'; '.join(notes)}: the model extrapolates{widen}", stacklevel=2)
    return sp


def _raw_tensor(tiles: np.ndarray, b: Any) -> Any:
    """Crops at the bundle's input size, intensities in [0, 1], not yet standardised."""
    from ncm_core.models.preprocess import InputSpec, tiles_to_tensor

    return tiles_to_tensor(tiles, InputSpec(in_chans=b.config.input.in_chans, input_size=b.config.input.input_size))


def _standardised(x: Any, spec: Any) -> Any:
    import torch

    if spec.mean is None or spec.std is None:
        return x
    return (x - torch.as_tensor(spec.mean).view(1, -1, 1, 1)) / torch.as_tensor(spec.std).view(1, -1, 1, 1)


def _section_threshold(m: Any, geom: Any, b: Any, cancel: CancelFlag) -> float:
    """Otsu's threshold over the section's prepared crops (a sample of their pixels), as in training."""
    from ncm_core.data.descriptors import otsu_threshold, to_gray
    from ncm_core.data.sections import iter_crops

    sample = [to_gray(_raw_tensor(t[None], b).numpy(), True)[:, ::2, ::2] for t in iter_crops(m, geom, cancel)]
    return otsu_threshold(np.concatenate(sample)) if sample else 0.5


def _descriptors(raw: Any, threshold: float, geom: Any, b: Any) -> dict[str, np.ndarray]:
    """The crops' descriptors in training units: lengths in um at the mosaic's pixel size (else the
    bundle's, else px) scaled to the prepared crops, and the section's thickness."""
    from ncm_core.data.descriptors import crop_descriptors

    px = 1.0 if b.config.pixel_size is None else float(geom.pixel_size or b.config.pixel_size)  # px if trained so
    scale = b.config.regression["crop_size"][1] / raw.shape[-1]
    d = crop_descriptors(raw.numpy(), threshold, pixel_size=px * scale, channels_first=True)
    d["thickness"] = np.full(len(raw), float(geom.thickness_px) * px)
    return d
