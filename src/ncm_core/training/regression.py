"""Multi-output regression from cross-section crops: rate capability (Deeg et al., Batteries 2024).

Data are crops of cross-sections (``ncm sections``, whose manifest names each
crop's source mosaic) or plain images, and a targets CSV keyed by mosaic or
image name (:mod:`ncm_core.data.targets`). Every crop of a mosaic carries that
mosaic's measured values; splits are grouped by mosaic (or by a grouping
column such as porosity) so that crops of one mosaic never sit on both sides.

Training (:func:`train_regressor`) follows the publication:

* the model ``ncm_vgg`` (:mod:`ncm_core.models.nets`) or any timm backbone with a
  linear regression head; targets are standardised inside (the bundle stores
  mean and std and predictions come back in the CSV's units);
* loss MAPE (also MAE, MSE, Huber), computed on the values in their units for
  MAPE and on standardised values otherwise;
* Lookahead around RAdam (timm's ``lookahead_radam``: sync period k=6,
  alpha=0.5) with a warm-up over the first 10 % of steps from 1e-5 to the
  peak rate, then a cosine decay back to 1e-5 (timm's scheduler, per step);
* early stopping that keeps the best epoch's weights by validation MAPE;
* Keras-style L1/L2 weight penalties, optional FGSM adversarial training with
  noise up to a set % of the mean pixel value, and random shifts, rotations and
  mirror images with mirror (reflection) fill at the edges, on the batch
  tensor (``torch.nn.functional.grid_sample``).

:func:`cross_validate` runs grouped k-fold cross-validation (scikit-learn's
``GroupKFold``), with a validation split taken from each fold's training
mosaics for early stopping, and writes per-fold and mean metrics, per-group
errors, predicted-vs-measured scatter plots and the rate-capability plot.
:func:`predict_section` predicts every crop along a mosaic's cross-section.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.progress import CancelFlag, ProgressFn, report
from ncm_core.data.targets import Targets, read_targets

LOSSES = ("mape", "mae", "mse", "huber")
AUGMENTS = ("shift", "rotate", "hflip")
MONITORS = ("mape", "loss")


# ---------------------------------------------------------------------------------------------- data
@dataclass
class RegressionData:
    """Crops prepared at the model input size with their targets and groups."""

    root: Path
    x: Any  # torch float32 (N, C, H, W), intensities scaled to [0, 1]
    y: np.ndarray  # (N, targets) in the CSV's units
    files: list[str]
    sources: list[str]  # mosaic (or image) of each crop
    groups: dict[str, list[str]]  # grouping column -> value per crop
    target_names: list[str]
    in_chans: int
    crop_size: tuple[int, int]  # crop (height, width) in source pixels
    targets: Targets
    pixel_size: float | None = None

    def split_groups(self, split_by: str | None) -> np.ndarray:
        """Group label of each crop: its source mosaic, or the value of a grouping column."""
        if split_by is None or split_by in ("source", "mosaic", "image"):
            return np.asarray(self.sources)
        if split_by not in self.groups:
            raise NcmError(f"no grouping column {split_by!r} (columns: {', '.join(self.groups) or 'none'}); name it "
                           "with --group", self.targets.path)
        return np.asarray(self.groups[split_by])


def _crop_table(data: Path) -> tuple[list[Path], list[str], tuple[int, int] | None, float | None]:
    """Crop files and their source names: from a sections manifest, else one image = one source."""
    from ncm_core.data.datasets import IMAGE_SUFFIXES
    from ncm_core.data.sections import MANIFEST, SUMMARY, is_sections_folder

    if is_sections_folder(data):
        summary = json.loads((data / SUMMARY).read_text())
        with open(data / MANIFEST, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise NcmError("the sections folder holds no crops", data)
        sizes = {m.get("pixel_size") for m in summary.get("mosaics", [])}
        px = sizes.pop() if len(sizes) == 1 else None
        return [data / r["file"] for r in rows], [r["source"] for r in rows], tuple(summary["crop"]), px
    files = sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise NcmError(f"no images ({', '.join(IMAGE_SUFFIXES)}) and no {MANIFEST} found", data)
    return files, [p.stem for p in files], None, None


def load_regression_data(data: str | Path, targets: str | Path | Targets, input_size: tuple[int, int] | None = None,
                         *, groups: Sequence[str] = (), target_columns: Sequence[str] | None = None,
                         loss: str = "mape", in_chans: int | None = None, progress: ProgressFn | None = None,
                         cancel: CancelFlag = None) -> RegressionData:
    """Read crops (a sections folder or a folder of images) and match them to the targets CSV.

    Crops are resized to ``input_size`` (height, width; default: their own
    size) once, here, so an epoch only moves tensors.
    """
    import torch

    from ncm_core.models.preprocess import InputSpec, tiles_to_tensor
    from ncm_core.progress import check_cancel
    from ncm_core.data.tilesets import _read_tile

    root = Path(data).expanduser()
    if not root.is_dir():
        raise NcmError("crop folder not found" if not root.exists() else "expected a folder of crops", root)
    t = targets if isinstance(targets, Targets) else read_targets(targets, targets=target_columns, groups=groups,
                                                                   check_mape=loss == "mape")
    files, sources, crop, px = _crop_table(root)
    row_of = {}
    for s in sorted(set(sources)):
        i = t.index(s)
        if i is not None:
            row_of[s] = i
    matched = set(row_of.values())
    unmatched_rows = [img for k, img in enumerate(t.images) if k not in matched]
    if unmatched_rows:
        raise NcmError(f"{len(unmatched_rows)} row(s) of the targets CSV name images with no crops in {root}: "
                       f"{', '.join(unmatched_rows[:5])}{', ...' if len(unmatched_rows) > 5 else ''}", t.path)
    missing = sorted(set(sources) - set(row_of))
    if missing:
        warnings.warn(f"{t.path}: no targets for {len(missing)} mosaic(s) in {root} ({', '.join(missing[:5])}"
                      f"{', ...' if len(missing) > 5 else ''}); their crops are left out", stacklevel=2)
    keep = [k for k, s in enumerate(sources) if s in row_of]
    first = _read_tile(files[keep[0]])
    chans = in_chans or (1 if first.ndim == 2 else 3)
    size = tuple(input_size) if input_size else first.shape[:2]
    spec = InputSpec(in_chans=chans, input_size=size)
    xs = []
    for n, k in enumerate(keep):
        check_cancel(cancel)
        tile = _read_tile(files[k])
        if tile.shape[:2] != first.shape[:2]:
            raise NcmError(f"crop is {tile.shape[0]}x{tile.shape[1]} px but others are "
                           f"{first.shape[0]}x{first.shape[1]}; all crops must have one size", files[k])
        xs.append(tiles_to_tensor(tile[None], spec))
        if n % 50 == 0:
            report(progress, n, len(keep), "reading crops")
    x = torch.cat(xs)
    y = np.stack([t.values[row_of[sources[k]]] for k in keep])
    grp = {g: [t.groups[g][row_of[sources[k]]] for k in keep] for g in t.groups}
    return RegressionData(root, x, y, [str(files[k].relative_to(root)) for k in keep], [sources[k] for k in keep],
                          grp, list(t.names), chans, tuple(crop or first.shape[:2]), t, px)


def standardise(x: Any, spec: Any) -> Any:
    """Prepared crops ``(N, C, H, W)`` standardised by the spec's mean and std (unchanged without them)."""
    import torch

    if spec.mean is None or spec.std is None:
        return x
    return (x - torch.as_tensor(spec.mean).view(1, -1, 1, 1)) / torch.as_tensor(spec.std).view(1, -1, 1, 1)


