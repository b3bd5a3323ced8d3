"""``ncm predict`` and ``ncm evaluate``: mosaic and section predictions and their scores."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ncm_core.cli._args import band, common, finish_batch, positive, progress, strict, truth
from ncm_core.cli.predict_segment import SEGMENT_ONLY, add_segment_arguments, flags, predict_segmentation
from ncm_core.errors import NcmError
from ncm_core.inference.options import OOD_WARN_FRACTION, PredictOptions, SegmentOptions


def cmd_predict(a: argparse.Namespace) -> None:
    from ncm_core.models.bundle import load_bundle, read_bundle_config
    from ncm_core.models.segmenter import is_segmenter

    if is_segmenter(a.bundle):
        return predict_segmentation(a)
    given_ = flags(a, SEGMENT_ONLY)
    if given_:
        raise NcmError(f"{', '.join(given_)}: for segmentation bundles; this is a tile classifier", a.bundle)
    if len(a.mosaics) > 1:
        return _predict_several(a)
    a.mosaic = a.mosaics[0]  # one mosaic: as before batches, OUT is its prediction
    check_side_files(a)  # before the prediction, not after it

    # the config alone says the task; the path (not a loaded model) lets a short run take the light path
    # (ONNX Runtime on a cached graph, without importing PyTorch: ncm_core.inference.light)
    from ncm_core.inference.ensemble import is_ensemble

    if is_ensemble(a.bundle):  # a cross-validation folder: its folds' bundles predict together
        return _predict_section(a, a.bundle)
    if read_bundle_config(a.bundle).task == "regress":
        return _predict_section(a, load_bundle(a.bundle))
    from ncm_core.inference.predict import predict_mosaic

    p = predict_mosaic(a.bundle, a.mosaic, a.out, scheduler=a.dask_scheduler, **predict_options(a))
    at = p.attrs
    if at.get("info_bar"):
        print(f"ncm: note: {a.mosaic}: information bar detected, rows {at['info_bar']} left out", file=sys.stderr)
    print(
        f"prediction: {p.path}  grid {p.grid.shape[0]}x{p.grid.shape[1]} tiles of {p.grid.tile} px, "
        f"{at['n_predicted']} predicted, {at['n_masked']} masked"
        + "".join(f", {n} not predicted ({why})" for why, n in at.get("not_predicted", {}).items())
        + (
            f", dense ({at['n_rechecked']} rechecked exactly)"
            if "n_rechecked" in at
            else ", dense"
            if at["dense"]
            else ""
        )
        + f", {at['seconds']:.1f} s"
    )
    from ncm_core.evaluation.evaluate import summarize_prediction, write_rows

    rows = summarize_prediction(p, truth(a.regions)[0] if a.regions else None)
    whole = rows[0] if not a.regions else summarize_prediction(p)[0]
    if whole["tiles"]:
        print(
            f"whole image: {whole['predicted']} (mean probability {whole['confidence']:.2f}); majority "
            f"{whole['majority']} ({whole['majority_fraction']:.0%} of tiles)"
        )
    if "ood_fraction" in whole and whole["tiles"]:
        warn = (
            "  WARNING: much of this image is unlike the training data"
            if whole["ood_fraction"] > OOD_WARN_FRACTION
            else ""
        )
        print(f"out-of-distribution tiles: {whole['ood_fraction']:.1%}{warn}")
    if a.summary:
        write_rows(Path(a.summary), rows)
        print(f"summary written to {a.summary}")


def print_report(per_class: dict, spread: dict | None, what: str) -> None:
    """Per-class recall (lowest first), the validation spread, and its warning line (on stderr)."""
    import sys

    from ncm_core.evaluation.report import recall_text, spread_text

    recall = {n: v["recall"] for n, v in per_class.items() if v.get("support")}
    if recall:
        print(f"{what} recall per class: {recall_text(recall)}")
    if spread_text(spread):
        print(spread_text(spread))
    if spread and spread.get("warning"):
        print(f"ncm: warning: {spread['warning']}", file=sys.stderr)


def predict_options(a: argparse.Namespace) -> dict[str, object]:
    """The PredictOptions fields and progress of ``ncm predict``'s arguments (None, an option not given,
    keeps the default), the same for one mosaic and for several."""
    return dict(
        tile=a.tile,
        stride=a.stride,
        batch_size=a.batch_size,
        exclude_rows=a.exclude_rows,
        foreground=a.foreground,
        device=a.device,
        overwrite=a.overwrite,
        resume=not a.restart,
        dense=a.dense,
        dense_recheck=a.dense_recheck,
        tta=a.tta,
        backend=a.backend,
        ood=not a.no_ood,
        pixel_size=a.pixel_size,
        strict=a.strict,
        allow_incomplete=a.allow_incomplete,
        missing_chunks=a.missing_chunks,
        progress=progress("predict", a.quiet),
    )


def _predict_several(a: argparse.Namespace) -> None:
    """Several mosaics into the folder OUT (``<stem>.zarr`` each); the failing ones are skipped and listed."""
    from ncm_core.batch import FAILURES_FILE
    from ncm_core.evaluation.evaluate import summarize_prediction
    from ncm_core.inference.several import output_names, predict_mosaics
    from ncm_core.models.bundle import read_bundle_config

    if a.regions:
        raise NcmError("--regions is a map of one mosaic; with several mosaics, predict that one alone", a.regions)
    from ncm_core.inference.ensemble import is_ensemble

    if is_ensemble(a.bundle) or read_bundle_config(a.bundle).task == "regress":
        raise NcmError("a regression bundle predicts one cross-section at a time; give one mosaic", a.bundle)
    summary = Path(a.summary).expanduser() if a.summary else None
    if summary is not None:  # before the predictions, not after them
        check_summary(summary, (a.bundle, *a.mosaics, *(Path(a.out) / n for n in output_names(a.mosaics))))
    r = predict_mosaics(a.bundle, a.mosaics, a.out, scheduler=a.dask_scheduler, **predict_options(a))
    rows: list[dict[str, object]] = []
    for src, p in r.predictions.items():
        whole = summarize_prediction(p)[0]
        rows.append({"mosaic": src, **whole})
        answer = f"{whole['predicted']} (mean probability {whole['confidence']:.2f})" if whole["tiles"] else "no tiles"
        print(f"prediction: {p.path}  {p.attrs['n_predicted']} tiles predicted; whole image: {answer}")
    rows += [{"mosaic": f.input, "failed": f.reason} for f in r.failures]
    if summary is not None:
        write_union(summary, rows)
        print(f"summary written to {summary}")
    finish_batch(r.failures, r.total, r.out / FAILURES_FILE)


def write_union(path: Path, rows: list[dict[str, object]]) -> None:
    """A CSV of ``rows`` whose columns are every key in the order first seen (blank where a row lacks one)."""
    import csv

    cols = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)


def _predict_section(a: argparse.Namespace, bundle: object) -> None:
    from ncm_core.evaluation.regression import write_section_prediction
    from ncm_core.inference.sections import predict_section
    from ncm_core.outputs import check_output

    out = check_output(a.out, a.overwrite, (a.bundle, a.mosaic))
    from ncm_core.io.mosaic import open_mosaic

    mosaic = open_mosaic(a.mosaic, pixel_size=a.pixel_size)
    sp = predict_section(bundle, mosaic, mode=a.mode, device=a.device, progress=progress("predict", a.quiet))
    write_section_prediction(sp, out)
    g = sp.geometry
    print(section_line(g))
    if sp.members > 1:
        print(f"  mean of {sp.members} fold bundles; 90 % interval in brackets")
    for n, v in sp.summary().items():
        band = f"  [{v['low90']:.4g}, {v['high90']:.4g}]" if "low90" in v else ""
        print(f"  {n}: {v['mean']:.4g} +- {v['std']:.2g}{band}")
    if sp.ood is not None and (sp.ood > 1).mean() > OOD_WARN_FRACTION:
        print(f"WARNING: {(sp.ood > 1).mean():.0%} of the crops are unlike the training data")
    print(f"prediction: {out / 'crops.csv'}, {out / 'summary.json'}, {out / 'rate_capability.png'}")


def check_side_files(a: argparse.Namespace) -> None:
    """``--regions`` must exist and ``--summary`` be writable, not an input, before any work starts."""
    if a.regions and not Path(a.regions).expanduser().exists():
        raise NcmError("region map not found (--regions)", a.regions)
    if a.summary:
        check_summary(Path(a.summary).expanduser(), (a.bundle, a.mosaic, a.regions, a.out))


def check_summary(s: Path, inputs: tuple[object, ...]) -> None:
    """``--summary``: not an input or an output, a file name in an existing, writable folder."""
    from ncm_core.outputs import check_inputs

    check_inputs(s, inputs)
    if s.is_dir():
        raise NcmError("--summary is a folder; give a CSV file name", s)
    parent = s.resolve().parent
    if not parent.is_dir():
        raise NcmError(f"the folder of --summary ({parent}) does not exist", s)
    if not os.access(parent, os.W_OK):
        raise NcmError(f"the folder of --summary ({parent}) is not writable", s)


def section_line(g: object) -> str:
    """The one-line summary of a section's geometry (thickness in um when the pixel size is known, else px)."""
    thickness = f"{g.thickness_um:.1f} um" if g.thickness_um is not None else f"{g.thickness_px:.0f} px"
    return f"section: collector angle {g.angle_deg:+.2f} deg, active layer {thickness}, {len(g.crops)} crops"


