"""``ncm predict SEG_BUNDLE MOSAIC OUT.zarr``: segmentation bundles on the streaming engine (a class per pixel)."""

from __future__ import annotations

import argparse

from ncm_core.cli._args import nonnegative, positive, progress
from ncm_core.errors import NcmError
from ncm_core.inference.options import SegmentOptions

#: options of segmentation bundles only (argparse dest -> flag)
SEGMENT_ONLY = ("window", "halo", "overlap", "blend", "chunk", "probabilities", "probability_factor", "label_name")
#: options of tile classifiers only, refused with a segmentation bundle
TILE_ONLY = ("tile", "stride", "dense", "tta", "foreground", "regions", "summary", "no_ood", "exclude_rows")


def flags(a: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The command-line flags of ``names`` that were given (not None, not False)."""
    return [f"--{n.replace('_', '-')}" for n in names if getattr(a, n, None) not in (None, False)]


def predict_segmentation(a: argparse.Namespace) -> None:
    """``ncm predict SEG_BUNDLE MOSAIC OUT.zarr``: a class per pixel on the streaming engine."""
    from ncm_core.inference.segment import segment_mosaic
    from ncm_core.inference.segmentation import open_segmentation
    from ncm_core.options import given

    if len(a.mosaics) > 1:
        raise NcmError("a segmentation bundle segments one mosaic at a time; give one MOSAIC", a.bundle)
    tile_only = flags(a, TILE_ONLY)
    if tile_only:
        raise NcmError(f"{', '.join(tile_only)}: for tile classifiers, not for a segmentation bundle", a.bundle)
    out = segment_mosaic(
        a.bundle,
        a.mosaics[0],
        a.out,
        scheduler=a.dask_scheduler,
        progress=progress("segment", a.quiet),
        **given(
            window=a.window,
            halo=a.halo,
            overlap=a.overlap,
            blend=a.blend,
            chunk=a.chunk,
            probabilities=a.probabilities or None,
            probability_factor=a.probability_factor,
            name=a.label_name,
            batch_size=a.batch_size,
            pixel_size=a.pixel_size,
            device=a.device,
            overwrite=a.overwrite,
            resume=not a.restart,
            strict=a.strict,
            allow_incomplete=a.allow_incomplete,
            missing_chunks=a.missing_chunks,
        ),
    )
    s = open_segmentation(out)
    at = s.attrs
    print(
        f"segmentation: {out}/labels/{s.name}  {at['image_shape'][0]} x {at['image_shape'][1]} px, "
        f"{len(s.classes)} classes ({', '.join(s.classes)}), {at['n_windows']} windows of {at['window']} px "
        f"(halo {at['halo']} px)"
        + "".join(f", {n} not computed ({why})" for why, n in at.get("not_computed", {}).items())
        + f", {at['seconds']:.1f} s"
    )


def add_segment_arguments(r: argparse.ArgumentParser) -> None:
    """The options of ``ncm predict`` that only segmentation bundles take."""
    sd = SegmentOptions()
    g = r.add_argument_group("segmentation bundles (ncm train --task segment): a class per pixel")
    g.add_argument(
        "--window", type=positive, help=f"window side in px (default {sd.window}; rounded up to the network's multiple)"
    )
    g.add_argument(
        "--halo",
        type=nonnegative,
        help="context in px dropped at each side of a window (default and minimum: the bundle's reach)",
    )
    g.add_argument(
        "--overlap", type=nonnegative, help=f"px shared by neighbouring windows, blended (default {sd.overlap})"
    )
    g.add_argument(
        "--blend",
        choices=["cosine", "gaussian", "constant"],
        help=f"weight of overlapping windows (default {sd.blend})",
    )
    g.add_argument("--chunk", type=positive, help="output chunk and block side in px (default: strides near 1024)")
    g.add_argument(
        "--probabilities", action="store_true", help="also write the class probabilities, at a coarser scale"
    )
    g.add_argument(
        "--probability-factor",
        type=positive,
        help=f"px per probability value along each axis (default {sd.probability_factor})",
    )
    g.add_argument("--label-name", help=f"name of the label image, OUT/labels/NAME (default {sd.name})")