def grouped_kfold(groups: Sequence[str], folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) crop indices of ``folds`` folds; each group lands in exactly one test fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n = len(set(groups.tolist()))
    if folds < 2:
        raise NcmError(f"cross-validation needs at least 2 folds, got {folds}")
    if n < folds:
        raise NcmError(f"{folds}-fold cross-validation needs at least {folds} groups (mosaics), found {n}")
    return list(GroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(groups)), groups=groups))


def grouped_split(groups: Sequence[str], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices with about ``fraction`` of the groups held out (at least one)."""
    groups = np.asarray(groups)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise NcmError(f"a held-out split needs at least 2 mosaics (groups), found {len(uniq)}")
    if not 0 < fraction < 1:
        raise NcmError(f"validation fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    n_out = min(max(1, round(fraction * len(uniq))), len(uniq) - 1)
    held = set(rng.permutation(uniq)[:n_out].tolist())
    mask = np.isin(groups, list(held))
    return np.flatnonzero(~mask), np.flatnonzero(mask)


# ---------------------------------------------------------------------------------------------- parts
def mape(pred: Any, true: Any) -> Any:
    """Mean absolute percentage error in %: ``100 * mean(|pred - true| / |true|)`` over all entries."""
    return 100.0 * ((pred - true).abs() / true.abs()).mean()


def regression_loss(name: str) -> Callable[[Any, Any, Any, Any], Any]:
    """``loss(z_pred, z_true, mean, std)`` on standardised values ``z`` (MAPE on values in their units)."""
    import torch.nn.functional as F

    if name == "mape":
        return lambda zp, zt, m, s: mape(zp * s + m, zt * s + m)
    if name == "mae":
        return lambda zp, zt, m, s: F.l1_loss(zp, zt)
    if name == "mse":
        return lambda zp, zt, m, s: F.mse_loss(zp, zt)
    if name == "huber":
        return lambda zp, zt, m, s: F.huber_loss(zp, zt, delta=1.0)
    raise NcmError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")


def parse_augment(value: bool | str | Iterable[str]) -> tuple[str, ...]:
    if value is True:
        return AUGMENTS
    if value is False or value is None or value == "none":
        return ()
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [v for v in items if v not in AUGMENTS]
    if bad:
        raise NcmError(f"unknown augmentation {bad[0]!r}; expected some of {', '.join(AUGMENTS)} or none")
    return tuple(dict.fromkeys(items))


def augment_batch(x: Any, rng: np.random.Generator, ops: Sequence[str], max_shift: float = 0.1,
                  max_rotate: float = 10.0) -> Any:
    """Random shifts (up to ``max_shift`` of the size), rotations (up to ``max_rotate`` degrees) and
    left-right mirror images of a batch ``(N, C, H, W)``, with mirror fill at the edges."""
    import torch
    import torch.nn.functional as F

    if not ops:
        return x
    n, _, h, w = x.shape
    ang = np.radians(rng.uniform(-max_rotate, max_rotate, n)) if "rotate" in ops else np.zeros(n)
    sh = rng.uniform(-max_shift, max_shift, (n, 2)) * 2 if "shift" in ops else np.zeros((n, 2))  # normalised units
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if "hflip" in ops else np.ones(n)
    c, s = np.cos(ang), np.sin(ang)
    # rotation in pixel space, expressed in grid_sample's normalised coordinates (x: w/2, y: h/2 per unit)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = c * flip, -s * h / w
    theta[:, 1, 0], theta[:, 1, 1] = s * w / h * flip, c
    theta[:, :, 2] = sh
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """MAPE (%), MAE and R^2 per target (scikit-learn) and their means over targets."""
    from sklearn.metrics import mean_absolute_error, mean_absolute_percentage_error, r2_score

    y_true, y_pred = np.atleast_2d(y_true), np.atleast_2d(y_pred)
    per = {}
    for k, n in enumerate(names):
        t, p = y_true[:, k], y_pred[:, k]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # R^2 of a constant target
            r2 = float(r2_score(t, p)) if len(t) > 1 and np.ptp(t) > 0 else float("nan")
        per[n] = {"mape": float(100 * mean_absolute_percentage_error(t, p)), "mae": float(mean_absolute_error(t, p)),
                  "r2": r2, "n": int(len(t))}
    mean = {m: float(np.nanmean([per[n][m] for n in names])) if any(np.isfinite(per[n][m]) for n in names)
            else float("nan") for m in ("mape", "mae", "r2")}
    return {"targets": per, **mean, "n": int(len(y_true))}


# ---------------------------------------------------------------------------------------------- training
@dataclass
class RegressResult:
    bundle: Path
    best_epoch: int
    best_val_mape: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0


def _fingerprint(settings: dict[str, Any], data: RegressionData, train_idx: np.ndarray, val_idx: np.ndarray) -> str:
    blob = json.dumps({"settings": settings, "train": [data.files[i] for i in train_idx],
                       "val": [data.files[i] for i in val_idx], "targets": data.target_names,
                       "y": np.round(data.y, 6).tolist()}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()


def _predict_z(model: Any, x: Any, dev: Any, batch: int) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(x), batch):
            out.append(model(x[k:k + batch].to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fit_regressor(
    data: RegressionData, train_idx: np.ndarray, val_idx: np.ndarray, out: str | Path, *,
    architecture: str = "ncm_vgg", epochs: int = 100, batch_size: int = 38, lr: float = 1e-3,
    min_lr: float = 1e-5, warmup: float = 0.1, optimizer: str = "lookahead_radam", scheduler: str = "cosine",
    weight_decay: float = 0.0, l1: float = 0.0, l2: float = 0.0, loss: str = "mape", monitor: str = "mape",
    patience: int | None = 20, augment: bool | str | Iterable[str] = True, max_shift: float = 0.1,
    max_rotate: float = 10.0, adversarial: float = 0.0, normalize: bool = False, drop_rate: float | None = None,
    pretrained: str | Path | None = None, amp: str = "auto", ood: bool = True, resume: bool = True, seed: int = 0,
    device: str = "auto", progress: ProgressFn | None = None, cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None, extra_training: dict[str, Any] | None = None,
    reuse: bool = False,
) -> RegressResult:
    """Train on ``data[train_idx]``, stop early on ``data[val_idx]``, and write a bundle to ``out``.

    ``reuse``: when ``out`` already holds a bundle trained with the same settings and data, return it
    instead of training again (cross-validation resumes fold by fold this way).
    """
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    from ncm_core.models.bundle import CONFIG, BundleConfig, save_bundle
    from ncm_core.io.mosaic import read_json
    from ncm_core.training.loop import Task, open_checkpoint, run_epochs
    from ncm_core.models.factory import build_model, check_architecture
    from ncm_core.models.preprocess import InputSpec
    from ncm_core.devices import amp_dtype, resolve_device

    t0 = time.monotonic()
    if epochs < 1 or batch_size < 2:
        raise NcmError(f"epochs must be positive and the batch size at least 2 (got {epochs}, {batch_size})")
    if monitor not in MONITORS:
        raise NcmError(f"monitor must be one of {', '.join(MONITORS)}, got {monitor!r}")
    if not 0 <= warmup < 1:
        raise NcmError(f"warm-up must be a fraction of the steps in [0, 1), got {warmup}")
    if adversarial < 0 or l1 < 0 or l2 < 0:
        raise NcmError("adversarial noise and weight penalties must not be negative")
    loss_fn = regression_loss(loss)
    ops = parse_augment(augment)
    check_architecture(architecture)
    if len(train_idx) < 2:
        raise NcmError(f"need at least 2 training crops, got {len(train_idx)}", data.root)
    dev = resolve_device(device)
    dtype = amp_dtype(amp, dev)
    names = data.target_names
    y_train = data.y[train_idx]
    t_mean = y_train.mean(0)
    t_std = y_train.std(0)
    t_std = np.where(t_std > 0, t_std, np.maximum(np.abs(t_mean), 1.0))  # a constant target: scale by its size
    settings = {"task": "regress", "architecture": architecture, "input_size": list(data.x.shape[-2:]),
                "crop_size": list(data.crop_size), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "min_lr": min_lr, "warmup": warmup, "optimizer": optimizer, "scheduler": scheduler,
                "weight_decay": weight_decay, "l1": l1, "l2": l2, "loss": loss, "monitor": monitor,
                "patience": patience, "augment": list(ops), "max_shift": max_shift, "max_rotate": max_rotate,
                "adversarial": adversarial, "normalize": normalize, "drop_rate": drop_rate,
                "pretrained": None if pretrained is None else str(pretrained), "amp": str(dtype), "seed": seed}
    fp = _fingerprint(settings, data, train_idx, val_idx)
    out = Path(out).expanduser()
    if reuse and (out / CONFIG).is_file():
        done = read_json(out / CONFIG).get("training", {})
        if done.get("fingerprint") == fp:
            hist = done.get("history", [])
            return RegressResult(out, int(done.get("best_epoch", 0)), float(done.get("best_val_mape") or "nan"),
                                 hist, 0.0, len(hist))
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, resume)
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
    model = build_model(architecture, len(names), in_chans=data.in_chans, pretrained=pretrained, **kw).to(dev)
    opt = create_optimizer_v2(model, opt=optimizer, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, len(train_idx) // batch_size + (len(train_idx) % batch_size >= 2))
    # linear warm-up over the first ``warmup`` share of the steps, then the decay over the rest (per step)
    sched, _ = create_scheduler_v2(opt, sched=scheduler, num_epochs=epochs * (1 - warmup),
                                   warmup_epochs=warmup * epochs, warmup_prefix=True, warmup_lr=min_lr,
                                   min_lr=min_lr, step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    tm = torch.as_tensor(t_mean, dtype=torch.float32, device=dev)
    ts = torch.as_tensor(t_std, dtype=torch.float32, device=dev)
    penalised = [p for n, p in model.named_parameters() if p.ndim > 1]  # weights, not biases or norms

    def forward(xb: Any) -> Any:
        with torch.autocast(device_type=dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return model(xb).float()

    def step(xb: Any, zb: Any, rng_: np.random.Generator) -> tuple[Any, Any]:
        if adversarial > 0:  # FGSM: a step along the sign of the input gradient, up to a % of the mean pixel
            xb = xb.detach().requires_grad_(True)
            zp = forward(xb)
            clean = loss_fn(zp, zb, tm, ts)
            (g,) = torch.autograd.grad(clean, xb, retain_graph=True)
            raw_mean = (xb.detach() * s_t + m_t).mean()
            eps = torch.as_tensor(rng_.uniform(0, adversarial / 100, len(xb)), dtype=xb.dtype, device=dev)
            x_adv = (xb + (eps * raw_mean / s_t.mean()).view(-1, 1, 1, 1) * g.sign()).detach()
            value = 0.5 * (clean + loss_fn(forward(x_adv), zb, tm, ts))
        else:
            zp = forward(xb)
            value = loss_fn(zp, zb, tm, ts)
        if l1:
            value = value + l1 * sum(p.abs().sum() for p in penalised)
        if l2:
            value = value + l2 * sum((p ** 2).sum() for p in penalised)
        return value, zp.detach()

    def to_input(idx: np.ndarray) -> Any:
        return standardise(x_all[torch.as_tensor(idx)], spec).to(dev)

    def stats(zp: Any, zb: Any) -> dict[str, float]:
        p, t = zp * ts + tm, zb * ts + tm
        return {"train_mape": float(100 * ((p - t).abs() / t.abs().clamp_min(1e-12)).mean(1).sum())}

    z_all = (data.y - t_mean) / t_std

    x_val = to_input(val_idx).cpu() if len(val_idx) else None
    z_val = torch.as_tensor(z_all[val_idx], dtype=torch.float32)

    def validate() -> dict[str, float]:
        zp = _predict_z(model, x_val, dev, batch_size * 2)
        with torch.no_grad():
            vloss = float(loss_fn(torch.as_tensor(zp), z_val, tm.cpu(), ts.cpu()))
        met = regression_metrics(data.y[val_idx], zp * t_std + t_mean, names)
        return {"val_loss": vloss, "val_mape": met["mape"], "val_mae": met["mae"], "val_r2": met["r2"]}

    def score(rec: dict[str, float]) -> tuple[float, float]:
        return (-rec["val_loss"], 0.0) if monitor == "loss" else (-rec["val_mape"], -rec["val_loss"])

    def epoch_data(rng_: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return train_idx, z_all[train_idx]

    def to_batch(idx: np.ndarray) -> Any:
        return augment_batch(to_input(idx), rng, ops, max_shift, max_rotate)

    task = Task(step=step, stats=stats, validate=validate, score=score, has_validation=len(val_idx) > 0,
                progress_key="val_mape", min_batch=2)
    st = run_epochs(model=model, opt=opt, sched=sched, scaler=scaler, task=task, epoch_data=epoch_data,
                    to_input=to_batch, to_target=lambda zb: torch.as_tensor(zb, dtype=torch.float32, device=dev),
                    epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch, rng=rng, fingerprint=fp,
                    ckpt_dir=ckpt_dir, ckpt=ckpt, patience=patience, progress=progress, cancel=cancel,
                    on_epoch=on_epoch, t0=t0)
    best = st.history[st.best_epoch - 1]
    c_rates = data.targets.c_rates()
    cfg = BundleConfig(
        architecture=architecture, task="regress", target_names=list(names), input=spec,
        tile_size=int(data.crop_size[1]), pixel_size=data.pixel_size, model_kwargs=kw,
        regression={"mean": t_mean.tolist(), "std": t_std.tolist(), "loss": loss, "crop_size": list(data.crop_size),
                    "c_rates": c_rates, "groups": list(data.groups)},
        training={**settings, **(extra_training or {}), "data": str(data.root), "targets": str(data.targets.path),
                  "fingerprint": fp, "epochs_run": len(st.history), "best_epoch": st.best_epoch,
                  "best_val_mape": best.get("val_mape"), "train_sources": sorted({data.sources[i] for i in train_idx}),
                  "val_sources": sorted({data.sources[i] for i in val_idx}), "history": st.history})
    extra = None
    if ood:
        from ncm_core.models.ood import fit_ood

        report(progress, 1, 1, "fitting the out-of-distribution detector")
        xt = to_input(train_idx).cpu().permute(0, 2, 3, 1).numpy()
        xv = to_input(val_idx).cpu().permute(0, 2, 3, 1).numpy() if len(val_idx) else xt[:0]
        raw = InputSpec(in_chans=data.in_chans, input_size=spec.input_size)  # already normalised above
        cfg.ood, extra = fit_ood(model, xt, np.zeros(len(xt), np.int64), xv, raw, dev, 1)
    path = save_bundle(model.cpu(), cfg, out, extra=extra)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return RegressResult(path, st.best_epoch, float(best.get("val_mape", float("nan"))), st.history,
                         time.monotonic() - t0, st.resumed_from)


def _parse_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            raise NcmError(f"expected a size like 56x168 (height x width), got {value!r}") from None
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or min(value) < 8:
        raise NcmError(f"a size is (height, width), each at least 8 px, got {value!r}")
    return int(value[0]), int(value[1])


def train_regressor(
    data: str | Path, targets: str | Path, out: str | Path, *, input_size: Any = None, groups: Sequence[str] = (),
    target_columns: Sequence[str] | None = None, split_by: str | None = None, val_fraction: float = 0.2,
    holdout: bool = True, progress: ProgressFn | None = None, cancel: CancelFlag = None, **kwargs: Any,
) -> RegressResult:
    """Train one regressor on all mosaics but a grouped validation share (``val_fraction``), which
    picks the best epoch; ``holdout=False`` trains on everything for the full number of epochs.

    ``kwargs`` go to :func:`fit_regressor` (architecture, epochs, loss, ...).
    """
    d = load_regression_data(data, targets, _parse_size(input_size), groups=groups, target_columns=target_columns,
                             loss=kwargs.get("loss", "mape"), progress=progress, cancel=cancel)
    if holdout:
        tr, va = grouped_split(d.split_groups(split_by), val_fraction, kwargs.get("seed", 0))
    else:
        tr, va = np.arange(len(d.files)), np.zeros(0, np.int64)
        kwargs.setdefault("patience", None)
    return fit_regressor(d, tr, va, out, progress=progress, cancel=cancel,
                         extra_training={"split_by": split_by or "source", "val_fraction": val_fraction}, **kwargs)


# ---------------------------------------------------------------------------------------------- prediction
def predict_values(bundle: Any, x: Any, device: Any = "cpu", batch_size: int = 64,
                   ood: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Predicted values ``(N, targets)`` in the targets' units for prepared inputs ``(N, C, H, W)``."""
    import torch

    from ncm_core.models.ood import forward_with_features, has_ood, ood_ratio

    if bundle.config.task != "regress":
        raise NcmError(f"this bundle is a classifier ({len(bundle.class_names)} classes), not a regressor",
                       bundle.path)
    reg = bundle.config.regression
    mean, std = np.asarray(reg.get("mean", 0.0)), np.asarray(reg.get("std", 1.0))
    model, dev = bundle.model.to(device), torch.device(device)
    model.eval()
    out, scores = [], []
    use_ood = ood and has_ood(bundle)
    with torch.inference_mode():
        for k in range(0, len(x), batch_size):
            xb = x[k:k + batch_size].to(dev)
            if use_ood:
                z, f = forward_with_features(model, xb)
                scores.append(ood_ratio(bundle, f).cpu().numpy())
            else:
                z = model(xb)
            out.append(z.float().cpu().numpy())
    z = np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)
    values = z * std + mean
    if ood:
        return values, (np.concatenate(scores) if scores else np.full(len(values), np.nan))
    return values