def cmd_evaluate(a: argparse.Namespace) -> None:
    from ncm_core.evaluation.evaluate import evaluate, evaluate_prediction, write_metrics

    if a.prediction:
        if not a.truth:
            raise NcmError("--prediction needs --truth (a per-pixel class map)")
        if a.out:
            from ncm_core.outputs import check_inputs

            check_inputs(a.out, (a.prediction, a.truth))
        m = evaluate_prediction(a.prediction, *truth(a.truth))
        if a.out:
            write_metrics(m, a.out)
        print(f"tile accuracy {m['tile_accuracy']:.1%} over {m['n_scored']} tiles")
    else:
        if not (a.bundle and a.data):
            raise NcmError("evaluate needs BUNDLE and DATA (class folders), or --prediction and --truth")
        m = evaluate(
            a.bundle,
            a.data,
            out=a.out,
            split=a.split,
            device=a.device,
            strict=a.strict,
            tta=a.tta,
            progress=progress("evaluate", a.quiet),
        )
        for level in ("images", "tiles"):
            mm = m[level]
            extra = "".join(f", {f} {mm[f + '_accuracy']:.1%}" for f in mm.get("marginals", {}))
            print(f"{level[:-1]} accuracy {mm['accuracy']:.1%} ({mm['n']} {level}){extra}")
        print_report(m["images"]["per_class"], m.get("validation"), "image")
        if "ood_fraction" in m:
            print(f"out-of-distribution tiles: {m['ood_fraction']:.1%}")
    if a.out:
        print(f"metrics written to {a.out}")
    if not a.prediction:
        from ncm_core.batch import FAILURES_FILE, Failure

        failed = [Failure(**f) for f in m["failures"]]
        finish_batch(failed, m["images"]["n"] + len(failed), Path(a.out) / FAILURES_FILE if a.out else None)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    r = sub.add_parser(
        "predict",
        help="classify every tile of a mosaic, segment every pixel of it (segmentation bundles), or predict "
        "values along a cross-section",
    )
    r.add_argument("bundle", help="model bundle folder")
    r.add_argument(
        "mosaics",
        nargs="+",
        metavar="MOSAIC",
        help="zarr, OME-Zarr, TIFF, PNG or JPEG; several: each is predicted into OUT/<stem>.zarr, one that "
        "fails is skipped and listed in OUT/failures.csv (exit status 3)",
    )
    r.add_argument(
        "out",
        help="output zarr group, e.g. prediction.zarr (regression: a folder; several mosaics: a folder)",
    )
    r.add_argument("--tile", type=positive, help="tile size in pixels (default: the bundle's)")
    r.add_argument("--stride", type=positive, help="tile stride in pixels (default: tile)")
    d, sd = PredictOptions(), SegmentOptions()
    r.add_argument(
        "--batch-size",
        type=positive,
        help=f"tiles per batch (default {d.batch_size}); segmentation bundles: windows per batch "
        f"(default {sd.batch_size})",
    )
    r.add_argument(
        "--exclude-rows",
        type=band,
        help="band of rows to skip, e.g. --exclude-rows=-32:; detect (default): an SEM information bar on the "
        "bottom or top edge, where one is found; auto: one must be found; none",
    )
    r.add_argument("--foreground", action="store_true", help="skip empty (flat) background tiles")
    r.add_argument(
        "--dense",
        action="store_true",
        help="overlapping tiles (stride < tile): run the trunk once per "
        "block and pool each tile's features (faster, approximate near tile borders)",
    )
    r.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average each tile's probabilities over flips and a quarter turn (4x slower)",
    )
    r.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime"],
        default=d.backend,
        help="inference engine: auto (default) uses ONNX Runtime on the CPU where it is installed and "
        "measures faster, else PyTorch",
    )
    r.add_argument(
        "--dense-recheck",
        type=float,
        default=d.dense_recheck,
        metavar="MARGIN",
        help="dense mode: evaluate a tile exactly when its two most probable classes are closer than "
        f"this (default {d.dense_recheck}; 0 = never)",
    )
    r.add_argument("--overwrite", action="store_true")
    r.add_argument(
        "--summary",
        help="CSV with the aggregate (mean probabilities, majority, confidence, OOD share) "
        "of the whole image, or of each region with --regions",
    )
    r.add_argument("--regions", help="per-pixel region map (e.g. OME-Zarr labels) to aggregate tiles by")
    r.add_argument("--no-ood", action="store_true", help="skip the out-of-distribution scores")
    r.add_argument(
        "--pixel-size",
        type=float,
        help="micrometres per pixel of the mosaic, when the file does not say or says wrongly (tiles then cover "
        "the area the model was trained on)",
    )
    r.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="when regions cannot be read, finish the prediction with them marked as not predicted (listed in "
        "its attributes) instead of exiting with status 3 to retry them",
    )
    r.add_argument(
        "--missing-chunks",
        choices=["report", "fill"],
        default=d.missing_chunks,
        help="zarr chunks absent from the store: report them as unreadable (default), or read them as the "
        "array's fill value (for stores that leave out empty chunks on purpose)",
    )
    r.add_argument(
        "--mode",
        choices=["center", "sliding"],
        default="center",
        help="regression bundles: crops along the cross-section, centred or sliding",
    )
    r.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="run blocks on dask.distributed: tcp://host:8786 "
        "(a running scheduler) or local:N (N local worker processes)",
    )
    r.add_argument(
        "--restart",
        action="store_true",
        help="ignore the record of an interrupted run and start again (by default the same command resumes it)",
    )
    add_segment_arguments(r)
    strict(
        r,
        "tile with NaN/inf pixels or an unreadable or missing chunk (by default such tiles are left out, counted and "
        "reported), or the first of several mosaics that fails",
        "with its error; a mosaic that cannot be opened stops it before anything is written",
    )
    common(r)
    r.set_defaults(func=cmd_predict)
    e = sub.add_parser("evaluate", help="score a bundle on class folders, or a prediction against a truth map")
    e.add_argument("bundle", nargs="?", help="model bundle folder")
    e.add_argument("data", nargs="?", help="folder with one sub-folder of images per class")
    e.add_argument("--prediction", help="a prediction written by 'ncm predict'")
    e.add_argument("--truth", help="per-pixel class map (e.g. mosaic.ome.zarr/labels/truth)")
    e.add_argument("--split", default="test", help="split of a tile set to evaluate (default test)")
    e.add_argument("--out", help="folder for metrics.json, confusion matrices (CSV, PNG) and per-image/tile CSVs")
    e.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        help="average each tile's probabilities over flips and a quarter turn (default: as the bundle was trained)",
    )
    strict(e, "image of the class folders")
    common(e)
    e.set_defaults(func=cmd_evaluate)
