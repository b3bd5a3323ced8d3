"""Training a segmenter from images and label images: :func:`train_segmenter`, one function for both engines.

DATA is a folder of images with ``<stem>_labels`` images (:func:`ncm_core.data.label_images.load_label_set`)
or a :class:`~ncm_core.data.label_images.LabelSet` built in memory (the napari widget's layers). Validation
holds out whole images when there are 2 or more, else some of the painted strokes (connected pieces of
each class), and measures the IoU of each class on the held-out labelled pixels; the forest is then fitted
again on all the labels (a few seconds), the U-Net keeps its best epoch. The helpers here
(:func:`segmenter_config`, :func:`split_validation`, :func:`iou_scores`, in
:mod:`ncm_core.training.segment_common`) are shared with the U-Net's :func:`ncm_core.training.segment_unet.fit_unet`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.label_images import LabelSet, load_label_set
from ncm_core.errors import NcmError
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, is_cancelled, report
from ncm_core.training.segment_common import Split, iou_scores, segmenter_config, split_validation
from ncm_core.training.segment_config import SegmentConfig

__all__ = ["train_segmenter", "describe", "Split", "iou_scores", "segmenter_config", "split_validation"]


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
        images = [seg.normalize_image(labels.images[i]) for i, _ in parts]
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