@dataclass
class SectionPrediction:
    """Predicted values for each crop along one cross-section."""

    geometry: Any  # SectionGeometry
    target_names: list[str]
    values: np.ndarray  # (crops, targets)
    ood: np.ndarray | None = None  # score / threshold per crop

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation over the crops, per target."""
        return {n: {"mean": float(self.values[:, k].mean()), "std": float(self.values[:, k].std(ddof=0)),
                    "n": int(len(self.values))} for k, n in enumerate(self.target_names)}

    def rows(self) -> list[dict[str, Any]]:
        polys = self.geometry.crop_polygons()
        out = []
        for i, (r0, c0) in enumerate(self.geometry.crops):
            row = {"crop": i, "row": r0, "column": c0, "corners_yx": json.dumps(np.round(polys[i], 2).tolist())}
            row.update({n: round(float(self.values[i, k]), 6) for k, n in enumerate(self.target_names)})
            if self.ood is not None:
                row["ood"] = round(float(self.ood[i]), 4)
            out.append(row)
        return out


def predict_section(bundle: Any, mosaic: Any, *, mode: str = "center", stride: tuple[int, int] | None = None,
                    margin: int = 4, geometry: Any = None, device: str = "auto", batch_size: int = 16,
                    progress: ProgressFn | None = None, cancel: CancelFlag = None) -> SectionPrediction:
    """Find the section in ``mosaic``, cut crops of the bundle's crop size and predict each one.

    Crops are read and predicted a batch at a time, so memory depends on crop
    and batch size, not on the mosaic.
    """
    from ncm_core.models.bundle import load_bundle
    from ncm_core.io.mosaic import Mosaic, open_mosaic
    from ncm_core.models.preprocess import tiles_to_tensor
    from ncm_core.data.sections import detect_section, iter_crops
    from ncm_core.devices import resolve_device

    dev = resolve_device(device)
    b = load_bundle(bundle, device=str(dev))
    if b.config.task != "regress":
        raise NcmError("this bundle is a classifier; section prediction needs a regression bundle "
                       "('ncm train --task regress')", b.path)
    m = mosaic if isinstance(mosaic, Mosaic) else open_mosaic(mosaic)
    crop = tuple(b.config.regression.get("crop_size") or (224, 672))
    geom = geometry or detect_section(m, crop=crop, mode=mode, stride=stride, margin=margin, cancel=cancel)
    vals, oods, batch = [], [], []
    n = len(geom.crops)

    def flush() -> None:
        x = tiles_to_tensor(np.stack(batch), b.config.input)
        v, o = predict_values(b, x, dev, batch_size, ood=True)
        vals.append(v)
        oods.append(o)
        batch.clear()

    for k, tile in enumerate(iter_crops(m, geom, cancel)):
        batch.append(tile)
        if len(batch) == batch_size:
            flush()
        report(progress, k + 1, n, f"crop {k + 1}/{n}")
    if batch:
        flush()
    values = np.concatenate(vals) if vals else np.zeros((0, b.config.num_outputs))
    ood = np.concatenate(oods) if oods else None
    return SectionPrediction(geom, list(b.config.target_names), values,
                             None if ood is None or np.isnan(ood).all() else ood)


# ---------------------------------------------------------------------------------------------- cross-validation
@dataclass
class CVResult:
    out: Path
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]
    folds: list[Path]
    seconds: float


def cross_validate(
    data: str | Path, targets: str | Path, out: str | Path, *, folds: int = 5, input_size: Any = None,
    groups: Sequence[str] = (), target_columns: Sequence[str] | None = None, split_by: str | None = None,
    val_fraction: float = 0.2, seed: int = 0, progress: ProgressFn | None = None, cancel: CancelFlag = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None, **kwargs: Any,
) -> CVResult:
    """Grouped k-fold cross-validation: per fold a bundle in ``out/fold_<k>``, then reports in ``out``.

    Crops of one mosaic (or one value of ``split_by``) are never in both a
    fold's training and test crops; early stopping uses a grouped validation
    share of the training mosaics, never the test fold. A fold whose bundle
    was already written with the same settings and data is not trained again.
    """
    from ncm_core.models.bundle import load_bundle

    t0 = time.monotonic()
    d = load_regression_data(data, targets, _parse_size(input_size), groups=groups, target_columns=target_columns,
                             loss=kwargs.get("loss", "mape"), progress=progress, cancel=cancel)
    grp = d.split_groups(split_by)
    splits = grouped_kfold(grp, folds, seed)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    pred = np.full(d.y.shape, np.nan)
    fold_of = np.full(len(d.files), -1)
    ood = np.full(len(d.files), np.nan)
    fold_metrics, paths = [], []
    for k, (tr_all, test) in enumerate(splits, start=1):
        tr, va = grouped_split(grp[tr_all], val_fraction, seed + k)
        tr, va = tr_all[tr], tr_all[va]
        assert not set(grp[test]) & set(grp[tr]) and not set(grp[test]) & set(grp[va])
        fdir = out / f"fold_{k}"
        step = _fold_progress(progress, k, folds)
        cb = None if on_epoch is None else (lambda rec, k=k: on_epoch({**rec, "fold": k}))
        fit_regressor(d, tr, va, fdir, seed=seed, progress=step, cancel=cancel, on_epoch=cb, reuse=True,
                      extra_training={"fold": k, "folds": folds, "split_by": split_by or "source"}, **kwargs)
        b = load_bundle(fdir)
        v, o = predict_values(b, standardise(d.x[test], b.config.input), "cpu", 64, ood=True)
        pred[test], fold_of[test], ood[test] = v, k, o
        fm = regression_metrics(d.y[test], v, d.target_names)
        fm.update(fold=k, test_groups=sorted(set(grp[test].tolist())), best_epoch=b.config.training.get("best_epoch"),
                  epochs_run=b.config.training.get("epochs_run"))
        fold_metrics.append(fm)
        paths.append(fdir)
    rows = []
    for i in range(len(d.files)):
        row = {"file": d.files[i], "source": d.sources[i], "fold": int(fold_of[i]),
               **{g: d.groups[g][i] for g in d.groups}}
        for k, n in enumerate(d.target_names):
            row[n] = float(d.y[i, k])
            row[f"{n}_pred"] = round(float(pred[i, k]), 6)
        row["ood"] = None if np.isnan(ood[i]) else round(float(ood[i]), 4)
        rows.append(row)
    metrics = cv_report(rows, d.target_names, fold_metrics, out, group_columns=list(d.groups),
                        c_rates=d.targets.c_rates(), settings={"folds": folds, "split_by": split_by or "source",
                                                               "seed": seed, **_jsonable(kwargs)})
    metrics["seconds"] = time.monotonic() - t0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return CVResult(out, metrics, rows, paths, metrics["seconds"])


def _jsonable(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else str(v)) for k, v in kw.items()}


def _fold_progress(progress: ProgressFn | None, k: int, folds: int) -> ProgressFn | None:
    if progress is None:
        return None

    def fn(done: int, total: int, message: str = "") -> None:
        frac = (k - 1 + (done / total if total else 0)) / folds
        progress(int(1000 * frac), 1000, f"fold {k}/{folds}: {message}")

    return fn


# ---------------------------------------------------------------------------------------------- reports
def cv_report(rows: list[dict[str, Any]], names: list[str], fold_metrics: list[dict[str, Any]], out: Path, *,
              group_columns: Sequence[str] = (), c_rates: list[float] | None = None,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics (per crop and per mosaic), per-group errors, scatter and rate-capability plots in ``out``."""
    from ncm_core.evaluation.evaluate import write_rows
    from ncm_core.viz.figures import rate_capability_figure, scatter_figure

    y = np.array([[r[n] for n in names] for r in rows])
    p = np.array([[r[f"{n}_pred"] for n in names] for r in rows])
    sources = [r["source"] for r in rows]
    uniq = sorted(set(sources))
    ym = np.array([y[[s == u for s in sources]].mean(0) for u in uniq])
    pm = np.array([p[[s == u for s in sources]].mean(0) for u in uniq])
    per_fold = {m: [f[m] for f in fold_metrics] for m in ("mape", "mae", "r2")}
    metrics = {
        "settings": settings or {},
        "crops": regression_metrics(y, p, names),
        "mosaics": regression_metrics(ym, pm, names),
        "folds": fold_metrics,
        "fold_mean": {m: float(np.mean(v)) for m, v in per_fold.items()},
        "fold_std": {m: float(np.std(v)) for m, v in per_fold.items()},
    }
    group_rows = []
    for g in ["source", *group_columns]:
        vals = [str(r[g]) for r in rows]
        for v in sorted(set(vals), key=_natural):
            idx = [i for i, x in enumerate(vals) if x == v]
            gm = regression_metrics(y[idx], p[idx], names)
            group_rows.append({"group": g, "value": v, "crops": len(idx), "mape": round(gm["mape"], 4),
                               "mae": round(gm["mae"], 4),
                               **{f"{n}_mape": round(gm["targets"][n]["mape"], 4) for n in names}})
    metrics["groups"] = group_rows
    metrics["group_columns"] = list(group_columns)
    write_rows(out / "predictions.csv", rows)
    write_rows(out / "per_group.csv", group_rows)
    write_rows(out / "per_target.csv", [{"target": n, **{f"crop_{m}": metrics["crops"]["targets"][n][m] for m in
                                                          ("mape", "mae", "r2")},
                                         **{f"mosaic_{m}": metrics["mosaics"]["targets"][n][m] for m in
                                            ("mape", "mae", "r2")}} for n in names])
    scatter_figure(y, p, names, out / "scatter.png", folds=[r["fold"] for r in rows])
    by = group_columns[0] if group_columns else "source"
    rate_capability_figure(rows, names, c_rates, out / "rate_capability.png", by=by)
    return metrics


