"""Training the U-Net segmentation engine from painted strokes or dense label images.

:func:`fit_unet` is what :func:`ncm_core.training.segment.train_segmenter` runs for ``engine="unet"``:

- **patches** of ``patch_size`` pixels are cut at random from the labelled images, each centred near a
  labelled pixel of a class drawn uniformly (so sparse strokes of a rare phase are seen as often as the
  background), with flips, quarter turns and a mild gain/offset change of the intensities;
- the **loss** is cross-entropy over labelled pixels only (``ignore_index``: unlabelled pixels teach
  nothing), weighted per class by the inverse square root of its labelled pixels;
- the **normalisation** is fixed per bundle (:func:`~ncm_core.data.label_images.fit_normalization` on the
  training images), never per patch or per window, so a pixel's result does not depend on which block
  of a mosaic it falls in;
- **validation** on held-out images when there are at least two (``val_fraction`` of them), else on
  held-out strokes (whole connected strokes of each class, ``val_fraction`` of its pixels): the mean
  IoU over classes on the held-out labelled pixels, per epoch; the best epoch's weights are kept;
- the shared epoch loop (:mod:`ncm_core.training.loop`): resume from ``OUT/checkpoint``, mixed
  precision on CUDA, early stopping (``patience``), progress and cancel;
- after training, the network's **reach** (:func:`~ncm_core.models.unet.measure_reach`) sets the
  bundle's halo, so mosaics are cut into windows whose stitched result equals the whole image's.

The bundle (``model.safetensors`` + ``config.json``) and ``training_curves.png`` are written to ``out``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.progress import CancelFlag, ProgressFn, report
from ncm_core.training.recipe import array_digest, recalibrate_batchnorm

IGNORE = -1  # target of an unlabelled pixel
JITTER = 0.25  # a patch's centre moves by up to this share of its side from the labelled pixel drawn
GAIN, OFFSET = 0.1, 0.05  # intensity augmentation, in normalised units
MIN_PATCHES = 16  # batches per epoch at least, when the images are small
CALIBRATION = 64  # patches whose statistics set the BatchNorm layers' before each validation


class PatchSampler:
    """Random labelled patches of normalised images: ``epoch(rng) -> (x (n, C, P, P), y (n, P, P))``."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], patch: int, n: int, augment: bool = True):
        h = patch // 2
        self.patch, self.n, self.augment = patch, n, augment
        self.images = [np.pad(im, ((0, 0), (h, h), (h, h)), mode="reflect") for im in images]
        self.labels = [np.pad(lab, h, constant_values=0) for lab in labels]  # outside: unlabelled
        self.where: dict[int, tuple[np.ndarray, ...]] = {}
        for c in range(1, max(int(lab.max()) for lab in labels) + 1):
            hits = [(i, *np.nonzero(lab == c)) for i, lab in enumerate(labels)]
            if sum(len(y) for _, y, _ in hits):
                self.where[c] = tuple(np.concatenate(v) for v in zip(*[(np.full(len(y), i), y, x) for i, y, x in hits]))

    def epoch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        P = self.patch
        classes = sorted(self.where)
        xs, ys = [], []
        for c in rng.choice(classes, self.n):
            img_i, yy, xx = self.where[int(c)]
            k = int(rng.integers(len(yy)))
            i = int(img_i[k])
            H, W = self.labels[i].shape[0] - P, self.labels[i].shape[1] - P  # the image's own size
            jy, jx = rng.integers(-int(JITTER * P), int(JITTER * P) + 1, 2)
            # padded by P/2 on each side: a patch at (y, x) of the padded image is centred on image pixel (y, x)
            y0, x0 = int(np.clip(yy[k] + jy, 0, H)), int(np.clip(xx[k] + jx, 0, W))
            x = self.images[i][:, y0 : y0 + P, x0 : x0 + P]
            y = self.labels[i][y0 : y0 + P, x0 : x0 + P]
            if self.augment:
                r = int(rng.integers(4))
                x, y = np.rot90(x, r, axes=(1, 2)), np.rot90(y, r)
                if rng.random() < 0.5:
                    x, y = x[:, :, ::-1], y[:, ::-1]
                x = x * np.float32(1 + rng.uniform(-GAIN, GAIN)) + np.float32(rng.uniform(-OFFSET, OFFSET))
            xs.append(np.ascontiguousarray(x, np.float32))
            ys.append(np.ascontiguousarray(y))
        return np.stack(xs), np.stack(ys).astype(np.int64) - 1  # 0 (unlabelled) -> IGNORE


