"""``ncm generate``, ``ncm inpaint`` and ``ncm superres``: generating microstructure, filling, sharpening."""

from __future__ import annotations

import argparse
import json

from ncm_core.cli._args import common, positive, progress
from ncm_core.evaluation.generate import CheckOptions
from ncm_core.inference.generate import VolumeOptions
from ncm_core.inference.inpaint import InpaintOptions
from ncm_core.inference.superres import SuperresOptions
from ncm_core.options import given
from ncm_core.training.generate import GenerateConfig
from ncm_core.training.superres import SuperresConfig

G, V, C, IP, S, SO = GenerateConfig, VolumeOptions, CheckOptions, InpaintOptions, SuperresConfig, SuperresOptions


def zyx(value: str) -> tuple[int, int, int]:
    """``--size``: ``N`` (a cube) or ``Z,Y,X`` voxels."""
    try:
        parts = [int(v) for v in value.replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or Z,Y,X, got {value!r}") from None
    if len(parts) not in (1, 3) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or Z,Y,X whole numbers of at least 1, got {value!r}")
    return (parts[0],) * 3 if len(parts) == 1 else (parts[0], parts[1], parts[2])


def non_negative(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return v


def cmd_train(a: argparse.Namespace) -> None:
    from ncm_core.training.generate import describe_calibration, train_generator

    out = train_generator(
        a.images,
        a.out,
        progress=progress("generate train", a.quiet),
        **given(
            size=a.size,
            iterations=a.iterations,
            batch_size=a.batch_size,
            critic_iters=a.critic_iters,
            latent_channels=a.latent_channels,
            gen_width=a.gen_width,
            critic_width=a.critic_width,
            lr=a.lr,
            fraction_weight=a.fraction_weight,
            ema=a.ema,
            calibrate=False if a.no_calibrate else None,
            checkpoint_every=a.checkpoint_every,
            seed=a.seed,
            device=a.device,
            resume=False if a.restart else None,
            overwrite=True if a.overwrite else None,
        ),
    )
    t = json.loads((out / "config.json").read_text())["training"]
    print(f"generator: {out} ({t['iterations']} steps, {t['seconds']:.0f} s on {t['device']})")
    calibration = describe_calibration(out)
    if calibration:
        print(calibration)


def cmd_volume(a: argparse.Namespace) -> None:
    from ncm_core.inference.generate import generate_volume

    out = generate_volume(
        a.bundle,
        a.out,
        progress=progress("generate volume", a.quiet),
        **given(
            size=a.size,
            seed=a.seed,
            block=a.block,
            voxel_size=a.voxel_size,
            device=a.device,
            overwrite=True if a.overwrite else None,
        ),
    )
    print(f"volume: {out}")


def cmd_check(a: argparse.Namespace) -> None:
    from ncm_core.evaluation.generate import check_generator

    r = check_generator(
        a.bundle,
        a.out,
        progress=progress("generate check", a.quiet),
        **given(
            volumes=a.volumes,
            size=a.size,
            slices=a.slices,
            seed=a.seed,
            tortuosity=False if a.no_tortuosity else None,
            device=a.device,
            overwrite=True if a.overwrite else None,
        ),
    )
    head = ("phase", "axis", "fraction gen-real", "S2 RMSE", "chord RMSE", "interf. ratio", "d50 ratio")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (6, 4, 17, 8, 10, 13, 9))))
    for axis, comp in zip("zyx", r["comparison"]):
        for ph, c in comp.items():
            print(
                f"{ph:>6} {axis:>4} {c['fraction_difference']:>+17.3f} {c['s2_rmse']:>8.3f} "
                f"{c['chord_cdf_rmse']:>10.3f} {c['interface_density_ratio']:>13.2f} {c['d50_ratio']:>9.2f}"
            )
    for ph, vol in r["volumetric"].items():
        text = ", ".join(f"{k.replace('_', ' ')} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in vol.items())
        print(f"phase {ph} in 3D over {len(next(iter(vol.values()))['values'])} volumes: {text}")
    print(f"check: {a.out}/check.json, figure {a.out}/check.png")


def cmd_inpaint(a: argparse.Namespace) -> None:
    from ncm_core.inference.inpaint import inpaint

    out = inpaint(
        a.image,
        a.mask,
        a.out,
        progress=progress("inpaint", a.quiet),
        **given(
            patch=a.patch,
            candidates=a.candidates,
            kind=a.kind,
            refine=a.refine,
            seed=a.seed,
            overwrite=True if a.overwrite else None,
        ),
    )
    print(f"inpainted: {out}")


def cmd_sr_train(a: argparse.Namespace) -> None:
    from ncm_core.training.superres import train_superres

    out = train_superres(
        a.images,
        a.out,
        progress=progress("superres train", a.quiet),
        **given(
            factor=a.factor,
            blur=a.blur,
            noise=a.noise,
            iterations=a.iterations,
            batch_size=a.batch_size,
            crop=a.crop,
            seed=a.seed,
            device=a.device,
            overwrite=True if a.overwrite else None,
        ),
    )
    h = json.loads((out / "config.json").read_text())["training"]["held_out"]
    n, b = h["network"], h["bicubic"]
    print(
        f"super-resolution: {out}; held out: PSNR {n['psnr']:.2f} dB (bicubic {b['psnr']:.2f}), "
        f"SSIM {n['ssim']:.3f} (bicubic {b['ssim']:.3f})"
    )


def cmd_sr_apply(a: argparse.Namespace) -> None:
    from ncm_core.inference.superres import apply_superres

    out = apply_superres(
        a.bundle,
        a.image,
        a.out,
        progress=progress("superres", a.quiet),
        **given(
            factor=a.factor,
            window=a.window,
            chunk=a.chunk,
            device=a.device,
            resume=False if a.restart else None,
            overwrite=True if a.overwrite else None,
        ),
    )
    print(f"super-resolved: {out}")


def _generate(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="3D microstructure from 2D phase maps (SliceGAN): train, volume, check")
    gs = g.add_subparsers(dest="generate_command", required=True, metavar="ACTION")
    p = gs.add_parser("train", help="train a 3D generator on one (isotropic) or three orthogonal phase maps")
    p.add_argument("images", nargs="+", help="one phase map, or three (yx, zx, zy planes), then OUT")
    p.add_argument("out", help="folder for the generator bundle (an interrupted run resumes there)")
    p.add_argument("--size", type=positive, help=f"training volume side, a power of two (default {G.size})")
    p.add_argument("--iterations", type=positive, help=f"generator steps (default {G.iterations})")
    p.add_argument("--batch-size", type=positive, help=f"volumes per step (default {G.batch_size})")
    p.add_argument("--critic-iters", type=positive, help=f"critic steps per generator step (default {G.critic_iters})")
    p.add_argument("--latent-channels", type=positive, help=f"default {G.latent_channels}")
    p.add_argument("--gen-width", type=positive, help=f"generator width (default {G.gen_width})")
    p.add_argument("--critic-width", type=positive, help=f"critic width (default {G.critic_width})")
    p.add_argument("--lr", type=float, help=f"Adam learning rate (default {G.lr:g})")
    p.add_argument(
        "--fraction-weight",
        type=non_negative,
        help=f"phase-fraction loss weight, 0 = off (default {G.fraction_weight:g})",
    )
    p.add_argument(
        "--ema",
        type=non_negative,
        help=f"weights kept: averaged with this decay per step (below 1; 0 = the last; default {G.ema:g})",
    )
    p.add_argument(
        "--checkpoint-every", type=positive, help=f"steps between checkpoints (default {G.checkpoint_every})"
    )
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="keep the raw phase fractions (default: logit offsets bring them to the images')",
    )
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUT and start again")
    p.add_argument("--overwrite", action="store_true", help="replace a finished generator in OUT")
    p.add_argument("--seed", type=int)
    common(p)
    p.set_defaults(func=cmd_train)

    p = gs.add_parser("volume", help="generate a volume of any size, streamed to OME-Zarr")
    p.add_argument("bundle", help="generator bundle (ncm generate train)")
    p.add_argument("out", help="output .zarr group")
    p.add_argument("--size", type=zyx, help="N or Z,Y,X voxels (default {},{},{})".format(*V.size))
    p.add_argument("--seed", type=int, help=f"the same seed gives the same volume (default {V.seed})")
    p.add_argument("--block", type=positive, help=f"voxels a side made at once (default {V.block})")
    p.add_argument("--voxel-size", type=float, help="micrometres per voxel (metadata)")
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_volume)
    _check(gs)


