"""Training a segmenter from images and label images: :func:`train_segmenter`, one function for both engines.

DATA is a folder of images with ``<stem>_labels`` images (:func:`ncm_core.data.label_images.load_label_set`)
or a :class:`~ncm_core.data.label_images.LabelSet` built in memory (the napari widget's layers). Validation
holds out whole images when there are 2 or more, else some of the painted strokes (connected pieces of
each class), and measures the IoU of each class on the held-out labelled pixels; the forest is then fitted
again on all the labels (a few seconds), the U-Net keeps its best epoch. The helpers here
(:func:`segmenter_config`, :func:`split_validation`, :func:`iou_scores`) are shared with the U-Net's
:func:`ncm_core.training.segment_unet.fit_unet`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.label_images import LabelSet, fit_normalization, load_label_set
from ncm_core.errors import NcmError
from ncm_core.models.segmenter import SegmenterConfig
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, is_cancelled, report
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
        pixel_size=config.pixel_size or labels.pixel_size,
        versions={"napari-ncm": __version__},
    )


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgba[:3])


def train_segmenter(
    data: str | Path | LabelSet,
    out: str | Path,
    config: SegmentConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Any = None,
    **overrides: Any,
) -> Path:
    """Train a segmenter (``engine`` ``"forest"`` or ``"unet"``) and write its bundle to ``out``.

    ``data``: a folder of images and ``<stem>_labels`` images (``classes.txt`` or ``classes`` names the
    classes) or a :class:`LabelSet`. Keywords override fields of :class:`SegmentConfig`. The validation
    IoU per class and the mIoU are in the bundle's ``config.json`` (``training``). Returns ``out``.
    ``on_epoch(record)`` (U-Net) receives each epoch's losses and scores: live curves.
    """
    config = merge_options(SegmentConfig, config, overrides).validate()
    from ncm_core.outputs import check_output, check_training_output

    inputs = [] if isinstance(data, LabelSet) else [data]
    # the U-Net resumes an unfinished run in OUT; the forest writes its bundle whole (under OUT.partial)
    check = check_training_output if config.engine == "unet" else check_output
    out = check(out, config.overwrite, inputs)
    labels = data if isinstance(data, LabelSet) else load_label_set(data, config.classes)
    if isinstance(data, LabelSet) and config.classes is not None and list(config.classes) != labels.classes:
        raise NcmError(f"classes {', '.join(config.classes)} given, the label set has {', '.join(labels.classes)}")
    if config.engine == "unet":
        try:
            from ncm_core.training.segment_unet import fit_unet
        except ModuleNotFoundError as exc:
            if exc.name != "ncm_core.training.segment_unet":
                raise
            raise NcmError("the U-Net engine is not part of this installation; use --engine forest") from None
        return fit_unet(labels, out, config, progress=progress, cancel=cancel, on_epoch=on_epoch)
    return _fit_forest(labels, out, config, progress, cancel, inputs)


def _fit_forest(
    labels: LabelSet, out: Path, config: SegmentConfig, progress: ProgressFn | None, cancel: CancelFlag, inputs: list
) -> Path:
    from ncm_core.models.forest import train_forest
    from ncm_core.outputs import atomic_output

    t0 = time.monotonic()
    split = split_validation(labels, config.val_fraction, config.seed)
    steps = 3 if split.val else 1
    stop = (lambda: is_cancelled(cancel)) if cancel is not None else None

    def fit(parts: list[tuple[int, np.ndarray]]) -> Any:
        seg = segmenter_config(labels, config, sorted({i for i, _ in parts}))
        seg.engine_config = config.forest_settings()
        images = [seg.normalize(labels.images[i]) for i, _ in parts]
        return train_forest(images, [lab for _, lab in parts], seg, seed=config.seed, cancel=stop)

    training: dict[str, Any] = {"validation": split.how, "images": list(labels.names)}
    if split.val:
        report(progress, 0, steps, "forest: training without the held-out part")
        model = fit(split.train)
        check_cancel(cancel)
        report(progress, 1, steps, "forest: validation")
        preds = [model.predict_image(labels.images[i]) for i, _ in split.val]
        training["val_iou"] = iou_scores(preds, [lab for _, lab in split.val], labels.classes)
        training["val_images"] = [labels.names[i] for i, _ in split.val] if split.how == "images" else []
        check_cancel(cancel)
    report(progress, steps - 1, steps, "forest: training on all labels")
    model = fit([(i, lab) for i, lab in enumerate(labels.labels)])
    counts = labels.counts()
    training.update(
        labelled_pixels={c: int(n) for c, n in zip(labels.classes, counts, strict=True)},
        labelled_fraction=round(float(counts.sum() / sum(lab.size for lab in labels.labels)), 6),
        seconds=round(time.monotonic() - t0, 2),
        notes=list(labels.notes),
    )
    model.config.training = training
    with atomic_output(out, config.overwrite, inputs=inputs) as part:
        model.save(part)
    report(progress, steps, steps, "forest: done")
    return out


def describe(bundle: str | Path) -> str:
    """One line on a trained segmenter: engine, classes, validation mIoU and per-class IoU."""
    from ncm_core.models.segmenter import read_segmenter_config

    c = read_segmenter_config(bundle)
    t = c.training
    iou = t.get("val_iou") or {}
    if iou.get("mIoU") is None:
        val = "no validation"
    else:
        per = ", ".join(f"{k} {v:.3f}" for k, v in iou.items() if k != "mIoU" and v is not None)
        val = f"validation ({t.get('validation')}) mIoU {iou['mIoU']:.3f} ({per})"
    return f"{c.engine} segmenter of {len(c.classes)} classes ({', '.join(c.classes)}): {val}"
