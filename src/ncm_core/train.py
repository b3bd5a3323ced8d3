"""Training a tile classifier from a class-per-folder dataset.

Each epoch draws fresh random crops of ``tile_size`` pixels from every training
image (the published SEM workflow trains on random crops of frames), with
flips and 90-degree turns. Validation uses fixed, seeded crops of images held
out before cropping, so no image feeds both sides. The best epoch by
validation accuracy (not training accuracy) is what the bundle keeps.
Optimisers and schedules come from timm's factories.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import BundleConfig, save_bundle
from .datasets import load_image, random_crops, scan_class_folders, split_by_image
from .errors import NcmError
from .preprocess import InputSpec, tiles_to_tensor
from .progress import CancelFlag, ProgressFn, check_cancel, report


@dataclass
class TrainResult:
    bundle: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise NcmError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcmError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def _evaluate_batches(model: Any, x: np.ndarray, y: np.ndarray, spec: InputSpec, device: Any, batch: int) -> tuple[float, float]:
    import torch
    import torch.nn.functional as F

    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            xb = tiles_to_tensor(x[k:k + batch], spec, device)
            yb = torch.as_tensor(y[k:k + batch], device=device)
            logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            correct += (logits.argmax(1) == yb).sum().item()
    return correct / len(x), loss_sum / len(x)


def train(
    data: str | Path, out: str | Path, *, architecture: str = "efficientnet_b0", tile_size: int = 96,
    input_size: int | None = None, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
    optimizer: str = "adamw", weight_decay: float = 0.01, scheduler: str = "cosine", warmup_epochs: int = 1,
    val_fraction: float = 0.25, crops_per_image: int = 32, val_crops_per_image: int = 16,
    exclude_rows: tuple[int | None, int | None] | None = None, augment: bool = True, normalize: bool = False,
    pretrained: str | Path | None = None, patience: int | None = None, seed: int = 0, device: str = "auto",
    pixel_size: float | None = None, progress: ProgressFn | None = None, cancel: CancelFlag = None,
) -> TrainResult:
    """Train a classifier on ``data/<class>/*`` and write a bundle to ``out``.

    Parameters
    ----------
    tile_size
        Crop size in pixels of the source images; the same tile size is used
        when the bundle predicts mosaics.
    input_size
        Model input size in pixels (crops are resized); defaults to ``tile_size``.
    exclude_rows
        A band of rows ``(start, stop)`` to drop from every image before
        cropping, e.g. ``(-32, None)`` for a 32-row SEM information bar.
    normalize
        Standardise inputs with the training set's mean and std (off by
        default: the SEM study found it hurt).
    patience
        Stop when validation accuracy has not improved for this many epochs.
    """
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from .models import build_model

    t0 = time.monotonic()
    if epochs < 1 or batch_size < 1:
        raise NcmError(f"epochs and batch size must be positive (got {epochs}, {batch_size})")
    if tile_size < 8:
        raise NcmError(f"tile size must be at least 8 px, got {tile_size}")
    ds = scan_class_folders(data)
    if len(ds.class_names) < 2:
        raise NcmError(f"found only one class ({ds.class_names[0]!r}); a classifier needs at least two", ds.root)
    train_idx, val_idx = split_by_image(ds, val_fraction, seed)
    images = [load_image(f, exclude_rows) for f in ds.files]
    for f, img in zip(ds.files, images):
        if min(img.shape[:2]) < tile_size:
            raise NcmError(f"image is {img.shape[0]}x{img.shape[1]} px, smaller than the tile size "
                           f"{tile_size} px", f)
    channels = {1 if im.ndim == 2 else im.shape[2] for im in images}
    if len(channels) > 1:
        raise NcmError("dataset mixes grayscale and colour images; convert them to one kind", ds.root)
    in_chans = 1 if channels == {1} else 3
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    val_x, val_y = random_crops([images[i] for i in val_idx], [ds.labels[i] for i in val_idx],
                                tile_size, val_crops_per_image, np.random.default_rng(seed + 1), augment=False)
    mean = std = None
    if normalize:
        sample, _ = random_crops([images[i] for i in train_idx], [0] * len(train_idx), tile_size, 4, rng, False)
        s = sample.astype(np.float64) / (255.0 if sample.dtype == np.uint8 else 65535.0 if sample.dtype == np.uint16 else 1.0)
        axes = (0, 1, 2)
        m, sd = s.mean(axis=axes), s.std(axis=axes) + 1e-6
        mean, std = tuple(np.atleast_1d(m).tolist()), tuple(np.atleast_1d(sd).tolist())
        if in_chans == 3 and len(mean) == 1:
            mean, std = mean * 3, std * 3
    spec = InputSpec(in_chans=in_chans, input_size=(input_size or tile_size,) * 2, mean=mean, std=std)
    dev = resolve_device(device)
    model = build_model(architecture, len(ds.class_names), in_chans=in_chans, pretrained=pretrained).to(dev)
    opt = create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, (len(train_idx) * crops_per_image + batch_size - 1) // batch_size)
    sched, _ = create_scheduler_v2(opt, sched=scheduler, num_epochs=epochs, warmup_epochs=min(warmup_epochs, epochs - 1),
                                   warmup_lr=lr * 0.01, min_lr=lr * 0.01, updates_per_epoch=steps_per_epoch)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    total = epochs * steps_per_epoch
    history: list[dict[str, float]] = []
    best = (-1.0, float("inf"))
    best_state, best_epoch, since_best = None, 0, 0
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        x, y = random_crops([images[i] for i in train_idx], [ds.labels[i] for i in train_idx],
                            tile_size, crops_per_image, rng, augment)
        order = rng.permutation(len(x))
        loss_sum, correct = 0.0, 0
        for k in range(0, len(order), batch_size):
            check_cancel(cancel)
            b = order[k:k + batch_size]
            xb = tiles_to_tensor(x[b], spec, dev)
            yb = torch.as_tensor(y[b], device=dev)
            with torch.autocast(**amp):
                logits = model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            sched.step_update(num_updates=step)
            loss_sum += loss.item() * len(b)
            correct += (logits.argmax(1) == yb).sum().item()
            report(progress, step, total, f"epoch {epoch}/{epochs} loss {loss.item():.3f}")
        sched.step(epoch)
        val_acc, val_loss = _evaluate_batches(model, val_x, val_y, spec, dev, batch_size * 2)
        rec = {"epoch": epoch, "train_loss": loss_sum / len(x), "train_accuracy": correct / len(x),
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"],
               "seconds": time.monotonic() - t0}
        history.append(rec)
        report(progress, step, total, f"epoch {epoch}/{epochs} val accuracy {val_acc:.3f}")
        if (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch, since_best = (val_acc, val_loss), epoch, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    model.load_state_dict(best_state)
    cfg = BundleConfig(
        architecture=architecture, task="classify", class_names=ds.class_names, input=spec, tile_size=tile_size,
        pixel_size=pixel_size,
        training={"data": str(ds.root), "epochs": epochs, "epochs_run": len(history), "best_epoch": best_epoch,
                  "best_val_accuracy": best[0], "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                  "weight_decay": weight_decay, "scheduler": scheduler, "crops_per_image": crops_per_image,
                  "exclude_rows": None if exclude_rows is None else list(exclude_rows), "augment": augment,
                  "seed": seed, "pretrained": None if pretrained is None else str(pretrained),
                  "train_images": [str(ds.files[i].relative_to(ds.root)) for i in train_idx],
                  "val_images": [str(ds.files[i].relative_to(ds.root)) for i in val_idx], "history": history},
    )
    path = save_bundle(model.cpu(), cfg, out)
    return TrainResult(path, best_epoch, best[0], history, time.monotonic() - t0)
