"""``ncm explain``: heatmaps over mosaics and maps for folders of tiles."""

from __future__ import annotations

import argparse

from ncm_core.cli._args import common, finish_batch, hw, positive, progress, strict, targets
from ncm_core.errors import NcmError
from ncm_core.explain.options import ExplainOptions


def cmd_explain(a: argparse.Namespace) -> None:
    from ncm_core.explain.folders import is_image_folder
    from ncm_core.explain.methods import check_method

    methods = [check_method(m) for m in a.method.split(",")]
    kw = dict(
        target=targets(a.target),
        layer=a.layer,
        batch_size=a.batch_size,
        window=a.window,
        stride=a.occlusion_stride,
        device=a.device,
        overwrite=a.overwrite,
    )
    if is_image_folder(a.input):
        from ncm_core.workflows.explanations import explain_folder

        r = explain_folder(
            a.bundle,
            a.input,
            a.out,
            methods=methods,
            check=a.check,
            check_images=a.check_images,
            strict=a.strict,
            progress=progress("explain", a.quiet),
            **kw,
        )
        for line in r.check_lines():
            print(line)
        print(r.summary())
        from ncm_core.batch import FAILURES_FILE

        finish_batch(r.failures, r.images + len(r.failures), r.path / FAILURES_FILE)
        return
    if len(methods) != 1:
        raise NcmError("a mosaic is explained with one method at a time (--method)")
    from ncm_core.explain.heatmaps import explain_mosaic
    from ncm_core.viz.explanations import heatmap_overlays

    h = explain_mosaic(
        a.bundle,
        a.input,
        a.out,
        method=methods[0],
        overlap=a.overlap,
        factor=a.factor,
        resume=not a.restart,
        strict=a.strict,
        allow_incomplete=a.allow_incomplete,
        missing_chunks=a.missing_chunks,
        progress=progress("explain", a.quiet),
        **kw,
    )
    pngs = heatmap_overlays(a.input, h, a.out)
    print(
        f"heatmap: {h.path}  {h.method}{' at ' + h.attrs['layer'] if h.attrs.get('layer') else ''}, "
        f"{len(h.names)} map(s) ({', '.join(h.names[:6])}{', ...' if len(h.names) > 6 else ''}), "
        f"1 value per {h.factor} px, {h.attrs['n_tiles']} tiles, {h.attrs['seconds']:.1f} s"
    )
    print(f"overlays: {', '.join(str(p) for p in pngs[:3])}{', ...' if len(pngs) > 3 else ''}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    d = ExplainOptions()
    x = sub.add_parser("explain", help="explanation maps: a heatmap over a mosaic (zarr) or maps for a folder of tiles")
    x.add_argument("bundle", help="model bundle folder")
    x.add_argument("input", help="a mosaic (zarr, OME-Zarr, TIFF, ...) or a folder of tiles / section crops")
    x.add_argument("out", help="output: a zarr group for a mosaic (e.g. gradcam.zarr), a folder for tiles")
    x.add_argument(
        "--method",
        default=d.method,
        help="gradcam, gradcam++, scorecam, layercam, gradram, "
        f"guided-backprop, guided-gradcam, occlusion (tiles: several, comma-separated; default {d.method})",
    )
    x.add_argument(
        "--target",
        help="predicted (default for classifiers), top-K, all (default for regression), a "
        "class or target name or index, class:NAME, output:K; comma-separated for several",
    )
    x.add_argument("--layer", help="target layer for CAM methods (default: the last layer with a spatial output)")
    x.add_argument("--overlap", type=int, help="mosaic: pixels shared by neighbouring tiles (default: tile/4)")
    x.add_argument(
        "--factor",
        type=positive,
        help="mosaic: mosaic pixels per heatmap pixel (default 4; 1 for guided backpropagation)",
    )
    x.add_argument(
        "--window", type=hw, default=d.window, help=f"occlusion window in model-input pixels (default {d.window[0]})"
    )
    x.add_argument("--occlusion-stride", type=hw, help="occlusion stride (default: the window)")
    x.add_argument("--batch-size", type=positive, default=d.batch_size)
    x.add_argument(
        "--check",
        action="store_true",
        help="tiles: also run the sanity checks (model randomisation, "
        "attribution on particle boundaries, deletion/insertion) into checks.json and figures",
    )
    x.add_argument(
        "--check-images",
        type=positive,
        default=d.check_images,
        help=f"tiles used by --check (default {d.check_images})",
    )
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("--restart", action="store_true", help="mosaic: ignore the record of an interrupted run")
    x.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="mosaic: finish with regions that cannot be read left empty (NaN) instead of exiting with status 3",
    )
    x.add_argument(
        "--missing-chunks",
        choices=["report", "fill"],
        default=d.missing_chunks,
        help="mosaic: zarr chunks absent from the store: report them (default) or read them as the fill value",
    )
    strict(x, "image of a folder that fails, or (a mosaic) tile with NaN/inf pixels or an unreadable or missing chunk")
    common(x)
    x.set_defaults(func=cmd_explain)
