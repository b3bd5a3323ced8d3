"""Training super-resolution on pairs made by degrading the user's high-resolution images.

Pairs come from :func:`ncm_core.data.degrade.degrade` (blur, ``factor`` x averaging, noise: the
degradation is recorded in the bundle). The last image is held out (with one image, its right fifth):
the bundle records PSNR and SSIM of the network and of bicubic interpolation on it, so every model says
whether it beats bicubic. Loss: L1 on normalised intensities; Adam; random crops with flips.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.degrade import degrade
from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.models.superres import SuperresBundle, SuperresSpec, build_superres
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report


@dataclass(frozen=True)
class SuperresConfig:
    """Options of :func:`train_superres`: the one home of their defaults."""

    factor: int = 4
    blur: float = 0.5  # Gaussian sigma of the degradation, in low-resolution pixels
    noise: float = 0.01  # noise of the degradation, in units of the normalised intensity range
    width: int = 32
    depth: int = 4
    crop: int = 96  # high-resolution pixels a side of the training crops
    batch_size: int = 16
    iterations: int = 1500
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    overwrite: bool = False


def _read(images: Any) -> tuple[list[np.ndarray], list[str]]:
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.io.pixels import check_finite, read_pixels

    srcs = [images] if isinstance(images, (str, Path, np.ndarray)) else list(images)
    out, names = [], []
    for k, s in enumerate(srcs):
        name = str(s) if isinstance(s, (str, Path)) else f"array {k}"
        a = np.asarray(s) if isinstance(s, np.ndarray) else check_finite(read_pixels(open_mosaic(s)), s)
        if a.ndim != 2:
            raise NcmError(f"super-resolution takes grey-level images, got shape {a.shape}", name)
        out.append(a.astype(np.float32))
        names.append(name)
    return out, names


def psnr_ssim(ref: np.ndarray, img: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``img`` against ``ref``, both normalised to 0..1."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    img = np.clip(img, 0, 1)
    return float(peak_signal_noise_ratio(ref, img, data_range=1.0)), float(
        structural_similarity(ref, img, data_range=1.0)
    )


def bicubic(lr: np.ndarray, factor: int) -> np.ndarray:
    """The bicubic baseline (the same interpolation the network starts from)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(lr, np.float32))[None, None]
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)[0, 0].numpy()


def upscale(model: Any, lr: np.ndarray, device: Any = "cpu") -> np.ndarray:
    import torch

    with torch.inference_mode():
        return (
            model.upscale(torch.from_numpy(np.ascontiguousarray(lr, np.float32))[None, None].to(device))[0, 0]
            .cpu()
            .numpy()
        )


def train_superres(
    images: Any,
    out: str | Path,
    config: SuperresConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Path:
    """Train a ``factor`` x super-resolution network on high-resolution ``images``; returns the bundle ``out``."""
    import torch

    c = merge_options(SuperresConfig, config, overrides)
    if c.factor < 2 or c.factor > 8:
        raise NcmError(f"factor must be between 2 and 8, got {c.factor}")
    if c.crop % c.factor or c.crop < 4 * c.factor:
        raise NcmError(f"crop must be a multiple of the factor and at least 4 x {c.factor} px, got {c.crop}")
    raw, names = _read(images)
    lo = float(np.percentile(np.concatenate([r.ravel()[::7] for r in raw]), 0.5))
    hi = float(np.percentile(np.concatenate([r.ravel()[::7] for r in raw]), 99.5))
    imgs = [(r - lo) / max(hi - lo, 1e-12) for r in raw]
    if len(imgs) == 1:
        cut = imgs[0].shape[1] * 4 // 5
        train, held = [imgs[0][:, :cut]], [imgs[0][:, cut:]]
    else:
        train, held = imgs[:-1], imgs[-1:]
    for a, n in zip(train, names):
        if min(a.shape) < c.crop:
            raise NcmError(f"the image is smaller than the {c.crop} px training crop (--crop)", n)
    if min(held[0].shape) < 8 * c.factor:
        raise NcmError(f"the held-out image (or fifth of the image) is smaller than {8 * c.factor} px", names[-1])
    t0 = time.monotonic()
    dev = resolve_device(c.device)
    rng = np.random.default_rng(c.seed)
    torch.manual_seed(c.seed)
    spec = SuperresSpec(c.factor, c.width, c.depth, lo, hi, {"blur": c.blur, "noise": c.noise, "factor": c.factor})
    model = build_superres(spec).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, c.iterations)
    f = c.factor
    for it in range(1, c.iterations + 1):
        check_cancel(cancel)
        xs, ys = [], []
        for _ in range(c.batch_size):
            img = train[int(rng.integers(len(train)))]
            y0, x0 = int(rng.integers(img.shape[0] - c.crop + 1)), int(rng.integers(img.shape[1] - c.crop + 1))
            hr = img[y0 : y0 + c.crop, x0 : x0 + c.crop]
            hr = hr[::-1] if rng.random() < 0.5 else hr
            hr = hr[:, ::-1] if rng.random() < 0.5 else hr
            xs.append(degrade(hr, f, c.blur, c.noise, rng))
            ys.append(np.ascontiguousarray(hr))
        x = torch.from_numpy(np.stack(xs))[:, None].to(dev)
        y = torch.from_numpy(np.stack(ys))[:, None].to(dev)
        loss = (model.upscale(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        report(progress, it, c.iterations, f"step {it}/{c.iterations} L1 {loss.item():.4f}")
    model.eval()
    scores = {"network": [], "bicubic": []}
    for h in held:
        lr_img = degrade(h, f, c.blur, c.noise, np.random.default_rng(c.seed + 1))
        ref = h[: lr_img.shape[0] * f, : lr_img.shape[1] * f]
        scores["network"].append(psnr_ssim(ref, upscale(model, lr_img, dev)))
        scores["bicubic"].append(psnr_ssim(ref, bicubic(lr_img, f)))
    spec.training = {
        "held_out": {
            k: {"psnr": float(np.mean([s[0] for s in v])), "ssim": float(np.mean([s[1] for s in v]))}
            for k, v in scores.items()
        },
        "iterations": c.iterations,
        "seconds": round(time.monotonic() - t0, 2),
        "device": str(dev),
        "images": names,
        "config": {k: v for k, v in asdict(c).items() if k != "overwrite"},
    }
    with atomic_output(out, c.overwrite, inputs=[n for n in names if not n.startswith("array ")]) as tmp:
        SuperresBundle(spec, model.cpu()).save(tmp)
    return Path(out)
