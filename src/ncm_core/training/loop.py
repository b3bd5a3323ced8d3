"""The epoch loop shared by classification and regression training.

It owns what both tasks need to get right in the same way: mixed precision
with loss scaling, per-step scheduling, cancellation and progress, the best
epoch by a validation score with early stopping (the best weights are what the
caller gets back; with a weight average, ``Task.ema``, its averaged weights),
and a checkpoint after every epoch (safetensors + JSON, see
:mod:`ncm_core.models.checkpoint`) from which the same call resumes to the same
result. The task supplies the loss of a batch, running training statistics,
validation and the score.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.checkpoint import load_checkpoint, save_checkpoint
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report


@dataclass
class Task:
    """What differs between tasks.

    ``step(xb, yb, rng)`` returns the loss to back-propagate and the outputs;
    ``stats(outputs, yb)`` returns sums (divided by the epoch's tile count in
    the record); ``validate()`` returns validation metrics (``{}`` when there
    is no validation data); ``score(rec)`` is larger-is-better.
    """

    step: Callable[[Any, Any, np.random.Generator], tuple[Any, Any]]
    stats: Callable[[Any, Any], dict[str, float]]
    validate: Callable[[], dict[str, float]]
    score: Callable[[dict[str, float]], tuple[float, float]]
    has_validation: bool
    progress_key: str | None = None  # validation metric shown in progress messages
    min_batch: int = 1  # smaller last batches are skipped (BatchNorm1d cannot train on one sample)
    ema: Any = None  # a training.recipe.WeightAverage: updated after each step; its weights are the ones kept


def open_checkpoint(ckpt_dir: Path, fingerprint: str, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (None: start afresh); one of another run is refused."""
    ckpt = load_checkpoint(ckpt_dir) if resume else None
    if ckpt is not None and ckpt.get("fingerprint") != fingerprint:
        raise NcmError(
            "this folder holds a checkpoint of a training run with other settings or data; "
            "choose another output folder, or start again (--restart / resume=False)",
            ckpt_dir,
        )
    return ckpt


@dataclass
class LoopState:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    resumed_from: int = 0
    start_record: dict[str, float] | None = None  # validation of the weights before training (start_is_candidate)


@dataclass(frozen=True)
class LoopConfig:
    """The epoch loop's settings: length, batches, early stopping and the checkpoint to write and resume.

    ``steps_per_epoch`` sizes the progress total; ``ckpt_dir`` None writes no checkpoint; ``ckpt`` is the
    checkpoint to resume from (:func:`open_checkpoint`); ``t0`` the run's start (``time.monotonic()``,
    default: now); ``patience`` None: no early stopping. ``start_is_candidate``: the weights before the
    first epoch compete for the best (as epoch 0), so a model that starts from a fitted baseline (the
    hybrid regressor) keeps it when no epoch beats it on validation.
    """

    epochs: int = 1
    batch_size: int = 32
    steps_per_epoch: int = 1
    patience: int | None = None
    start_is_candidate: bool = False
    fingerprint: str = ""
    ckpt_dir: Path | None = None
    ckpt: dict[str, Any] | None = None
    t0: float | None = None


def run_epochs(
    *,
    model: Any,
    opt: Any,
    sched: Any,
    scaler: Any,
    task: Task,
    epoch_data: Callable[[np.random.Generator], tuple],
    to_input: Callable[[np.ndarray], Any],
    to_target: Callable[[np.ndarray], Any],
    rng: np.random.Generator,
    loop: LoopConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> LoopState:
    """Train for up to ``loop.epochs`` epochs; returns the history and the best weights (on the CPU).

    ``overrides`` are fields of :class:`LoopConfig` (``epochs=5, batch_size=4, ...``).
    """
    import torch

    cfg = merge_options(LoopConfig, loop, overrides)
    epochs, batch_size, patience, ckpt = cfg.epochs, cfg.batch_size, cfg.patience, cfg.ckpt
    t0 = time.monotonic() if cfg.t0 is None else cfg.t0
    st = LoopState()
    best_score, since_best, step, start = None, 0, 0, 1
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        st.history, st.best_epoch, since_best, step = (
            ckpt["history"],
            ckpt["best_epoch"],
            ckpt["since_best"],
            ckpt["step"],
        )
        best_score = tuple(ckpt["best_score"]) if ckpt["best_score"] is not None else None
        st.best_state = ckpt["best_model"]
        if task.ema is not None:
            task.ema.load(ckpt["ema"])
        start = ckpt["epoch"] + 1
        for rec in st.history:
            if on_epoch is not None:
                on_epoch(rec)
    elif cfg.start_is_candidate and task.has_validation:
        st.start_record = task.validate()
        best_score = task.score(st.start_record)
        st.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
    st.resumed_from = start - 1
    total = epochs * cfg.steps_per_epoch
    stopped = ckpt is not None and ckpt.get("stopped", False)
    elapsed0 = st.history[-1]["seconds"] if st.history else 0.0
    for epoch in range(start, epochs + 1):
        if stopped:
            break
        check_cancel(cancel)  # the last epoch's checkpoint is saved: stopping here keeps it for resume
        model.train()
        t_epoch = time.monotonic()
        x, y = epoch_data(rng)
        check_cancel(cancel)
        order = rng.permutation(len(x))
        loss_sum, sums = 0.0, {}
        for k in range(0, len(order), batch_size):
            check_cancel(cancel)
            b = order[k : k + batch_size]
            if len(b) < task.min_batch:
                continue
            xb, yb = to_input(x[b]), to_target(y[b])
            loss, outputs = task.step(xb, yb, rng)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            sched.step_update(num_updates=step)
            if task.ema is not None:
                task.ema.update(model)
            loss_sum += loss.item() * len(b)
            with torch.no_grad():
                for key, v in task.stats(outputs, yb).items():
                    sums[key] = sums.get(key, 0.0) + v
            report(progress, step, total, f"epoch {epoch}/{epochs} loss {loss.item():.3f}")
        sched.step(epoch)
        rec = {
            "epoch": epoch,
            "train_loss": loss_sum / len(x),
            **{k: v / len(x) for k, v in sums.items()},
            "lr": opt.param_groups[0]["lr"],
            "train_seconds": time.monotonic() - t_epoch,
            "tiles": int(len(x)),
        }
        if task.has_validation:
            rec.update(task.validate())
        rec["seconds"] = elapsed0 + time.monotonic() - t0
        st.history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)
        key = task.progress_key
        msg = (
            f"epoch {epoch}/{epochs} {key.replace('_', ' ')} {rec[key]:.3f}"
            if key and key in rec
            else f"epoch {epoch}/{epochs}"
        )
        report(progress, step, total, msg)
        score = task.score(rec) if task.has_validation else (float(epoch), 0.0)
        if best_score is None or score > best_score:
            best_score, st.best_epoch, since_best = score, epoch, 0
            kept = model if task.ema is None else task.ema.module  # with EMA, the averaged weights are kept
            st.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in kept.state_dict().items()})
        else:
            since_best += 1
            stopped = patience is not None and since_best >= patience
        if cfg.ckpt_dir is None:
            continue
        save_checkpoint(
            cfg.ckpt_dir,
            {
                "fingerprint": cfg.fingerprint,
                "epoch": epoch,
                "step": step,
                "history": st.history,
                "best_epoch": st.best_epoch,
                "best_score": None if best_score is None else list(best_score),
                "since_best": since_best,
                "stopped": stopped,
                "model": model.state_dict(),
                "best_model": st.best_state,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                **({} if task.ema is None else {"ema": task.ema.state()}),
            },
        )
    model.load_state_dict(st.best_state)
    return st
