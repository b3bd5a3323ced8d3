"""Self-supervised pretraining of a backbone on the user's own unlabelled images (``ncm pretrain``).

No ImageNet weights can be downloaded here, and the user's frames are the best source of features for
them anyway: :func:`pretrain` trains any timm backbone with a method of lightly (SimCLR, BYOL, VICReg) on
random crops of frames and on tiles read lazily from mosaics, and writes ``OUT/backbone.safetensors``
(+ ``backbone.json``), which ``ncm train --pretrained`` starts from. With a labelled ``probe`` folder,
the k-NN accuracy of the backbone's features on held-out frames is measured before training and after
every epoch. Every epoch writes a checkpoint (safetensors + JSON) to ``OUT/checkpoint``; the same call
resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.infobar import band_text, spec_text
from ncm_core.devices import amp_dtype, resolve_device
from ncm_core.errors import NcmError
from ncm_core.models.backbone import SIDECAR, save_backbone
from ncm_core.models.checkpoint import save_checkpoint
from ncm_core.models.preprocess import InputSpec, tiles_to_tensor
from ncm_core.options import merge_options
from ncm_core.outputs import check_training_output, remove
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report
from ncm_core.training.config import PretrainConfig
from ncm_core.training.loop import open_checkpoint
from ncm_core.training.pretrain_data import pretrain_source, probe_crops

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]


@dataclass
class PretrainResult:
    """``backbone``: the weights file for ``train(..., pretrained=...)``; ``knn_initial``/``knn``: k-NN
    accuracy of the probe before training and after the last epoch (None without a probe)."""

    backbone: Path
    out: Path
    history: list[dict[str, float]] = field(default_factory=list)
    knn_initial: float | None = None
    knn: float | None = None
    seconds: float = 0.0
    resumed_from: int = 0

    @property
    def images_per_second(self) -> float:
        """Crops per second of training (two views each), over all epochs."""
        t = sum(r["train_seconds"] for r in self.history)
        return sum(r["crops"] for r in self.history) / t if t else float("nan")


def pretrain(
    data: str | Path | list[str | Path],
    out: str | Path,
    config: PretrainConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> PretrainResult:
    """Pretrain ``config.architecture`` on the images under ``data`` (folders, frames, mosaics) into ``out``.

    ``config`` or keyword ``overrides`` of :class:`~ncm_core.training.config.PretrainConfig`
    (``method="byol", epochs=30, input_size=112, probe="labelled/"``, ...). ``on_epoch`` receives each
    epoch's record (loss, crops per second, ``knn_accuracy`` with a probe).
    """
    from ncm_core.models.factory import check_architecture

    c = merge_options(PretrainConfig, config, overrides).validate()
    check_architecture(c.architecture)
    inputs = [data] if isinstance(data, (str, Path)) else list(data)
    out = check_training_output(out, c.overwrite, (*inputs, c.probe))
    ckpt_state = (out / "checkpoint" / "state.json").exists()
    if (out / SIDECAR).is_file() and not ckpt_state and not c.overwrite:
        raise NcmError(
            "holds a finished pretrained backbone; choose another folder or pass --overwrite to replace it "
            "(API: overwrite=True)",
            out,
        )
    return _pretrain(inputs, out, c, progress, cancel, on_epoch)


def _fingerprint(c: PretrainConfig, names: list[str], dtype: str) -> str:
    settings = {k: str(v) for k, v in vars(c).items() if k not in ("resume", "overwrite", "device")}
    blob = json.dumps({"settings": settings, "images": names, "amp": dtype}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def _pretrain(
    inputs: list[Any],
    out: Path,
    c: PretrainConfig,
    progress: ProgressFn | None,
    cancel: CancelFlag,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> PretrainResult:
    import timm
    import torch

    from ncm_core.training.ssl import augment_views, embed, knn_accuracy, make_method

    t0 = time.monotonic()
    d = pretrain_source(inputs, c.crop_size, c.crops_per_image, c.tiles_per_mosaic, c.exclude_rows, c.batch_size)
    probe = None
    if c.probe is not None:
        px, py, pg, _ = probe_crops(c.probe, c.crop_size, c.probe_crops, c.exclude_rows, c.seed + 1)
        probe = (px, py, pg)
    dev = resolve_device(c.device)
    dtype = amp_dtype(c.amp, dev)
    size = c.input_size or c.crop_size
    crop_spec = InputSpec(in_chans=d.in_chans, input_size=(c.crop_size,) * 2)
    view_spec = InputSpec(in_chans=d.in_chans, input_size=(size, size))
    fp = _fingerprint(c, d.names, str(dtype))
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, c.resume)

    rng = np.random.default_rng(c.seed)
    torch.manual_seed(c.seed)
    backbone = timm.create_model(c.architecture, pretrained=False, num_classes=0, in_chans=d.in_chans)
    model = make_method(c.method, backbone, backbone.num_features).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    steps = d.per_epoch // c.batch_size
    total = c.epochs * steps
    history: list[dict[str, float]] = []
    step, start, knn0 = 0, 1, None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        history, step, start, knn0 = ckpt["history"], ckpt["step"], ckpt["epoch"] + 1, ckpt["knn_initial"]
        for rec in history:
            if on_epoch is not None:
                on_epoch(rec)
    elif probe is not None:
        report(progress, 0, total, "k-NN probe of the untrained backbone")
        knn0 = knn_accuracy(embed(model.backbone, probe[0], view_spec, dev), probe[1], probe[2], c.knn)
    warmup = min(steps, total // 10)
    elapsed0 = history[-1]["seconds"] if history else 0.0
    for epoch in range(start, c.epochs + 1):
        check_cancel(cancel)
        model.train()
        t_epoch = time.monotonic()
        crops = d.epoch(rng)
        order = rng.permutation(len(crops))
        loss_sum, n = 0.0, 0
        for k in range(steps):
            check_cancel(cancel)
            b = order[k * c.batch_size : (k + 1) * c.batch_size]
            g = torch.Generator().manual_seed(int(rng.integers(2**62)))
            x = tiles_to_tensor(crops[b], crop_spec, dev)
            v1, v2 = augment_views(x, size, g), augment_views(x, size, g)
            lr = c.lr * ((step + 1) / warmup if step < warmup else 0.5 * (1 + np.cos(np.pi * step / max(total, 1))))
            for group in opt.param_groups:
                group["lr"] = lr
            with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model.loss(v1, v2)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            model.after_step(step, total)
            loss_sum, n = loss_sum + loss.item() * len(b), n + len(b)
            report(progress, step, total, f"epoch {epoch}/{c.epochs} loss {loss.item():.3f}")
        train_seconds = time.monotonic() - t_epoch
        rec: dict[str, float] = {
            "epoch": epoch,
            "loss": loss_sum / max(n, 1),
            "lr": lr,
            "crops": n,
            "train_seconds": train_seconds,
            "crops_per_second": n / train_seconds if train_seconds else float("nan"),
        }
        if probe is not None:
            rec["knn_accuracy"] = knn_accuracy(embed(model.backbone, probe[0], view_spec, dev), *probe[1:], c.knn)
        rec["seconds"] = elapsed0 + time.monotonic() - t0
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        knn = f" k-NN {rec['knn_accuracy']:.3f}" if "knn_accuracy" in rec else ""
        report(progress, step, total, f"epoch {epoch}/{c.epochs} loss {rec['loss']:.3f}{knn}")
        save_checkpoint(
            ckpt_dir,
            {
                "fingerprint": fp,
                "epoch": epoch,
                "step": step,
                "history": history,
                "knn_initial": knn0,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            },
        )
    meta = {
        "architecture": c.architecture,
        "in_chans": d.in_chans,
        "timm": {"model": c.architecture, "num_classes": 0, "in_chans": d.in_chans, "features_only_keys": True},
        "method": c.method,
        "epochs": c.epochs,
        "input_size": size,
        "crop_size": c.crop_size,
        "dtype": str(np.dtype(d.dtype)),
        "exclude_rows_setting": spec_text(c.exclude_rows),
        "info_bars": {k: band_text(b) for k, b in d.bands.items() if b is not None},
        "images": len(d.names),
        "knn_initial": knn0,
        "knn": history[-1].get("knn_accuracy") if history else None,
        "settings": {k: str(v) for k, v in vars(c).items()},
        "history": history,
    }
    path = save_backbone(model.backbone.cpu(), meta, out)
    remove(ckpt_dir)
    return PretrainResult(
        path,
        out,
        history,
        knn0,
        meta["knn"],
        time.monotonic() - t0,
        start - 1,
    )