def _natural(v: str) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def write_section_prediction(sp: SectionPrediction, out: str | Path, c_rates: list[float] | None = None) -> Path:
    """``out/crops.csv`` (values per crop with its corners), ``summary.json`` (mean +- std per target, the
    section's geometry) and ``rate_capability.png``. Written to ``<out>.partial`` and renamed."""
    from ncm_core.evaluation.evaluate import write_rows
    from ncm_core.viz.figures import _figure, draw_rate_capability
    from ncm_core.data.targets import parse_c_rates

    out = Path(out).expanduser()
    part = out.with_name(out.name + ".partial")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    write_rows(part / "crops.csv", sp.rows())
    summary = sp.summary()
    (part / "summary.json").write_text(json.dumps({
        "summary": summary, "crops": len(sp.values),
        "ood_fraction": None if sp.ood is None else float((sp.ood > 1).mean()),
        "geometry": sp.geometry.to_dict()}, indent=2))
    rates = c_rates or parse_c_rates(sp.target_names)
    fig = _figure(5.6, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    label = Path(str(sp.geometry.source)).name
    draw_rate_capability(ax, {}, {label: (np.array([summary[n]["mean"] for n in sp.target_names]),
                                          np.array([summary[n]["std"] for n in sp.target_names]))},
                         sp.target_names, rates, title=f"Predicted rate capability ({len(sp.values)} crops)")
    fig.tight_layout()
    fig.savefig(part / "rate_capability.png")
    if out.exists():
        shutil.rmtree(out)
    part.rename(out)
    return out
