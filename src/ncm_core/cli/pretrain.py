"""``ncm pretrain``: self-supervised pretraining of a backbone on unlabelled frames and mosaics."""

from __future__ import annotations

import argparse

from ncm_core.cli._args import BAND_HELP, band, common, positive, progress
from ncm_core.options import given
from ncm_core.training.config import AMP_CHOICES, METHODS, PretrainConfig

P = PretrainConfig


def cmd_pretrain(a: argparse.Namespace) -> None:
    from ncm_core.training.pretrain import pretrain

    def show(rec: dict) -> None:
        knn = f"  k-NN accuracy {rec['knn_accuracy']:.1%}" if "knn_accuracy" in rec else ""
        print(f"epoch {rec['epoch']}: loss {rec['loss']:.4f}, {rec['crops_per_second']:.1f} crops/s{knn}", flush=True)

    r = pretrain(
        a.data,
        a.out,
        progress=progress("pretrain", a.quiet),
        on_epoch=show,
        **given(
            architecture=a.arch,
            method=a.method,
            epochs=a.epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            crop_size=a.crop_size,
            input_size=a.input_size,
            crops_per_image=a.crops,
            tiles_per_mosaic=a.tiles_per_mosaic,
            exclude_rows=a.exclude_rows,
            probe=a.probe,
            amp=a.amp,
            resume=not a.restart,
            seed=a.seed,
            device=a.device,
            overwrite=True if a.overwrite else None,
        ),
    )
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    if r.knn is not None:
        print(f"k-NN accuracy of the probe: {r.knn_initial:.1%} untrained -> {r.knn:.1%} pretrained")
    print(
        f"backbone: {r.backbone}  ({r.images_per_second:.1f} crops/s, {r.seconds:.0f} s); use it with "
        f"ncm train --arch {P.architecture if a.arch is None else a.arch} --pretrained {r.backbone}"
    )


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``ncm pretrain`` to the ``ncm`` parser."""
    p = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone on your own unlabelled images")
    p.add_argument(
        "data",
        nargs="+",
        help="folders of frames (searched recursively; class folders allowed, labels ignored), "
        "frames or mosaics (zarr, TIFF; tiles are read lazily)",
    )
    p.add_argument("out", help="folder for backbone.safetensors + backbone.json (an interrupted run resumes there)")
    p.add_argument("--arch", help=f"timm architecture (default {P.architecture})")
    p.add_argument("--method", choices=METHODS, help=f"lightly method (default {P.method})")
    p.add_argument("--epochs", type=positive, help=f"default {P.epochs}")
    p.add_argument("--batch-size", type=positive, help=f"default {P.batch_size}")
    p.add_argument("--lr", type=float, help=f"peak learning rate of AdamW (default {P.lr:g})")
    p.add_argument("--crop-size", type=positive, help=f"crop side in image pixels (default {P.crop_size})")
    p.add_argument(
        "--input-size", type=positive, help=f"side of the views given to the network (default {P.input_size})"
    )
    p.add_argument("--crops", type=positive, help=f"random crops per frame per epoch (default {P.crops_per_image})")
    p.add_argument(
        "--tiles-per-mosaic", type=positive, help=f"tiles per mosaic per epoch (default {P.tiles_per_mosaic})"
    )
    p.add_argument(
        "--exclude-rows", type=band, help=f"rows of each frame to leave out: {BAND_HELP} (default {P.exclude_rows})"
    )
    p.add_argument("--probe", help="labelled folder (class sub-folders of frames): k-NN accuracy after each epoch")
    p.add_argument("--amp", choices=AMP_CHOICES, help=f"mixed precision (default {P.amp}: on for GPUs)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUT and start again")
    p.add_argument("--overwrite", action="store_true", help="replace a finished backbone in OUT")
    p.add_argument("--seed", type=int, default=P.seed)
    common(p)
    p.set_defaults(func=cmd_pretrain)
