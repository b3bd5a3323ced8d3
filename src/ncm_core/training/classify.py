"""Training a tile classifier, from class folders of frames or from a tile set.

Two sources feed the same loop:

* **class folders** of frames (``data/<class>/*``): each epoch draws fresh
  random crops of ``tile_size`` px from every training frame; validation uses
  fixed, seeded crops of frames held out before cropping;
* a **tile set** (``ncm crops`` or napari annotations, see
  :mod:`ncm_core.data.tilesets`): its ``train`` and ``val`` splits, already
  separated by source frame or painted region.

Tiles are resized to the model input, optionally flipped and turned by 90
degrees, and optionally standardised (off by default: the SEM study found it
hurt). Models, optimisers (Adam, AdamW, SGD, Lookahead-RAdam, ...) and
schedules come from timm's factories; validation metrics from scikit-learn.
The best epoch by the validation metric (not the training accuracy) is what
the bundle keeps, with early stopping. Every epoch writes a checkpoint
(safetensors + JSON, no pickle) to ``out/checkpoint``; the same call after an
interruption resumes from it and gives the same result as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ncm_core.models.bundle import BundleConfig, save_bundle
from ncm_core.data.datasets import augment_tiles, load_image, parse_augment, random_crops, scan_class_folders, split_by_image
from ncm_core.devices import AMP_MODES, amp_dtype, resolve_device
from ncm_core.errors import NcmError
from ncm_core.training.loop import Task, open_checkpoint, run_epochs
from ncm_core.models.preprocess import InputSpec, intensity_scale, tiles_to_tensor
from ncm_core.progress import CancelFlag, ProgressFn, report
from ncm_core.data.tilesets import is_tile_set, open_tile_set

MONITORS = ("accuracy", "balanced_accuracy", "loss")


@dataclass
class TrainResult:
    bundle: Path
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0  # epochs taken from a checkpoint




# ---------------------------------------------------------------------------------------- data sources
@dataclass
class _Data:
    """What the loop needs from a data source."""

    root: Path
    kind: str  # "frames" or "tiles"
    class_names: list[str]
    in_chans: int
    tile_size: int
    val_x: np.ndarray
    val_y: np.ndarray
    epoch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
    sample: Callable[[np.random.Generator], np.ndarray]  # tiles for normalisation statistics
    train_groups: list[str]
    val_groups: list[str]
    n_train: int  # tiles per epoch
    dtype: Any = np.uint8


def _channels(arrays: Iterable[np.ndarray], where: Any) -> int:
    chans = {1 if a.ndim == 2 else a.shape[2] for a in arrays}
    if len(chans) > 1:
        raise NcmError("dataset mixes grayscale and colour images; convert them to one kind", where)
    return 1 if chans == {1} else 3


def _frames(data: Path, tile_size: int, val_fraction: float, crops: int, val_crops: int,
            exclude_rows: Any, ops: tuple[str, ...], seed: int, holdout: bool = True) -> _Data:
    ds = scan_class_folders(data)
    if len(ds.class_names) < 2:
        raise NcmError(f"found only one class ({ds.class_names[0]!r}); a classifier needs at least two", ds.root)
    if holdout:
        train_idx, val_idx = split_by_image(ds, val_fraction, seed)
    else:
        train_idx, val_idx = list(range(len(ds.files))), []
    images = [load_image(f, exclude_rows) for f in ds.files]
    for f, img in zip(ds.files, images):
        if min(img.shape[:2]) < tile_size:
            raise NcmError(f"image is {img.shape[0]}x{img.shape[1]} px (without excluded rows), smaller than "
                           f"the tile size {tile_size} px", f)
    in_chans = _channels(images, ds.root)
    tr_img, tr_lab = [images[i] for i in train_idx], [ds.labels[i] for i in train_idx]
    if val_idx:
        val_x, val_y = random_crops([images[i] for i in val_idx], [ds.labels[i] for i in val_idx],
                                    tile_size, val_crops, np.random.default_rng(seed + 1), augment=False)
    else:
        val_x, val_y = np.zeros((0, tile_size, tile_size), images[0].dtype), np.zeros(0, np.int64)
    rel = lambda i: str(ds.files[i].relative_to(ds.root))  # noqa: E731
    return _Data(ds.root, "frames", ds.class_names, in_chans, tile_size, val_x, val_y,
                 epoch=lambda rng: random_crops(tr_img, tr_lab, tile_size, crops, rng, ops),
                 sample=lambda rng: random_crops(tr_img, [0] * len(tr_img), tile_size, 4, rng, False)[0],
                 train_groups=[rel(i) for i in train_idx], val_groups=[rel(i) for i in val_idx],
                 n_train=len(train_idx) * crops, dtype=images[0].dtype)


def _tiles(data: Path, tile_size: int | None, ops: tuple[str, ...], holdout: bool = True) -> _Data:
    ts = open_tile_set(data)
    if tile_size is not None and tile_size != ts.tile_size:
        raise NcmError(f"the tile set's tiles are {ts.tile_size} px; train with tile size {ts.tile_size} "
                       f"(or leave it unset), not {tile_size}", data)
    x, y, groups = ts.load("train")
    if len(x) == 0:
        raise NcmError("the tile set has no training tiles", data)
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise NcmError(f"the tile set's training split holds one class only ({ts.class_names[present[0]]!r})", data)
    vx, vy, vgroups = ts.load("val")
    if not holdout and len(vx):  # train on train + validation tiles (e.g. the final model after tuning)
        x, y, groups = np.concatenate([x, vx]), np.concatenate([y, vy]), groups + vgroups
        vx, vy, vgroups = vx[:0], vy[:0], []
    in_chans = _channels([x[0]] + ([vx[0]] if len(vx) else []), data)
    if len(vx) and vx.shape[1:] != x.shape[1:]:
        raise NcmError(f"validation tiles are {vx.shape[1:]} but training tiles {x.shape[1:]}", data)
    return _Data(ts.root, "tiles", ts.class_names, in_chans, ts.tile_size, vx, vy,
                 epoch=lambda rng: (augment_tiles(x, rng, ops), y),
                 sample=lambda rng: x[rng.permutation(len(x))[:512]],
                 train_groups=sorted(set(groups)), val_groups=sorted(set(vgroups)), n_train=len(x), dtype=x.dtype)


def _normalisation(data: _Data, rng: np.random.Generator) -> tuple[tuple[float, ...], tuple[float, ...]]:
    s = data.sample(rng).astype(np.float64) / intensity_scale(data.dtype)
    axes = tuple(range(3))
    m, sd = np.atleast_1d(s.mean(axis=axes)), np.atleast_1d(s.std(axis=axes)) + 1e-6
    if data.in_chans == 3 and len(m) == 1:
        m, sd = np.repeat(m, 3), np.repeat(sd, 3)
    return tuple(m.tolist()), tuple(sd.tolist())


# ---------------------------------------------------------------------------------------- loop parts
def validate(model: Any, x: np.ndarray, y: np.ndarray, spec: InputSpec, device: Any, batch: int,
             class_names: list[str]) -> dict[str, float]:
    """Validation loss, accuracy and balanced accuracy (scikit-learn) of ``model`` on tiles ``x``."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    model.eval()
    preds, loss_sum = [], 0.0
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            xb = tiles_to_tensor(x[k:k + batch], spec, device)
            yb = torch.as_tensor(y[k:k + batch], device=device)
            logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            preds.append(logits.argmax(1).cpu().numpy())
    p = np.concatenate(preds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from validation
        bal = balanced_accuracy_score(y, p)
    return {"val_loss": loss_sum / len(x), "val_accuracy": float(accuracy_score(y, p)),
            "val_balanced_accuracy": float(bal)}


def _score(rec: dict[str, float], monitor: str) -> tuple[float, float]:
    """Larger is better; ties on the metric go to the lower validation loss."""
    if monitor == "loss":
        return (-rec["val_loss"], 0.0)
    return (rec[f"val_{monitor}"], -rec["val_loss"])


def _fingerprint(settings: dict[str, Any], data: _Data) -> str:
    blob = json.dumps({"settings": settings, "train": data.train_groups, "val": data.val_groups,
                       "classes": data.class_names}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def train(
    data: str | Path, out: str | Path, *, architecture: str = "efficientnet_b0", tile_size: int | None = None,
    input_size: int | None = None, epochs: int = 10, batch_size: int = 32, lr: float = 1e-3,
    optimizer: str = "adamw", weight_decay: float = 0.01, momentum: float = 0.9, scheduler: str = "cosine",
    warmup_epochs: int = 1, val_fraction: float = 0.25, crops_per_image: int = 32, val_crops_per_image: int = 16,
    exclude_rows: tuple[int | None, int | None] | None = None, augment: bool | str | Iterable[str] = True,
    normalize: bool = False, pretrained: str | Path | None = None, patience: int | None = None,
    monitor: str = "accuracy", amp: str = "auto", resume: bool = True, ood: bool = True, holdout: bool = True,
    seed: int = 0,
    device: str = "auto", pixel_size: float | None = None, progress: ProgressFn | None = None,
    cancel: CancelFlag = None, on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a classifier on ``data`` (class folders of frames, or a tile set) and write a bundle to ``out``.

    Parameters
    ----------
    tile_size
        Pixels of the source images per tile (default: the tile set's, or 96
        for frames); prediction tiles mosaics at the same size.
    input_size
        Model input size in pixels (tiles are resized); defaults to ``tile_size``.
    optimizer
        Any timm optimizer name: ``adam``, ``adamw``, ``sgd`` (with ``momentum``),
        ``lookahead_radam``, ...
    exclude_rows
        For frames: a band of rows ``(start, stop)`` to drop before cropping,
        e.g. ``(-32, None)`` for a 32-row SEM information bar.
    augment
        ``True`` (flips and 90-degree turns), ``False``, or a selection such as
        ``"flip"`` or ``("rot90",)``.
    normalize
        Standardise inputs with the training set's mean and std.
    patience
        Stop when the validation metric has not improved for this many epochs.
    monitor
        Validation metric that picks the best epoch: ``accuracy``,
        ``balanced_accuracy`` or ``loss``.
    amp
        Mixed precision: ``auto`` (on for GPUs), ``off``, ``bf16`` or ``fp16``.
    resume
        Continue from ``out/checkpoint`` when it was written with the same
        settings and data (False: start again).
    holdout
        Hold images (frames) or the ``val`` split (tile sets) out for validation. ``False`` trains on
        everything for exactly ``epochs`` epochs (the last one is kept), e.g. the final model with
        parameters found by tuning.
    ood
        Fit the out-of-distribution detector (feature statistics of the
        training tiles, see :mod:`ncm_core.models.ood`) into the bundle.
    on_epoch
        Called with each epoch's record (losses, accuracies, learning rate):
        the napari widget draws its curves from it.
    """
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from ncm_core.models.factory import build_model, check_architecture

    t0 = time.monotonic()
    if epochs < 1 or batch_size < 1:
        raise NcmError(f"epochs and batch size must be positive (got {epochs}, {batch_size})")
    if monitor not in MONITORS:
        raise NcmError(f"monitor must be one of {', '.join(MONITORS)}, got {monitor!r}")
    if tile_size is not None and tile_size < 8:
        raise NcmError(f"tile size must be at least 8 px, got {tile_size}")
    check_architecture(architecture)
    ops = parse_augment(augment)
    src = Path(data).expanduser()
    if is_tile_set(src):
        d = _tiles(src, tile_size, ops, holdout)
    else:
        d = _frames(src, tile_size or 96, val_fraction, crops_per_image, val_crops_per_image, exclude_rows, ops, seed,
                    holdout)
    tile_size = d.tile_size
    if d.kind == "tiles" and exclude_rows is None:  # the band the crops avoided: evaluation skips it too
        band = open_tile_set(src).params.get("exclude_rows")
        exclude_rows = tuple(band) if band else None
    if len(d.val_x) == 0 and holdout:
        warnings.warn(f"{d.root}: no validation tiles; the last epoch is kept and no early stopping is done",
                      stacklevel=2)
    dev = resolve_device(device)
    dtype = amp_dtype(amp, dev)
    settings = {"architecture": architecture, "tile_size": tile_size, "input_size": input_size or tile_size,
                "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
                "weight_decay": weight_decay, "momentum": momentum, "scheduler": scheduler,
                "warmup_epochs": warmup_epochs, "val_fraction": val_fraction, "crops_per_image": crops_per_image,
                "val_crops_per_image": val_crops_per_image, "augment": list(ops), "normalize": normalize,
                "exclude_rows": None if exclude_rows is None else list(exclude_rows), "monitor": monitor,
                "pretrained": None if pretrained is None else str(pretrained), "amp": str(dtype), "seed": seed,
                "data": d.kind, "holdout": holdout}
    fp = _fingerprint(settings, d)
    out = Path(out).expanduser()
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, resume)

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mean = std = None
    if normalize:
        mean, std = _normalisation(d, rng)
    spec = InputSpec(in_chans=d.in_chans, input_size=(input_size or tile_size,) * 2, mean=mean, std=std)
    model = build_model(architecture, len(d.class_names), in_chans=d.in_chans, pretrained=pretrained).to(dev)
    opt_kw = {"momentum": momentum} if optimizer.lower().endswith(("sgd", "momentum", "nesterov")) else {}
    opt = create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay, **opt_kw)
    steps_per_epoch = max(1, (d.n_train + batch_size - 1) // batch_size)
    sched, _ = create_scheduler_v2(opt, sched=scheduler, num_epochs=epochs, warmup_epochs=min(warmup_epochs, epochs - 1),
                                   warmup_lr=lr * 0.01, min_lr=lr * 0.01, updates_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    def step(xb: Any, yb: Any, _rng: np.random.Generator) -> tuple[Any, Any]:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(xb)
        return F.cross_entropy(logits.float(), yb), logits

    task = Task(step=step, stats=lambda logits, yb: {"train_accuracy": (logits.argmax(1) == yb).sum().item()},
                validate=lambda: validate(model, d.val_x, d.val_y, spec, dev, batch_size * 2, d.class_names),
                score=lambda rec: _score(rec, monitor), has_validation=len(d.val_x) > 0, progress_key="val_accuracy")
    st = run_epochs(model=model, opt=opt, sched=sched, scaler=scaler, task=task, epoch_data=d.epoch,
                    to_input=lambda xb: tiles_to_tensor(xb, spec, dev),
                    to_target=lambda yb: torch.as_tensor(yb, device=dev), epochs=epochs, batch_size=batch_size,
                    steps_per_epoch=steps_per_epoch, rng=rng, fingerprint=fp, ckpt_dir=ckpt_dir, ckpt=ckpt,
                    patience=patience, progress=progress, cancel=cancel, on_epoch=on_epoch, t0=t0)
    history, best_epoch, resumed_from = st.history, st.best_epoch, st.resumed_from
    total = epochs * steps_per_epoch
    best_rec = history[best_epoch - 1]
    cfg = BundleConfig(
        architecture=architecture, task="classify", class_names=d.class_names, input=spec, tile_size=tile_size,
        pixel_size=pixel_size,
        training={**settings, "data": str(d.root), "data_kind": d.kind, "epochs_run": len(history),
                  "best_epoch": best_epoch, "best_val_accuracy": best_rec.get("val_accuracy"),
                  "train_images" if d.kind == "frames" else "train_groups": d.train_groups,
                  "val_images" if d.kind == "frames" else "val_groups": d.val_groups,
                  "exclude_rows": None if exclude_rows is None else list(exclude_rows), "history": history},
    )
    extra = None
    if ood:
        from ncm_core.models.ood import fit_ood

        report(progress, total, total, "fitting the out-of-distribution detector")
        ox, oy = d.epoch(np.random.default_rng(seed + 2))
        cfg.ood, extra = fit_ood(model, ox, oy, d.val_x, spec, dev, len(d.class_names))
    path = save_bundle(model.cpu(), cfg, out, extra=extra)
    import shutil

    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return TrainResult(path, best_epoch, float(best_rec.get("val_accuracy", float("nan"))), history,
                       time.monotonic() - t0, resumed_from)
