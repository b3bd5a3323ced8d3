"""Fitting one regressor on given training and validation crops (Deeg et al., Batteries 2024).

* the model ``ncm_vgg`` (:mod:`ncm_core.models.nets`) or any timm backbone with a linear regression
  head; targets are standardised inside (the bundle stores mean and std and predictions come back in
  the CSV's units);
* loss MAPE (also MAE, MSE, Huber), computed on the values in their units for MAPE and on
  standardised values otherwise (:mod:`ncm_core.training.losses`);
* Lookahead around RAdam (timm's ``lookahead_radam``: sync period k=6, alpha=0.5) with a warm-up over
  the first 10 % of steps from 1e-5 to the peak rate, then a cosine decay back to 1e-5 (per step);
* early stopping that keeps the best epoch's weights by validation MAPE (no validation crops: the last
  epoch is kept);
* Keras-style L1/L2 weight penalties, optional FGSM adversarial training with noise up to a set % of
  the mean pixel value, and random shifts, rotations and mirror images with mirror fill at the edges
  (:func:`ncm_core.data.augment.augment_batch`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.augment import augment_batch, parse_augment
from ncm_core.errors import NcmError
from ncm_core.evaluation.regression import regression_metrics
from ncm_core.options import merge_options
from ncm_core.outputs import remove
from ncm_core.progress import CancelFlag, ProgressFn, report
from ncm_core.training.config import NO_VALIDATION, RegressConfig
from ncm_core.training.losses import regression_loss
from ncm_core.training.regression_data import RegressionData, standardise
from ncm_core.training.result import TrainResult


def _fingerprint(settings: dict[str, Any], data: RegressionData, train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    blob = json.dumps(
        {
            "settings": settings,
            "train": [data.files[i] for i in train_idx],
            "val": [data.files[i] for i in val_idx],
            "targets": data.target_names,
            "y": np.round(data.y, 6).tolist(),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()


def _predict_z(model: Any, x: Any, dev: Any, batch: int) -> np.ndarray:
    """Standardised predictions of inputs ``x``, or of ``(x, descriptors)`` for a model that reads both."""
    import torch

    model.eval()
    out = []
    parts = x if isinstance(x, tuple) else (x,)
    with torch.inference_mode():
        for k in range(0, len(parts[0]), batch):
            out.append(model(*(p[k : k + batch].to(dev) for p in parts)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fit_regressor(
    data: RegressionData,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    out: str | Path,
    config: RegressConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    extra_training: dict[str, Any] | None = None,
    reuse: bool = False,
    **overrides: Any,
) -> TrainResult:
    """Train on ``data[train_idx]``, stop early on ``data[val_idx]`` and write a bundle to ``out``.

    No validation crops: no early stopping, the last epoch is kept (and the bundle says so).
    ``model`` (of the config) ``hybrid`` trains :class:`~ncm_core.models.hybrid.HybridRegressor` on the crops
    and their descriptors; ``descriptors`` fits the descriptor model without epochs
    (:mod:`ncm_core.training.regression_models`); ``cnn`` and ``auto`` train the CNN alone.

    Settings: ``config`` or keyword ``overrides`` of :class:`~ncm_core.training.config.RegressConfig` fields.
    ``reuse``: when ``out`` already holds a bundle trained with the same settings and data, return it
    instead of training again (cross-validation resumes fold by fold this way).
    """
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from ncm_core.devices import amp_dtype, resolve_device
    from ncm_core.io.mosaic import read_json
    from ncm_core.models.bundle import CONFIG, BundleConfig, save_bundle
    from ncm_core.models.factory import build_model, check_architecture
    from ncm_core.models.preprocess import InputSpec
    from ncm_core.training.loop import LoopConfig, Task, open_checkpoint, run_epochs
    from ncm_core.training.regression_models import (
        data_descriptors,
        descriptor_info,
        fit_descriptor_head,
        fit_descriptor_model,
        target_scaling,
    )

    t0 = time.monotonic()
    c = merge_options(RegressConfig, config, overrides).validate()
    if c.model == "descriptors":
        return fit_descriptor_model(data, train_idx, val_idx, out, extra_training)
    hybrid = c.model == "hybrid"
    architecture, epochs, batch_size, lr, loss, normalize = (
        c.architecture,
        c.epochs,
        c.batch_size,
        c.lr,
        c.loss,
        c.normalize,
    )
    adversarial, l1, l2, seed, drop_rate, pretrained = c.adversarial, c.l1, c.l2, c.seed, c.drop_rate, c.pretrained
    loss_fn = regression_loss(loss)
    ops = parse_augment(c.augment, "regress")
    check_architecture(architecture)
    if len(train_idx) < 2:
        raise NcmError(f"need at least 2 training crops, got {len(train_idx)}", data.root)
    dev = resolve_device(c.device)
    dtype = amp_dtype(c.amp, dev)
    names = data.target_names
    y_train = data.y[train_idx]
    t_mean, t_std = target_scaling(y_train)  # a constant target: scaled by its size
    settings = {
        "task": "regress",
        "model": "hybrid" if hybrid else "cnn",
        "architecture": architecture,
        "input_size": list(data.x.shape[-2:]),
        "crop_size": list(data.crop_size),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "min_lr": c.min_lr,
        "warmup": c.warmup,
        "optimizer": c.optimizer,
        "scheduler": c.scheduler,
        "weight_decay": c.weight_decay,
        "l1": l1,
        "l2": l2,
        "loss": loss,
        "monitor": c.monitor,
        "patience": c.early_stopping,
        "augment": list(ops),
        "max_shift": c.max_shift,
        "max_rotate": c.max_rotate,
        "adversarial": adversarial,
        "normalize": normalize,
        "drop_rate": drop_rate,
        "pretrained": None if pretrained is None else str(pretrained),
        "amp": str(dtype),
        "seed": seed,
    }
    fp = _fingerprint(settings, data, train_idx, val_idx)
    out = Path(out).expanduser()
    if reuse and (out / CONFIG).is_file():
        done = read_json(out / CONFIG).get("training", {})
        if done.get("fingerprint") == fp:
            hist = done.get("history", [])
            return TrainResult(
                out,
                int(done.get("best_epoch", 0)),
                float(done.get("best_val_mape") or "nan"),
                "val_mape",
                hist,
                0.0,
                len(hist),
            )
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, c.resume)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    x_all = data.x
    mean = std = None
    if normalize:
        xt = x_all[torch.as_tensor(train_idx)]
        mean = tuple(xt.mean(dim=(0, 2, 3)).tolist())
        std = tuple((xt.std(dim=(0, 2, 3)) + 1e-6).tolist())
    spec = InputSpec(in_chans=data.in_chans, input_size=tuple(int(v) for v in x_all.shape[-2:]), mean=mean, std=std)
    m_t = torch.as_tensor(mean or (0.0,) * data.in_chans).view(1, -1, 1, 1).to(dev)
    s_t = torch.as_tensor(std or (1.0,) * data.in_chans).view(1, -1, 1, 1).to(dev)
    kw = {} if drop_rate is None else {"drop_rate": drop_rate}
    feats = None
    if hybrid:  # the CNN's pooled features and the descriptors, added to a fitted descriptor model
        feats, d_names = data_descriptors(data)
        kw = {"n_descriptors": len(d_names), "backbone": architecture, "backbone_kwargs": kw}
        model = build_model("ncm_hybrid", len(names), in_chans=data.in_chans, pretrained=pretrained, **kw)
        # the descriptor model is fitted on the validation crops too, as the descriptor-only model is: the
        # validation then favours keeping it (epoch 0) unless the CNN adds clearly more
        fit = np.concatenate([train_idx, val_idx]).astype(np.int64)
        fit_descriptor_head(model.descriptors, feats[fit], (data.y[fit] - t_mean) / t_std)
        model = model.to(dev)
        feats = torch.as_tensor(feats, dtype=torch.float32)
    else:
        model = build_model(architecture, len(names), in_chans=data.in_chans, pretrained=pretrained, **kw).to(dev)
    opt = create_optimizer_v2(model, opt=c.optimizer, lr=lr, weight_decay=c.weight_decay)
    steps_per_epoch = max(1, len(train_idx) // batch_size + (len(train_idx) % batch_size >= 2))
    # linear warm-up over the first ``warmup`` share of the steps, then the decay over the rest (per step)
    sched, _ = create_scheduler_v2(
        opt,
        sched=c.scheduler,
        num_epochs=epochs * (1 - c.warmup),
        warmup_epochs=c.warmup * epochs,
        warmup_prefix=True,
        warmup_lr=c.min_lr,
        min_lr=c.min_lr,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    tm = torch.as_tensor(t_mean, dtype=torch.float32, device=dev)
    ts = torch.as_tensor(t_std, dtype=torch.float32, device=dev)
    penalised = [p for n, p in model.named_parameters() if p.ndim > 1]  # weights, not biases or norms

    def forward(xb: Any, db: Any = None) -> Any:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return (model(xb) if db is None else model(xb, db)).float()

    def step(xb: Any, zb: Any, rng_: np.random.Generator) -> tuple[Any, Any]:
        xb, db = xb if isinstance(xb, tuple) else (xb, None)  # a hybrid's batch: crops and descriptors
        if adversarial > 0:  # FGSM: a step along the sign of the input gradient, up to a % of the mean pixel
            xb = xb.detach().requires_grad_(True)
            zp = forward(xb, db)
            clean = loss_fn(zp, zb, tm, ts)
            (g,) = torch.autograd.grad(clean, xb, retain_graph=True)
            raw_mean = (xb.detach() * s_t + m_t).mean()
            eps = torch.as_tensor(rng_.uniform(0, adversarial / 100, len(xb)), dtype=xb.dtype, device=dev)
            x_adv = (xb + (eps * raw_mean / s_t.mean()).view(-1, 1, 1, 1) * g.sign()).detach()
            value = 0.5 * (clean + loss_fn(forward(x_adv, db), zb, tm, ts))
        else:
            zp = forward(xb, db)
            value = loss_fn(zp, zb, tm, ts)
        if l1:
            value = value + l1 * sum(p.abs().sum() for p in penalised)
        if l2:
            value = value + l2 * sum((p**2).sum() for p in penalised)
        return value, zp.detach()

    def to_input(idx: np.ndarray) -> Any:
        return standardise(x_all[torch.as_tensor(idx)], spec).to(dev)

    def stats(zp: Any, zb: Any) -> dict[str, float]:
        p, t = zp * ts + tm, zb * ts + tm
        return {"train_mape": float(100 * ((p - t).abs() / t.abs().clamp_min(1e-12)).mean(1).sum())}

    z_all = (data.y - t_mean) / t_std

    def with_descriptors(x: Any, idx: np.ndarray) -> Any:
        return x if feats is None else (x, feats[torch.as_tensor(idx)].to(x.device))

    x_val = with_descriptors(to_input(val_idx).cpu(), val_idx) if len(val_idx) else None
    z_val = torch.as_tensor(z_all[val_idx], dtype=torch.float32)

    def validate() -> dict[str, float]:
        zp = _predict_z(model, x_val, dev, batch_size * 2)
        with torch.no_grad():
            vloss = float(loss_fn(torch.as_tensor(zp), z_val, tm.cpu(), ts.cpu()))
        met = regression_metrics(data.y[val_idx], zp * t_std + t_mean, names)
        return {"val_loss": vloss, "val_mape": met["mape"], "val_mae": met["mae"], "val_r2": met["r2"]}

    def score(rec: dict[str, float]) -> tuple[float, float]:
        return (-rec["val_loss"], 0.0) if c.monitor == "loss" else (-rec["val_mape"], -rec["val_loss"])

    def epoch_data(rng_: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return train_idx, z_all[train_idx]

    def to_batch(idx: np.ndarray) -> Any:
        return with_descriptors(augment_batch(to_input(idx), rng, ops, c.max_shift, c.max_rotate), idx)

    task = Task(
        step=step,
        stats=stats,
        validate=validate,
        score=score,
        has_validation=len(val_idx) > 0,
        progress_key="val_mape",
        min_batch=2,
    )
    loop = LoopConfig(
        epochs=epochs,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        patience=c.early_stopping,
        start_is_candidate=hybrid,
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
        epoch_data=epoch_data,
        to_input=to_batch,
        to_target=lambda zb: torch.as_tensor(zb, dtype=torch.float32, device=dev),
        rng=rng,
        loop=loop,
        progress=progress,
        cancel=cancel,
        on_epoch=on_epoch,
    )
    best = st.history[st.best_epoch - 1] if st.best_epoch else (st.start_record or {})
    c_rates = data.targets.c_rates()
    cfg = BundleConfig(
        architecture="ncm_hybrid" if hybrid else architecture,
        task="regress",
        target_names=list(names),
        input=spec,
        tile_size=int(data.crop_size[1]),
        pixel_size=data.pixel_size,
        model_kwargs=kw,
        regression={
            "mean": t_mean.tolist(),
            "std": t_std.tolist(),
            "loss": loss,
            "crop_size": list(data.crop_size),
            "c_rates": c_rates,
            "groups": list(data.groups),
            "model": "hybrid" if hybrid else "cnn",
            **({"descriptors": descriptor_info(data, train_idx)} if hybrid else {}),
        },
        training={
            **settings,
            **(extra_training or {}),
            "data": str(data.root),
            "targets": str(data.targets.path),
            "fingerprint": fp,
            "epochs_run": len(st.history),
            "best_epoch": st.best_epoch,
            "best_val_mape": best.get("val_mape"),
            "kept_epoch": (
                NO_VALIDATION
                if not len(val_idx)
                else f"best validation {c.monitor}"
                + (": none beat the descriptor model it starts from" if hybrid and not st.best_epoch else "")
            ),
            "train_sources": sorted({data.sources[i] for i in train_idx}),
            "val_sources": sorted({data.sources[i] for i in val_idx}),
            "history": st.history,
        },
    )
    extra = None
    if c.ood and not hybrid:  # the OOD detector reads a CNN's features (a hybrid has the extrapolation check)
        from ncm_core.models.ood import fit_ood

        report(progress, 1, 1, "fitting the out-of-distribution detector")
        xt = to_input(train_idx).cpu().permute(0, 2, 3, 1).numpy()
        xv = to_input(val_idx).cpu().permute(0, 2, 3, 1).numpy() if len(val_idx) else xt[:0]
        raw = InputSpec(in_chans=data.in_chans, input_size=spec.input_size)  # already normalised above
        cfg.ood, extra = fit_ood(model, xt, np.zeros(len(xt), np.int64), xv, raw, dev, 1)
    path = save_bundle(model.cpu(), cfg, out, extra=extra)
    remove(ckpt_dir)
    return TrainResult(
        path,
        st.best_epoch,
        float(best.get("val_mape", float("nan"))),
        "val_mape",
        st.history,
        time.monotonic() - t0,
        st.resumed_from,
    )
