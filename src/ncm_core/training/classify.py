"""Training a tile classifier, from class folders of frames or from a tile set.

Two sources feed the same loop:

* **class folders** of frames (``data/<class>/*``): each epoch draws fresh
  random crops of ``tile_size`` px from every training frame; validation uses
  fixed, seeded crops of frames held out before cropping;
* a **tile set** (``ncm crops`` or napari annotations, see
  :mod:`ncm_core.data.tilesets`): its ``train`` and ``val`` splits, already
  separated by source frame or painted region.

Tiles are augmented and prepared as the training recipe says
(:mod:`ncm_core.training.recipe`: per-tile standardisation, session looks,
balanced classes, label smoothing and a weight average with ``"generalise"``,
the default; flips and quarter turns only with ``"basic"``), then resized to
the model input. Models, optimisers (Adam, AdamW, SGD, Lookahead-RAdam, ...) and
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.augment import parse_augment
from ncm_core.data.infobar import band_text, spec_text
from ncm_core.data.tilesets import is_tile_set, open_tile_set
from ncm_core.devices import amp_dtype, resolve_device
from ncm_core.errors import NcmError
from ncm_core.evaluation.report import frame_report, spread_text, validation_spread
from ncm_core.models.bundle import BundleConfig, save_bundle
from ncm_core.models.preprocess import STANDARD_PERCENTILES, InputSpec, tiles_to_tensor
from ncm_core.options import merge_options
from ncm_core.outputs import check_training_output, remove
from ncm_core.progress import CancelFlag, ProgressFn, report
from ncm_core.training.classify_data import (
    ClassifyData,
    frames_pixel_size,
    frames_source,
    normalisation,
    tile_set_source,
    trained_band,
)
from ncm_core.training.config import CLASSIFY_MONITORS, NO_VALIDATION, TrainConfig
from ncm_core.training.loop import LoopConfig, Task, open_checkpoint, run_epochs
from ncm_core.training.recipe import WeightAverage, ema_decay, recipe_settings
from ncm_core.training.result import TrainResult

MONITORS = CLASSIFY_MONITORS
__all__ = [
    "MONITORS",
    "TrainConfig",
    "TrainResult",
    "amp_dtype",
    "resolve_device",
    "train",
    "validate",
    "write_training_report",
]


# ---------------------------------------------------------------------------------------- loop parts
def validate(
    model: Any, x: np.ndarray, y: np.ndarray, spec: InputSpec, device: Any, batch: int, class_names: list[str]
) -> dict[str, float]:
    """Validation loss, accuracy and balanced accuracy (scikit-learn) of ``model`` on tiles ``x`` (plain
    cross-entropy, whatever the training loss's label smoothing)."""
    import torch
    import torch.nn.functional as F
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    model.eval()
    preds, loss_sum = [], 0.0
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            xb = tiles_to_tensor(x[k : k + batch], spec, device)
            yb = torch.as_tensor(y[k : k + batch], device=device)
            logits = model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
            preds.append(logits.argmax(1).cpu().numpy())
    p = np.concatenate(preds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class absent from validation
        bal = balanced_accuracy_score(y, p)
    return {
        "val_loss": loss_sum / len(x),
        "val_accuracy": float(accuracy_score(y, p)),
        "val_balanced_accuracy": float(bal),
    }


def _score(rec: dict[str, float], monitor: str) -> tuple[float, float]:
    """Larger is better; ties on the metric go to the lower validation loss."""
    if monitor == "loss":
        return (-rec["val_loss"], 0.0)
    return (rec[f"val_{monitor}"], -rec["val_loss"])


def _fingerprint(settings: dict[str, Any], data: ClassifyData) -> str:
    blob = json.dumps(
        {"settings": settings, "train": data.train_groups, "val": data.val_groups, "classes": data.class_names},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()


def train(
    data: str | Path,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train a classifier on ``data`` (class folders of frames, or a tile set) and write a bundle to ``out``.

    ``config`` (or keyword ``overrides`` of its fields, e.g. ``epochs=20, lr=3e-3``) holds the settings;
    see :class:`~ncm_core.training.config.TrainConfig`. Among them:

    tile_size
        Pixels of the source images per tile (default: the tile set's, or 96
        for frames); prediction tiles mosaics at the same size.
    optimizer
        Any timm optimizer name: ``adam``, ``adamw``, ``sgd`` (with ``momentum``),
        ``lookahead_radam``, ...
    exclude_rows
        For frames: a band of rows ``(start, stop)`` to drop before cropping,
        e.g. ``(-32, None)`` for a 32-row SEM information bar; ``"detect"`` (default) drops each
        frame's information bar where one is found, ``"auto"`` requires one, ``"none"`` drops nothing.
        The bundle remembers the band (the widest detected).
    augment
        ``True`` (the recipe's selection), ``False``, or a selection of ``flip``, ``rot90``, ``scale``,
        ``intensity``, ``blur``, ``noise``, ``jpeg`` such as ``"flip,rot90,jpeg"``.
    recipe
        ``"generalise"`` (default: per-tile standardisation, session-look augmentation, class-balanced
        sampling, label smoothing, weight average, test-time augmentation; see
        :mod:`ncm_core.training.recipe`) or ``"basic"``; ``standardize``, ``balanced``,
        ``label_smoothing``, ``ema``, ``tta`` override single parts.
    val_fraction
        Share of each class's frames held out for validation; 0 holds none out
        (the last epoch is kept and the bundle records so).
    monitor
        Validation metric that picks the best epoch: ``accuracy``,
        ``balanced_accuracy`` or ``loss``.
    resume
        Continue from ``out/checkpoint`` when it was written with the same
        settings and data (False: start again).
    holdout
        ``False`` trains on everything for exactly ``epochs`` epochs (the last one is kept).
    ood
        Fit the out-of-distribution detector into the bundle.

    ``on_epoch`` is called with each epoch's record (losses, accuracies, learning rate): the napari
    widget draws its curves from it.
    """
    c = merge_options(TrainConfig, config, overrides).validate()
    out = check_training_output(out, c.overwrite, (data, c.pretrained))
    return _train(Path(data).expanduser(), out, c, progress, cancel, on_epoch)


def _train(
    src: Path,
    out: Path,
    c: TrainConfig,
    progress: ProgressFn | None,
    cancel: CancelFlag,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> TrainResult:
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from ncm_core.models.factory import build_model, check_architecture

    t0 = time.monotonic()
    check_architecture(c.architecture)
    r = recipe_settings(c)
    ops = parse_augment(r["augment"], "classify")
    pixel_size, context_px = context_tile(src, c)
    if is_tile_set(src):
        d = tile_set_source(src, c.tile_size, ops, c.holdout, r["balanced"])
    else:
        d = frames_source(
            src,
            context_px or c.tile_size or 96,
            c.val_fraction,
            c.crops_per_image,
            c.val_crops_per_image,
            c.exclude_rows,
            ops,
            c.seed,
            c.holdout,
            r["balanced"],
        )
    tile_size, epochs, batch_size = d.tile_size, c.epochs, c.batch_size
    exclude_rows = trained_band(c.exclude_rows, d, src)  # the bundle remembers it: evaluation skips it too
    wanted = c.holdout and (d.kind == "tiles" or c.val_fraction > 0)
    if len(d.val_x) == 0 and wanted:
        warnings.warn(
            f"{d.root}: no validation tiles; the last epoch is kept and no early stopping is done", stacklevel=3
        )
    dev = resolve_device(c.device)
    dtype = amp_dtype(c.amp, dev)
    input_size = c.input_size or tile_size
    settings = {
        "architecture": c.architecture,
        "tile_size": tile_size,
        "input_size": input_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": c.lr,
        "optimizer": c.optimizer,
        "weight_decay": c.weight_decay,
        "momentum": c.momentum,
        "scheduler": c.scheduler,
        "warmup_epochs": c.warmup_epochs,
        "val_fraction": c.val_fraction,
        "crops_per_image": c.crops_per_image,
        "val_crops_per_image": c.val_crops_per_image,
        "augment": list(ops),
        "normalize": c.normalize,
        "exclude_rows": None if exclude_rows is None else list(exclude_rows),
        "monitor": c.monitor,
        "pretrained": None if c.pretrained is None else str(c.pretrained),
        "amp": str(dtype),
        "seed": c.seed,
        "data": d.kind,
        "holdout": c.holdout,
        "recipe": c.recipe,
        "standardize": bool(r["standardize"]),
        "balanced": bool(r["balanced"]),
        "label_smoothing": float(r["label_smoothing"]),
        "ema": bool(r["ema"]),
        "ema_decay": c.ema_decay,
        "tta": bool(r["tta"]),
        "context_um": c.context_um,
    }
    fp = _fingerprint(settings, d)
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, c.resume)

    rng = np.random.default_rng(c.seed)
    torch.manual_seed(c.seed)
    mean = std = None
    standardize = STANDARD_PERCENTILES if r["standardize"] else None
    if c.normalize:
        mean, std = normalisation(d, rng, standardize)
    spec = InputSpec(in_chans=d.in_chans, input_size=(input_size,) * 2, mean=mean, std=std, standardize=standardize)
    model = build_model(c.architecture, len(d.class_names), in_chans=d.in_chans, pretrained=c.pretrained).to(dev)
    opt_kw = {"momentum": c.momentum} if c.optimizer.lower().endswith(("sgd", "momentum", "nesterov")) else {}
    opt = create_optimizer_v2(model, opt=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, **opt_kw)
    steps_per_epoch = max(1, (d.n_train + batch_size - 1) // batch_size)
    sched, _ = create_scheduler_v2(
        opt,
        sched=c.scheduler,
        num_epochs=epochs,
        warmup_epochs=min(c.warmup_epochs, epochs - 1),
        warmup_lr=c.lr * 0.01,
        min_lr=c.lr * 0.01,
        updates_per_epoch=steps_per_epoch,
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    smoothing = float(r["label_smoothing"])
    ema = WeightAverage(model, ema_decay(c.ema_decay, steps_per_epoch)) if r["ema"] else None
    judged = model if ema is None else ema.module  # what validation sees (and the bundle keeps)

    def step(xb: Any, yb: Any, _rng: np.random.Generator) -> tuple[Any, Any]:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(xb)
        return F.cross_entropy(logits.float(), yb, label_smoothing=smoothing), logits

    validated = len(d.val_x) > 0
    task = Task(
        step=step,
        stats=lambda logits, yb: {"train_accuracy": (logits.argmax(1) == yb).sum().item()},
        validate=lambda: validate(judged, d.val_x, d.val_y, spec, dev, batch_size * 2, d.class_names),
        score=lambda rec: _score(rec, c.monitor),
        has_validation=validated,
        progress_key="val_accuracy",
        ema=ema,
    )
    loop = LoopConfig(
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        patience=c.patience or None,
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
        epoch_data=d.epoch,
        to_input=lambda xb: tiles_to_tensor(xb, spec, dev),
        to_target=lambda yb: torch.as_tensor(yb, device=dev),
        rng=rng,
        loop=loop,
        progress=progress,
        cancel=cancel,
        on_epoch=on_epoch,
    )
    history, best_epoch = st.history, st.best_epoch
    total = epochs * steps_per_epoch
    best_rec = history[best_epoch - 1]
    cfg = BundleConfig(
        architecture=c.architecture,
        task="classify",
        class_names=d.class_names,
        input=spec,
        tile_size=tile_size,
        pixel_size=pixel_size,
        training={
            **settings,
            "data": str(d.root),
            "data_kind": d.kind,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "best_val_accuracy": best_rec.get("val_accuracy"),
            "kept_epoch": f"best validation {c.monitor}" if validated else NO_VALIDATION,
            "train_images" if d.kind == "frames" else "train_groups": d.train_groups,
            "val_images" if d.kind == "frames" else "val_groups": d.val_groups,
            "exclude_rows": None if exclude_rows is None else list(exclude_rows),
            "exclude_rows_setting": spec_text(c.exclude_rows),
            "info_bars": {k: band_text(b) for k, b in (d.bands or {}).items() if b is not None}
            if isinstance(c.exclude_rows, str)
            else {},
            "history": history,
            "validation_spread": validation_spread(history),
        },
    )
    if validated and d.val_sources:
        report(progress, total, total, "scoring the held-out frames")
        cfg.training["validation_report"] = held_out_report(model, d, spec, dev, batch_size * 2, r["tta"])
    extra = None
    if c.ood:
        from ncm_core.models.ood import fit_ood

        report(progress, total, total, "fitting the out-of-distribution detector")
        ox, oy = d.epoch(np.random.default_rng(c.seed + 2))
        cfg.ood, extra = fit_ood(model, ox, oy, d.val_x, spec, dev, len(d.class_names))
    path = save_bundle(model.cpu(), cfg, out, extra=extra)
    remove(ckpt_dir)
    return TrainResult(
        path,
        best_epoch,
        float(best_rec.get("val_accuracy", float("nan"))),
        "val_accuracy",
        history,
        time.monotonic() - t0,
        st.resumed_from,
    )


def context_tile(src: Path, c: TrainConfig) -> tuple[float | None, int | None]:
    """The pixel size the bundle records and, with ``context_um``, the crop side in px that covers it
    (the pixel size from the config or the frames' metadata)."""
    if c.context_um is None:
        if c.pixel_size is None and is_tile_set(src):  # crops cut by ncm crops --context-um know it
            return open_tile_set(src).params.get("pixel_size"), None
        return c.pixel_size, None
    if is_tile_set(src):
        raise NcmError(
            "--context-um applies to class folders of frames; a tile set's crops were cut already "
            "(cut them with ncm crops --context-um)",
            src,
        )
    ps = c.pixel_size or frames_pixel_size(src)
    if not ps:
        raise NcmError(
            "--context-um needs the pixel size: the frames' metadata does not give it; "
            "give --pixel-size (micrometres per pixel)",
            src,
        )
    px = round(c.context_um / ps)
    if px < 8:
        raise NcmError(f"a context of {c.context_um:g} um is only {px} px at {ps:g} um per pixel", src)
    return ps, px


def held_out_report(model: Any, d: ClassifyData, spec: InputSpec, dev: Any, batch: int, tta: bool) -> dict[str, Any]:
    """Crop and frame metrics of the validation tiles with the kept weights (:func:`frame_report`)."""
    import torch

    from ncm_core.inference.classify import tta_views

    model.eval()
    probs = []
    with torch.inference_mode():
        for k in range(0, len(d.val_x), batch):
            xb = tiles_to_tensor(d.val_x[k : k + batch], spec, dev)
            views = tta_views(xb) if tta else [xb]
            probs.append(sum(torch.softmax(model(v).float(), 1) for v in views).cpu().numpy() / len(views))
    return frame_report(np.concatenate(probs), d.val_y, list(d.val_sources or []), d.class_names)


def write_training_report(bundle: str | Path, out: str | Path) -> list[Path]:
    """The training report of a bundle as figures in folder ``out``: ``training_curves.png`` (titled with
    the validation spread) and, with held-out frames, ``validation_frames_confusion.png`` (the frame-level
    confusion matrix). Returns the files written."""
    from ncm_core.models.bundle import read_bundle_config
    from ncm_core.viz.prediction import confusion_matrix_figure
    from ncm_core.viz.training import training_curves_figure

    t = read_bundle_config(bundle).training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [training_curves_figure(t["history"], out / "training_curves.png", spread_text(t.get("validation_spread")))]
    rep = t.get("validation_report")
    if rep:
        f = rep["frames"]
        files.append(
            confusion_matrix_figure(
                f["confusion_matrix"],
                f["class_names"],
                out / "validation_frames_confusion.png",
                title=f"Held-out frames: accuracy {f['accuracy']:.1%} (n = {f['n']})",
            )
        )
    return files
