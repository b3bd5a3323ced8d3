"""Training a 3D microstructure generator from 2D phase maps (SliceGAN, Kench & Cooper 2021).

One segmented image of an isotropic material, or three of an anisotropic one (the planes normal to z, y
and x: ``yx``, ``zx``, ``zy``), n phases one-hot. Each step the generator makes ``batch_size`` volumes of
``size`` voxels a side; every slice along each axis is shown to that axis's critic (one shared critic
when isotropic) next to random crops of the training image, with the Wasserstein loss and gradient
penalty (WGAN-GP, ``critic_iters`` critic steps per generator step; Adam with WGAN-GP's betas 0.5/0.9,
which converge in fewer steps than SliceGAN's 0.9/0.99). An optional phase-fraction term
(``fraction_weight``) pulls the volume fractions of the generated phases (the argmax over the softmax,
which is what a generated volume holds; gradients pass straight through to the probabilities) towards
the training images'. The networks are in :mod:`ncm_core.models.slicegan`.

The bundle keeps an exponential moving average of the generator's weights (``ema``; Yazici et al., ICLR
2019: averaging steadies a GAN's oscillating generator), with BatchNorm statistics measured afresh on those
weights (:func:`recalibrate`), and per-phase logit offsets that bring the phase fractions of generated
volumes to the training images' (:func:`calibrate_fractions`; ``calibrate``).

A checkpoint (safetensors + JSON, :mod:`ncm_core.models.checkpoint`) is written every
``checkpoint_every`` steps to ``OUT/checkpoint``; the same call resumes from it to the same result. The
bundle (``OUT/config.json`` + ``OUT/model.safetensors``) records the training images' phase fractions
and measures.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.phase_images import one_hot, phase_fractions_of, read_phase_image
from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.models.checkpoint import save_checkpoint
from ncm_core.models.slicegan import (
    GeneratorBundle,
    GeneratorSpec,
    build_critic,
    build_generator,
    is_generator,
    latent_for,
    layers_for,
)
from ncm_core.options import merge_options
from ncm_core.outputs import check_training_output, remove
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report
from ncm_core.training.loop import open_checkpoint
from ncm_core.training.recipe import WeightAverage, array_digest, recalibrate_batchnorm

BETAS = (0.5, 0.9)  # Adam betas of WGAN-GP (Gulrajani et al. 2017); SliceGAN uses 0.9, 0.99 with 10x more steps


@dataclass(frozen=True)
class GenerateConfig:
    """Options of :func:`train_generator`: the one home of their defaults (API, CLI, widget)."""

    size: int = 64  # voxels a side of a training volume (a power of two; the critics' field of view)
    latent_channels: int = 16
    gen_width: int = 32  # channels of the generator's last hidden layer (doubling towards the latent)
    critic_width: int = 32  # channels of the critics' first layer (doubling, at most 256)
    batch_size: int = 4  # generated volumes per step
    iterations: int = 1000  # generator steps
    critic_iters: int = 5  # critic steps per generator step
    lr: float = 1e-4
    gp_weight: float = 10.0  # gradient penalty
    fraction_weight: float = 10.0  # phase-fraction term (0: off)
    calibrate: bool = True  # per-phase logit offsets so that generated volumes hold the images' phase fractions
    ema: float = 0.999  # the bundle keeps the generator's weights averaged with this decay per step (0: the last)
    checkpoint_every: int = 50  # generator steps between checkpoints
    seed: int = 0
    device: str = "auto"
    resume: bool = True
    overwrite: bool = False

    def validate(self) -> GenerateConfig:
        layers_for(self.size)
        for name in ("batch_size", "iterations", "critic_iters", "checkpoint_every", "latent_channels"):
            if int(getattr(self, name)) < 1:
                raise NcmError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gen_width < 1 or self.critic_width < 1:
            raise NcmError("gen_width and critic_width must be at least 1")
        if self.fraction_weight < 0 or self.gp_weight < 0 or self.lr <= 0:
            raise NcmError("lr must be above 0, fraction_weight and gp_weight at least 0")
        if not 0 <= self.ema < 1:
            raise NcmError(f"ema must be at least 0 and below 1, got {self.ema}")
        return self


def read_training_images(images: Any, size: int) -> tuple[list[np.ndarray], list[int], list[str]]:
    """The phase maps (one or three), their common phase values and their names; one line for bad input."""
    paths = [images] if isinstance(images, (str, Path, np.ndarray)) else list(images)
    if len(paths) not in (1, 3):
        raise NcmError(
            f"give one phase map (isotropic material) or three orthogonal ones (yx, zx, zy), got {len(paths)}"
        )
    maps = [read_phase_image(p) for p in paths]
    names = [str(p) if isinstance(p, (str, Path)) else f"array {k}" for k, p in enumerate(paths)]
    values = [sorted(int(v) for v in np.unique(m)) for m in maps]
    if any(v != values[0] for v in values):
        counts = ", ".join(f"{Path(n).name}: {len(v)} ({', '.join(map(str, v))})" for n, v in zip(names, values))
        raise NcmError(f"the three orthogonal images must hold the same phases; phase values per image: {counts}")
    for m, n in zip(maps, names):
        if min(m.shape) < size:
            raise NcmError(
                f"the training image ({m.shape[0]} x {m.shape[1]} px) is smaller than the generator's field of "
                f"view ({size} px a side): choose a smaller --size or a larger image",
                n,
            )
    return maps, values[0], names


def _fingerprint(c: GenerateConfig, maps: list[np.ndarray]) -> str:
    settings = {k: v for k, v in asdict(c).items() if k not in ("resume", "overwrite", "device")}
    return array_digest(maps, json.dumps(settings, sort_keys=True))


def train_generator(
    images: Any,
    out: str | Path,
    config: GenerateConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Path:
    """Train a 3D generator on one (isotropic) or three orthogonal (anisotropic) phase maps; returns ``out``.

    ``config`` or keyword ``overrides`` of :class:`GenerateConfig` (``size=32, iterations=200, ...``).
    """
    c = merge_options(GenerateConfig, config, overrides).validate()
    maps, phases, names = read_training_images(images, c.size)
    inputs = [p for p in names if not p.startswith("array ")]
    out = check_training_output(out, c.overwrite, inputs)
    if is_generator(out) and not (out / "checkpoint" / "state.json").exists() and not c.overwrite:
        raise NcmError("holds a finished generator; choose another folder or pass --overwrite to replace it", out)
    return _train(maps, phases, out, c, progress, cancel)


def _slices(vol: Any, axis: int) -> Any:
    """``(B, P, Z, Y, X)`` -> every slice normal to ``axis`` (0: z, 1: y, 2: x) as ``(B * n, P, a, b)``."""
    order = [(0, 2, 1, 3, 4), (0, 3, 1, 2, 4), (0, 4, 1, 2, 3)][axis]
    v = vol.permute(*order)
    return v.reshape(-1, *v.shape[2:])


def _crops(img: Any, n: int, size: int, rng: np.random.Generator, rotate: bool) -> Any:
    """``n`` random ``size`` crops of the one-hot image ``(P, H, W)``, flipped (and turned when isotropic)."""
    import torch

    _, H, W = img.shape
    out = []
    for _ in range(n):
        y, x = int(rng.integers(H - size + 1)), int(rng.integers(W - size + 1))
        crop = img[:, y : y + size, x : x + size]
        if rng.random() < 0.5:
            crop = crop.flip(1)
        if rng.random() < 0.5:
            crop = crop.flip(2)
        if rotate:
            crop = torch.rot90(crop, int(rng.integers(4)), (1, 2))
        out.append(crop)
    return torch.stack(out)


def _penalty(critic: Any, real: Any, fake: Any) -> Any:
    import torch

    a = torch.rand(len(real), 1, 1, 1, device=real.device)
    x = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return ((g.reshape(len(g), -1).norm(2, dim=1) - 1) ** 2).mean()


def _train(
    maps: list[np.ndarray],
    phases: list[int],
    out: Path,
    c: GenerateConfig,
    progress: ProgressFn | None,
    cancel: CancelFlag,
) -> Path:
    import torch

    t0 = time.monotonic()
    dev = resolve_device(c.device)
    iso = len(maps) == 1
    fractions = np.mean([phase_fractions_of(m, phases) for m in maps], axis=0).tolist()
    spec = GeneratorSpec(phases, c.size, c.latent_channels, c.gen_width, c.critic_width, iso)
    fp = _fingerprint(c, maps)
    ckpt_dir = out / "checkpoint"
    ckpt = open_checkpoint(ckpt_dir, fp, c.resume)
    rng = np.random.default_rng(c.seed)
    torch.manual_seed(c.seed)
    gen = build_generator(spec).to(dev)
    critics = [build_critic(spec).to(dev) for _ in range(1 if iso else 3)]
    opt_g = torch.optim.Adam(gen.parameters(), lr=c.lr, betas=BETAS)
    opt_d = [torch.optim.Adam(d.parameters(), lr=c.lr, betas=BETAS) for d in critics]
    avg = WeightAverage(gen, c.ema) if c.ema else None
    images = [torch.from_numpy(one_hot(m, phases)).to(dev) for m in maps]
    target = torch.tensor(fractions, dtype=torch.float32, device=dev)
    history: list[dict[str, float]] = []
    start = 0
    if ckpt is not None:
        gen.load_state_dict(ckpt["generator"])
        for d, o, sd, so in zip(critics, opt_d, ckpt["critics"], ckpt["critic_optimizers"]):
            d.load_state_dict(sd)
            o.load_state_dict(so)
        opt_g.load_state_dict(ckpt["optimizer"])
        if avg is not None:
            avg.load(ckpt["average"])
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        history, start = ckpt["history"], ckpt["iteration"]
    elapsed0 = history[-1]["seconds"] if history else 0.0
    S, B, L = c.size, c.batch_size, 4
    n_real = max(8, 4 * B)
    w_sum = f_err = g_sum = 0.0
    for it in range(start + 1, c.iterations + 1):
        check_cancel(cancel)
        for _ in range(c.critic_iters):
            with torch.no_grad():
                fake = gen(torch.randn(B, c.latent_channels, L, L, L, device=dev))
            for axis in range(3):
                critic, opt = critics[0 if iso else axis], opt_d[0 if iso else axis]
                real = _crops(images[0 if iso else axis], n_real, S, rng, iso)
                sl = _slices(fake, axis)
                pick = sl[torch.from_numpy(rng.choice(len(sl), n_real, replace=False)).to(dev)]
                w = critic(real).mean() - critic(sl).mean()
                loss = -w + c.gp_weight * _penalty(critic, real, pick)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        w_sum += w.item()
        fake = gen(torch.randn(B, c.latent_channels, L, L, L, device=dev))
        g_loss = sum(-critics[0 if iso else a](_slices(fake, a)).mean() for a in range(3))
        hard = torch.nn.functional.one_hot(fake.argmax(1), len(phases)).permute(0, 4, 1, 2, 3)
        frac = (hard + fake - fake.detach()).mean(dim=(0, 2, 3, 4))  # the argmax phases' fractions, straight-through
        f_loss = (frac - target).abs().sum()
        loss = g_loss + c.fraction_weight * f_loss if c.fraction_weight else g_loss
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if avg is not None:
            avg.update(gen)
        f_err, g_sum = f_err + f_loss.item(), g_sum + g_loss.item()
        report(progress, it, c.iterations, f"step {it}/{c.iterations} wasserstein {w.item():.3f}")
        if it % c.checkpoint_every and it != c.iterations:
            continue
        n = it - (history[-1]["iteration"] if history else start)
        rec = {
            "iteration": it,
            "wasserstein": w_sum / n,
            "generator_loss": g_sum / n,
            "fraction_error": f_err / n,
            "seconds": elapsed0 + time.monotonic() - t0,
        }
        history.append(rec)
        w_sum = f_err = g_sum = 0.0
        save_checkpoint(
            ckpt_dir,
            {
                "fingerprint": fp,
                "iteration": it,
                "history": history,
                "generator": gen.state_dict(),
                "critics": [d.state_dict() for d in critics],
                "optimizer": opt_g.state_dict(),
                "critic_optimizers": [o.state_dict() for o in opt_d],
                **({"average": avg.state()} if avg is not None else {}),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
            },
        )
    spec.training = {
        "images": [m.shape for m in maps],
        "phase_fractions": fractions,
        "measures": training_measures(maps, phases),
        "iterations": c.iterations,
        "seconds": round(history[-1]["seconds"], 2) if history else 0.0,
        "device": str(dev),
        "history": history,
        "config": {k: v for k, v in asdict(c).items() if k not in ("resume", "overwrite")},
    }
    final = gen if avg is None else avg.module
    recalibrate(final, c.batch_size, c.latent_channels, dev)
    if c.calibrate:
        spec.logit_offsets, spec.training["calibration"] = calibrate_fractions(
            final, fractions, spec, dev, progress=progress, cancel=cancel
        )
    model = build_generator(spec)
    model.load_state_dict(final.cpu().state_dict())
    GeneratorBundle(spec, model.eval()).save(out)
    remove(ckpt_dir)
    return out


def recalibrate(gen: Any, batch: int, channels: int, device: Any, batches: int = 32) -> None:
    """BatchNorm statistics of the final weights (the running averages lag behind a GAN's fast-moving
    generator): the mean over ``batches`` training-size batches, as generation uses them in evaluation mode."""
    import torch

    latents = [torch.randn(batch, channels, 4, 4, 4, device=device) for _ in range(batches)]
    recalibrate_batchnorm(gen, latents, device)


def calibrate_fractions(
    gen: Any,
    target: list[float],
    spec: GeneratorSpec,
    device: Any,
    *,
    side: int = 96,
    volumes: int = 128,
    keep: int = 2**14,
    max_offset: float = 3.0,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> tuple[list[float], dict[str, Any]]:
    """Per-phase logit offsets that make the generator's volumes (evaluation mode, ``volumes`` volumes of at
    least ``side`` voxels a side, ``keep`` random voxels of each) hold the target phase fractions; and a record
    of the fractions before and after.

    A GAN's phase fractions drift from its images' by about 0.01-0.02 (the adversarial pull against the
    phase-fraction term, and evaluation-mode BatchNorm against training-mode batches). The argmax of
    ``log p + b`` moves the boundary voxels (not saturated ones) of the phases until the fractions match, like
    a threshold. The offsets are found by sign steps that grow while a phase's error keeps its sign and halve
    when it flips (Rprop), which converges where the fractions hardly move with ``b``; ``|b|`` is capped at
    ``max_offset`` so that the structure is never redrawn, and the record says when the cap stopped it short.
    Many volumes: the fractions of one 96^3 volume vary by about 0.01 with its latent, so 16 of them left
    errors of up to 0.01; 128 bring the standard error to about 0.001. ``progress`` hears of each volume and
    ``cancel`` is checked before each (on two CPU cores the volumes take about half a minute, after the last
    training step).
    """
    import torch

    latent = latent_for(side, spec.layers)
    logp = []
    with torch.no_grad():
        g = torch.Generator(device="cpu").manual_seed(12345)
        for i in range(volumes):
            check_cancel(cancel)
            report(progress, i, volumes, f"calibrating phase fractions: volume {i + 1}/{volumes}")
            z = torch.randn(1, spec.latent_channels, latent, latent, latent, generator=g).to(device)
            p = gen(z)[0].reshape(len(target), -1).T
            pick = torch.randperm(len(p), generator=g)[:keep].to(p.device)
            logp.append(p[pick].clamp_min(1e-12).log().cpu())
    lp = torch.cat(logp).double()
    goal = torch.tensor(target, dtype=torch.float64)
    b = torch.zeros(len(target), dtype=torch.float64)
    step = torch.full_like(b, 0.1)
    last = torch.zeros_like(b)

    def fractions(b: Any) -> Any:
        return torch.bincount((lp + b).argmax(1), minlength=len(target)).double() / len(lp)

    before = f = fractions(b)
    for _ in range(200):
        err = goal - f
        if err.abs().max() < 5e-4:
            break
        sign = err.sign()
        step = torch.where(sign == last, step * 1.5, step * 0.5).clamp(1e-4, 1.0)
        b = (b + step * sign).clamp(-max_offset, max_offset)
        last, f = sign, fractions(b)
    capped = bool(b.abs().max() >= max_offset - 1e-9)
    b -= b.mean()  # the same argmax, offsets centred on 0
    after = fractions(b)
    record = {
        "target": [round(float(v), 4) for v in target],
        "before": [round(float(v), 4) for v in before],
        "after": [round(float(v), 4) for v in after],
        "capped": capped,
    }
    return [round(float(v), 6) for v in b], record


def describe_calibration(bundle: str | Path) -> str:
    """``phase fractions 0.639/0.361 -> 0.600/0.400 (images 0.600/0.400)``: what the calibration of a trained
    generator did ("" when it was not calibrated); for the command line and the Generate dock."""
    try:
        cal = json.loads((Path(bundle) / "config.json").read_text())["training"]["calibration"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    before, after, target = ("/".join(f"{v:.3f}" for v in cal[k]) for k in ("before", "after", "target"))
    note = " (offsets capped: the generator is far off; train longer)" if cal.get("capped") else ""
    return f"phase fractions {before} -> {after} (images {target}){note}"


def training_measures(maps: list[np.ndarray], phases: list[int]) -> dict[str, Any]:
    """The training images' measures recorded in the bundle (what ``ncm generate check`` compares)."""
    from ncm_core.evaluation.generate import image_measures

    return {"images": [image_measures(m, phases) for m in maps]}