def class_weights(labels: list[np.ndarray], K: int) -> np.ndarray:
    """Inverse square root of each class's labelled pixels, mean 1 over the classes present (0 for absent)."""
    counts = np.zeros(K + 1, np.float64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=K + 1)[: K + 1]
    n = counts[1:]
    w = np.where(n > 0, 1 / np.sqrt(np.maximum(n, 1)), 0.0)
    return (w / w[n > 0].mean()).astype(np.float32)


def evaluate_images(segmenter: Any, images: list[np.ndarray], labels: list[np.ndarray], margin: int) -> dict[str, Any]:
    """Per-class IoU and ``mIoU`` (:func:`~ncm_core.training.segment.iou_scores`), pixel ``accuracy`` and mean
    cross-entropy ``loss`` of ``segmenter`` on the labelled pixels of ``labels``; ``images`` raw ``(C, H, W)``,
    each predicted over the box of its labelled pixels and ``margin``."""
    from ncm_core.inference.segment import predict_image
    from ncm_core.training.segment_common import iou_scores

    preds, labs = [], []
    nll, n, hits = 0.0, 0, 0
    for img, lab in zip(images, labels):
        ys, xs = np.nonzero(lab)
        if not len(ys):
            continue
        y0, y1 = max(0, ys.min() - margin), min(lab.shape[0], ys.max() + 1 + margin)
        x0, x1 = max(0, xs.min() - margin), min(lab.shape[1], xs.max() + 1 + margin)
        if min(y1 - y0, x1 - x0) < segmenter.config.min_size:
            y0, y1, x0, x1 = 0, lab.shape[0], 0, lab.shape[1]
        probs = predict_image(segmenter, img[:, y0:y1, x0:x1], norm=segmenter.config.input_range(img))
        sub = lab[y0:y1, x0:x1]
        sel = sub > 0
        nll -= float(np.log(np.clip(probs[(sub[sel] - 1, *np.nonzero(sel))], 1e-7, 1)).sum())
        pred = probs.argmax(0)
        hits += int((pred[sel] == sub[sel] - 1).sum())
        n += int(sel.sum())
        preds.append(pred)
        labs.append(sub)
    scores = iou_scores(preds, labs, list(segmenter.config.classes))
    return {"iou": scores, "miou": scores["mIoU"], "accuracy": hits / max(n, 1), "loss": nll / max(n, 1)}