def _check(gs: argparse._SubParsersAction) -> None:
    p = gs.add_parser("check", help="measure generated volumes against the training images")
    p.add_argument("bundle", help="generator bundle")
    p.add_argument("out", help="folder for check.json, check.png and the generated volumes")
    p.add_argument("--volumes", type=positive, help=f"volumes generated (default {C.volumes})")
    p.add_argument("--size", type=positive, help=f"voxels a side (default {C.size})")
    p.add_argument("--slices", type=positive, help=f"slices per axis measured in 2D (default {C.slices})")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-tortuosity", action="store_true", help="skip TauFactor (the slowest part)")
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_check)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``ncm generate``, ``ncm inpaint`` and ``ncm superres`` to the ``ncm`` parser."""
    _generate(sub)
    p = sub.add_parser("inpaint", help="fill masked regions with structure that matches their surroundings")
    p.add_argument("image", help="grey-level image or phase map")
    p.add_argument("mask", help="image of the same size: non-zero = fill")
    p.add_argument("out", help="output .tif or .png")
    p.add_argument("--patch", type=positive, help=f"patch side in pixels (default {IP.patch})")
    p.add_argument("--candidates", type=positive, help=f"source patches compared (default {IP.candidates})")
    p.add_argument("--kind", choices=("auto", "grey", "labels"), help=f"default {IP.kind}")
    p.add_argument("--refine", type=int, choices=range(0, 6), metavar="0..5", help=f"seam passes (default {IP.refine})")
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true")
    common(p, device=False)
    p.set_defaults(func=cmd_inpaint)

    s = sub.add_parser("superres", help="super-resolution: train on degraded pairs, apply tile by tile")
    ss = s.add_subparsers(dest="superres_command", required=True, metavar="ACTION")
    p = ss.add_parser("train", help="train on pairs made by degrading high-resolution images")
    p.add_argument("images", nargs="+", help="high-resolution grey-level images (the last one is held out), then OUT")
    p.add_argument("out", help="bundle folder")
    p.add_argument("--factor", type=positive, help=f"upscaling factor (default {S.factor})")
    p.add_argument("--blur", type=non_negative, help=f"degradation blur sigma, low-res px (default {S.blur})")
    p.add_argument("--noise", type=non_negative, help=f"degradation noise, fraction of the range (default {S.noise})")
    p.add_argument("--iterations", type=positive, help=f"default {S.iterations}")
    p.add_argument("--batch-size", type=positive, help=f"default {S.batch_size}")
    p.add_argument("--crop", type=positive, help=f"high-resolution crop side (default {S.crop})")
    p.add_argument("--seed", type=int)
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_sr_train)
    p = ss.add_parser("apply", help="super-resolve an image or mosaic into OME-Zarr, tile by tile")
    p.add_argument("bundle")
    p.add_argument("image")
    p.add_argument("out", help="output .zarr group")
    p.add_argument("--factor", type=positive, help="must be the model's factor (a check)")
    p.add_argument("--window", type=positive, help=f"window side, input px (default {SO.window})")
    p.add_argument("--chunk", type=positive, help=f"block side, input px (default {SO.chunk})")
    p.add_argument("--restart", action="store_true", help="do not resume an interrupted run")
    p.add_argument("--overwrite", action="store_true")
    common(p)
    p.set_defaults(func=cmd_sr_apply)
