"""What both segmentation engines' training shares: the validation split, IoU scores and the bundle config.

:func:`ncm_core.training.segment.train_segmenter` (the forest) and
:func:`ncm_core.training.segment_unet.fit_unet` (the U-Net) both use these, so the two engines hold out
the same images or strokes and are scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ncm_core.data.label_images import LabelSet, fit_normalization
from ncm_core.errors import NcmError
from ncm_core.models.segmenter import SegmenterConfig
from ncm_core.training.segment_config import SegmentConfig


@dataclass
class Split:
    """Training and validation parts of a label set: lists of ``(image index, label image)``."""

    train: list[tuple[int, np.ndarray]]
    val: list[tuple[int, np.ndarray]] = field(default_factory=list)
    how: str = "none"  # "images", "strokes" or "none"


def split_validation(labels: LabelSet, val_fraction: float, seed: int = 0) -> Split:
    """Hold out ``val_fraction`` of the images (2 or more images), else of each class's strokes (connected
    painted pieces; a class with one stroke keeps it for training). 0: no validation."""
    n = len(labels)
    everything = [(i, lab) for i, lab in enumerate(labels.labels)]
    if val_fraction <= 0:
        return Split(everything)
    rng = np.random.default_rng([seed, 31])
    if n >= 2:
        n_val = min(max(1, round(val_fraction * n)), n - 1)
        order = rng.permutation(n)
        val = sorted(int(i) for i in order[:n_val])
        train = [(i, lab) for i, lab in everything if i not in val]
        if len({int(v) for _, lab in train for v in np.unique(lab) if v}) >= 2:
            return Split(train, [(i, labels.labels[i]) for i in val], "images")
    from scipy import ndimage

    train, val = [], []
    for i, lab in everything:
        tr, va = lab.copy(), np.zeros_like(lab)
        for k in range(1, len(labels.classes) + 1):
            pieces, m = ndimage.label(lab == k)
            if m < 2:
                continue
            chosen = rng.permutation(m)[: max(1, int(round(val_fraction * m)))] + 1
            held = np.isin(pieces, chosen)
            va[held], tr[held] = k, 0
        train.append((i, tr))
        if va.any():
            val.append((i, va))
    return Split(train, val, "strokes" if val else "none")


def iou_scores(predictions: list[np.ndarray], labels: list[np.ndarray], classes: list[str]) -> dict[str, float | None]:
    """IoU of each class over the labelled pixels of ``labels`` (0 unlabelled, k = class k) against
    ``predictions`` (class index, 0-based); None for a class with no labelled pixel; ``mIoU`` their mean."""
    k = len(classes)
    inter, union = np.zeros(k), np.zeros(k)
    for pred, lab in zip(predictions, labels, strict=True):
        m = lab > 0
        p, t = pred[m], lab[m] - 1
        for c in range(k):
            inter[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
    out: dict[str, float | None] = {}
    for c, name in enumerate(classes):
        has = any((lab == c + 1).any() for lab in labels)
        out[name] = round(float(inter[c] / union[c]), 4) if has and union[c] else None
    scored = [v for v in out.values() if v is not None]
    out["mIoU"] = round(float(np.mean(scored)), 4) if scored else None
    return out


def segmenter_config(labels: LabelSet, config: SegmentConfig, images: list[int] | None = None) -> SegmenterConfig:
    """The bundle config of a run: classes, colours, channels, pixel size and the fixed normalisation
    measured on the training ``images`` (indices; None: all)."""
    from ncm_core._version import __version__
    from ncm_core.io.colors import class_colors

    chosen = [labels.images[i] for i in (images if images is not None else range(len(labels)))]
    low, high = fit_normalization(chosen)
    colors = list(config.colors) if config.colors else [_hex(c) for c in class_colors(labels.classes)]
    if len(colors) != len(labels.classes):
        raise NcmError(f"{len(colors)} colours for {len(labels.classes)} classes ({', '.join(labels.classes)})")
    return SegmenterConfig(
        engine=config.engine,
        classes=list(labels.classes),
        colors=colors,
        channels=labels.channels,
        norm_low=low,
        norm_high=high,
        normalization=config.normalization,
        pixel_size=config.pixel_size or labels.pixel_size,
        versions={"napari-ncm": __version__},
    )


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgba[:3])