def fit_unet(
    label_set: Any,
    out: str | Path,
    config: Any,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> Path:
    """Train a U-Net on ``label_set`` (a :class:`~ncm_core.data.label_images.LabelSet`) with the U-Net
    fields of ``config`` (a ``SegmentConfig``: encoder, epochs, batch_size, patch_size, lr, pretrained,
    val_fraction, seed, device, amp, patience, resume) and write the bundle to ``out``; returns ``out``.

    ``on_epoch`` receives each epoch's record (losses, accuracies, ``val_miou``): live curves."""
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from ncm_core.devices import amp_dtype, resolve_device
    from ncm_core.models.backbone import load_encoder_weights
    from ncm_core.models.unet import UnetSegmenter, UnetSpec, halo_for, measure_reach
    from ncm_core.outputs import remove
    from ncm_core.training.loop import LoopConfig, Task, open_checkpoint, run_epochs
    from ncm_core.training.segment_common import segmenter_config, split_validation

    t0 = time.monotonic()
    out = Path(out)
    classes, K = list(label_set.classes), len(label_set.classes)
    pretrained = None if config.pretrained is None else Path(config.pretrained).expanduser()
    if pretrained is not None and pretrained.is_dir():  # an ``ncm pretrain`` folder
        pretrained = pretrained / "backbone.safetensors"
    spec = UnetSpec(
        encoder=config.encoder,
        **{k: getattr(config, k) for k in ("depth", "decoder_channels") if getattr(config, k, None) is not None},
        pretrained=None if pretrained is None else str(pretrained),
    )
    P = int(config.patch_size)
    if P % spec.multiple:
        raise NcmError(
            f"the patch size ({P} px) must be a multiple of {spec.multiple} (the U-Net halves it {spec.depth} times)"
        )
    split = split_validation(label_set, config.val_fraction, config.seed)
    train_idx = [i for i, lab in split.train if lab.any()]
    seg_config = segmenter_config(label_set, config, train_idx)
    seg_config.min_size = seg_config.multiple = spec.multiple
    seg_config.engine_config = spec.to_dict()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    norm = {i: seg_config.normalize_image(label_set.images[i]) for i in {i for i, _ in split.train + split.val}}
    area = sum(int(np.prod(label_set.images[i].shape[1:])) for i in train_idx)
    n_patches = int(
        getattr(config, "patches_per_epoch", None) or max(-(-area // (P * P)), MIN_PATCHES * config.batch_size)
    )
    train_labels = [lab for _, lab in split.train if lab.any()]
    sampler = PatchSampler([norm[i] for i in train_idx], train_labels, P, n_patches)
    weights = class_weights(train_labels, K)
    settings = {
        "spec": spec.to_dict(),
        **{k: getattr(config, k) for k in ("epochs", "batch_size", "patch_size", "lr", "val_fraction", "seed")},
        "patience": config.patience,
        "amp": str(config.amp),
        "patches_per_epoch": n_patches,
        "validation": split.how,
        "val_images": [label_set.names[i] for i, _ in split.val] if split.how == "images" else [],
        "classes": classes,
    }
    blob = {**settings, "data": array_digest(list(label_set.images) + list(label_set.labels))}
    fp = hashlib.sha1(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, config.resume)

    dev = resolve_device(config.device)
    dtype = amp_dtype(config.amp, dev)
    segmenter = UnetSegmenter.build(seg_config)
    model = segmenter.model
    if pretrained is not None:
        load_encoder_weights(model, pretrained)
    segmenter.to(dev)
    opt = create_optimizer_v2(model, opt="adamw", lr=config.lr, weight_decay=1e-4)
    steps = max(1, -(-n_patches // config.batch_size))
    sched, _ = create_scheduler_v2(
        opt, sched="cosine", num_epochs=config.epochs, warmup_epochs=0, min_lr=config.lr * 0.01, updates_per_epoch=steps
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    w = torch.as_tensor(weights, device=dev)

    def step(xb: Any, yb: Any, _rng: np.random.Generator) -> tuple[Any, Any]:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(xb)
        return F.cross_entropy(logits.float(), yb, weight=w, ignore_index=IGNORE), logits

    def stats(logits: Any, yb: Any) -> dict[str, float]:
        sel = yb != IGNORE
        acc = ((logits.argmax(1) == yb) & sel).sum().item() / max(sel.sum().item(), 1)
        return {"train_accuracy": acc * len(yb)}

    margin = seg_config.halo
    val_images, val_lab = [label_set.images[i] for i, _ in split.val], [lab for _, lab in split.val]

    calib_x = sampler.epoch(np.random.default_rng(config.seed + 1))[0][:CALIBRATION]  # fixed: resume stays exact
    calib = [calib_x[k : k + config.batch_size] for k in range(0, len(calib_x), config.batch_size)]

    def validate() -> dict[str, float]:
        recalibrate_batchnorm(model, calib, dev)
        r = evaluate_images(segmenter, val_images, val_lab, margin)
        return {"val_loss": r["loss"], "val_accuracy": r["accuracy"], "val_miou": r["miou"]}

    validated = any(lab.any() for lab in val_lab)
    task = Task(
        step=step,
        stats=stats,
        validate=validate,
        score=lambda rec: (rec.get("val_miou", 0.0), rec.get("val_accuracy", 0.0)),
        has_validation=validated,
        progress_key="val_miou",
        min_batch=2,
    )
    loop = LoopConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        steps_per_epoch=steps,
        patience=config.patience or None,
        fingerprint=fp,
        ckpt_dir=ckpt_dir,
        ckpt=ckpt,
        t0=t0,
    )
    st = run_epochs(
        model=model,
        opt=opt,
        sched=sched,
        scaler=scaler,
        task=task,
        epoch_data=sampler.epoch,
        to_input=lambda xb: torch.as_tensor(xb, device=dev),
        to_target=lambda yb: torch.as_tensor(yb, device=dev),
        rng=rng,
        loop=loop,
        progress=progress,
        cancel=cancel,
        on_epoch=on_epoch,
    )
    total = config.epochs * steps
    report(progress, total, total, "measuring the network's reach (the halo of mosaic windows)")
    if not validated:
        recalibrate_batchnorm(model, calib, dev)
    model.eval()
    probe = [norm[i] for i in ([i for i, _ in split.val] or train_idx)]
    reach = measure_reach(segmenter, probe)
    seg_config.halo = halo_for(reach["reach"], spec.multiple)
    scores = evaluate_images(segmenter, val_images, val_lab, seg_config.halo) if validated else {}
    seg_config.training = {
        **settings,
        "engine": "unet",
        "epochs_run": len(st.history),
        "best_epoch": st.best_epoch,
        "kept_epoch": "best validation mIoU" if validated else "the last (no validation)",
        "val_iou": scores.get("iou"),
        "val_miou": scores.get("miou"),
        "class_weights": [float(v) for v in weights],
        "reach": reach,
        "history": st.history,
        "seconds": round(time.monotonic() - t0, 1),
    }
    segmenter.to("cpu").save(out)
    from ncm_core.viz.training import training_curves_figure

    title = f"U-Net ({spec.encoder}), best validation mIoU {scores['miou']:.3f}" if validated else None
    training_curves_figure(st.history, out / "training_curves.png", title)
    remove(ckpt_dir)
    return out
