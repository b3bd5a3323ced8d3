"""``ncm train --task segment``: a segmenter (forest or U-Net) from images and ``<stem>_labels`` images."""

from __future__ import annotations

import argparse
import sys

from ncm_core.cli._args import positive, progress
from ncm_core.errors import NcmError
from ncm_core.options import given
from ncm_core.training.segment_config import ENGINES, FEATURE_GROUPS, NORMALIZATIONS, SegmentConfig

S = SegmentConfig


def _names(value: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {value!r}")
    return names


def _sigmas(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, e.g. 1,2,4,8,16, got {value!r}") from None


def train_segment(a: argparse.Namespace) -> None:
    """Run ``ncm train --task segment``: train, then print the validation IoU."""
    from ncm_core.training.segment import describe, train_segmenter

    if a.targets or a.folds:
        raise NcmError("--targets and --folds are for regression (--task regress)")
    out = train_segmenter(
        a.data,
        a.out,
        progress=progress("train", a.quiet),
        **given(
            engine=a.engine,
            normalization=a.normalization,
            classes=a.classes,
            colors=a.colors,
            pixel_size=a.pixel_size,
            val_fraction=a.val_fraction,
            seed=a.seed,
            overwrite=True if a.overwrite else None,
            sigmas=a.sigmas,
            features=a.features,
            trees=a.trees,
            leaves=a.leaves,
            max_per_class=a.max_per_class,
            threads=a.threads,
            encoder=a.arch,
            epochs=a.epochs,
            batch_size=a.batch_size,
            patch_size=a.patch_size,
            lr=a.lr,
            pretrained=a.pretrained,
            patience=a.patience,
            amp=a.amp,
            resume=False if a.restart else None,
            device=None if a.device == "auto" else a.device,
        ),
    )
    from ncm_core.models.segmenter import read_segmenter_config

    for note in read_segmenter_config(out).training.get("notes", []):
        print(f"ncm: note: {note}", file=sys.stderr)
    print(f"bundle: {out}  {describe(out)}")


def add_arguments(t: argparse.ArgumentParser) -> None:
    """The segmentation options of ``ncm train`` (the shared ones, --epochs, --lr, ..., are the command's)."""
    g = t.add_argument_group(
        "segmentation (--task segment: DATA holds <stem>.png/.tif images and <stem>_labels.png/.tif, "
        "0 = unlabelled, k = class k; --arch is the U-Net's encoder)"
    )
    g.add_argument("--engine", choices=ENGINES, help=f"forest (pixel classifier) or unet (default {S.engine})")
    g.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help="scale pixels by the training images' range, or each image (and mosaic) by its own, for "
        f"acquisitions whose brightness varies (default {S.normalization})",
    )
    g.add_argument("--classes", type=_names, help="class names a,b,c for label values 1,2,3 (default: classes.txt)")
    g.add_argument("--colors", type=_names, help="a #rrggbb colour per class (default: from the class names)")
    g.add_argument(
        "--sigmas", type=_sigmas, help=f"forest feature scales in px (default {','.join(f'{s:g}' for s in S.sigmas)})"
    )
    g.add_argument(
        "--features",
        type=_names,
        help=f"forest feature groups, some of {','.join(FEATURE_GROUPS)} (default all)",
    )
    g.add_argument("--trees", type=positive, help=f"forest boosting rounds (default {S.trees})")
    g.add_argument("--leaves", type=positive, help=f"leaves per tree (default {S.leaves})")
    g.add_argument(
        "--max-per-class", type=positive, help=f"labelled pixels sampled per class (default {S.max_per_class})"
    )
    g.add_argument("--threads", type=positive, help=f"forest threads (default {S.threads})")
    g.add_argument("--patch-size", type=positive, help=f"U-Net training patch side in px (default {S.patch_size})")
