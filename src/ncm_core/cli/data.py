"""``ncm sample``, ``ncm crops`` and ``ncm sections``: sample data and training sets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ncm_core.cli._args import BAND_HELP, band, common, finish_batch, positive, progress, strict
from ncm_core.data.crops import CropOptions

K = CropOptions


def cmd_sample(a: argparse.Namespace) -> None:
    from ncm_core.data import synth
    from ncm_core.io.mosaic import write_ome_zarr

    out = Path(a.out)
    # folders are written whole under .partial, never mixed with old files
    if a.kind == "sem-frames":
        synth.write_sem_dataset(
            out, a.frames, (a.size + a.info_bar, a.size), info_bar=a.info_bar, seed=a.seed, overwrite=a.overwrite
        )
    elif a.kind == "sem-sessions":
        from ncm_core.data.synth_sessions import write_sem_sessions

        write_sem_sessions(
            out, range(a.sessions), a.frames, (a.size, a.size), info_bar=a.info_bar, seed=a.seed, overwrite=a.overwrite
        )
    elif a.kind == "section-set":
        synth.write_section_dataset(
            out,
            per_porosity=a.per_porosity,
            shape=tuple(a.shape) if a.shape else (600, 1800),
            seed=a.seed,
            overwrite=a.overwrite,
        )
    elif a.kind == "volume":  # a small phase volume with known truth, for ncm measure
        from ncm_core.data.synth_volumes import write_volume_sample

        write_volume_sample(out, a.structure, (a.side,) * 3, seed=a.seed, overwrite=a.overwrite)
        print(f"wrote a {a.side}^3 voxel {a.structure} volume to {out / 'volume.tif'} (truth: {out / 'truth.json'})")
        return
    elif a.kind == "section-set-spheres":  # the second family: PoreSpy pores, another microscope
        from ncm_core.data.synth_spheres import write_sphere_section_dataset

        write_sphere_section_dataset(
            out,
            per_porosity=a.per_porosity,
            shape=tuple(a.shape) if a.shape else (500, 2000),
            seed=a.seed,
            overwrite=a.overwrite,
        )
    if a.kind == "sem-frames":
        print(
            f"wrote {len(synth.CLASS_NAMES) * a.frames} SEM frames in {len(synth.CLASS_NAMES)} class folders to {out}"
        )
    elif a.kind == "sem-sessions":
        n = sum(1 for _ in out.rglob("*.jpg"))
        print(f"wrote {n} SEM frames (JPEG) of {a.sessions} sessions per class to {out} (list: {out / 'sessions.csv'})")
    elif a.kind == "sem-mosaic":
        m = synth.sem_mosaic(tuple(a.shape) if a.shape else (1100, 1500), seed=a.seed)
        write_ome_zarr(
            out,
            m.image,
            pixel_size=m.pixel_size,
            chunks=a.chunks,
            levels=2,
            labels={"truth": m.truth + 1},
            label_classes={"truth": list(m.class_names)},
            overwrite=a.overwrite,
            name="sem_mosaic",
        )
        print(f"wrote a {m.image.shape[0]}x{m.image.shape[1]} px SEM mosaic with its truth labels to {out}")
    elif a.kind in ("section-set", "section-set-spheres"):
        print(
            f"wrote {5 * a.per_porosity} cross-section mosaics and their rate capability "
            f"({out / 'targets.csv'}) to {out}"
        )
    else:
        s = synth.cross_section(a.porosity, tuple(a.shape) if a.shape else (600, 1800), tilt_deg=a.tilt, seed=a.seed)
        write_ome_zarr(
            out, s.image, pixel_size=s.pixel_size, chunks=a.chunks, overwrite=a.overwrite, name="cross_section"
        )
        meta = {"porosity": s.porosity, "tilt_deg": s.tilt_deg, "thickness_um": s.thickness_um, **s.targets}
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(f"wrote a cross-section (porosity {s.porosity:.3f}) to {out}, labels to {out.with_suffix('.json')}")


def cmd_crops(a: argparse.Namespace) -> None:
    from ncm_core.batch import FAILURES_FILE
    from ncm_core.data.crops import build_crops
    from ncm_core.data.infobar import bar_note

    opts = CropOptions(
        size=a.size,
        per_frame=a.per_frame,
        val_fraction=a.val_fraction,
        test_fraction=a.test_fraction,
        exclude_rows=a.exclude_rows,
        masks=a.masks,
        max_masked=a.max_masked,
        seed=a.seed,
        overwrite=a.overwrite,
        strict=a.strict,
        context_um=a.context_um,
        pixel_size=a.pixel_size,
    )
    ts = build_crops(a.data, a.out, opts, progress=progress("crops", a.quiet))
    counts = ts.counts()
    parts = ", ".join(
        f"{s} {sum(counts.get(s, {}).values())} crops of {len(ts.groups(s))} frames"
        for s in ("train", "val", "test")
        if s in counts
    )
    note = bar_note(ts.params.get("info_bars", {}), len({r.source for r in ts.records}))
    if note:
        print(f"ncm: note: {note}", file=sys.stderr)
    print(f"tile set: {ts.root}  {len(ts.class_names)} classes; {parts}")
    frames = len({r.source for r in ts.records}) + len(ts.failures)
    finish_batch(ts.failures, frames, Path(ts.root) / FAILURES_FILE)


def cmd_sections(a: argparse.Namespace) -> None:
    from ncm_core.batch import FAILURES_FILE
    from ncm_core.data.sections import SUMMARY, extract_sections

    out = extract_sections(
        a.mosaics,
        a.out,
        crop=a.crop,
        mode=a.mode,
        stride=a.stride,
        margin=a.margin,
        pixel_size=a.pixel_size,
        strict=a.strict,
        overwrite=a.overwrite,
        progress=progress("sections", a.quiet),
    )
    info = json.loads((out / SUMMARY).read_text())
    for m in info["mosaics"]:
        th = f"{m['thickness_um']:.1f} um" if m["thickness_um"] is not None else f"{m['thickness_px']:.0f} px"
        print(
            f"{m['name']}: collector angle {m['angle_deg']:+.2f} deg{' (turned 180)' if m['turned'] else ''}, "
            f"active layer {th}, {len(m['crops'])} crops"
        )
    print(f"crops: {out} ({sum(len(m['crops']) for m in info['mosaics'])} in all; manifest {out / 'sections.csv'})")
    finish_batch(out.failures, len(a.mosaics), out / FAILURES_FILE)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    s = sub.add_parser("sample", help="write embedded sample data")
    s.add_argument(
        "kind",
        choices=["sem-frames", "sem-sessions", "sem-mosaic", "section", "section-set", "section-set-spheres", "volume"],
        help="section-set-spheres: a second family of cross-sections (PoreSpy pores, binder, cracks, "
        "scratches, 0.2 um/px, thickness 30-48 um); volume: a small pore/solid volume with known truth "
        "(for ncm measure)",
    )
    s.add_argument("out", help="output folder (sem-frames) or .zarr path")
    s.add_argument(
        "--frames", type=positive, default=4, help="frames per class (sem-frames; sem-sessions: most per session)"
    )
    s.add_argument("--sessions", type=positive, default=3, help="microscope sessions per class (sem-sessions)")
    s.add_argument("--size", type=positive, default=512, help="frame width/height without info bar (sem-frames)")
    s.add_argument("--info-bar", type=int, default=32, help="rows of the SEM information bar (sem-frames)")
    s.add_argument("--shape", type=positive, nargs=2, metavar=("H", "W"), help="mosaic or section shape")
    s.add_argument("--porosity", type=float, default=0.35, help="active-layer porosity (section)")
    s.add_argument("--tilt", type=float, default=1.0, help="tilt in degrees (section)")
    s.add_argument(
        "--structure",
        choices=["tubes", "spheres", "blobs"],
        default="blobs",
        help="volume: straight pores (tortuosity 1), separate solid spheres (known d50) or random blobs",
    )
    s.add_argument("--side", type=positive, default=64, help="volume: voxels along each side (default 64)")
    s.add_argument("--per-porosity", type=positive, default=4, help="mosaics per porosity (section-set)")
    s.add_argument("--chunks", type=positive, default=512, help="zarr chunk size")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_sample)
    c = sub.add_parser("crops", help="random crops of class-folder frames into a tile set, frames held out first")
    c.add_argument("data", help="folder with one sub-folder of frames per class")
    c.add_argument("out", help="tile-set folder to write (train/, val/, test/, manifest.csv, manifest.json)")
    c.add_argument("--size", type=positive, default=K.size, help=f"crop size in pixels (default {K.size})")
    c.add_argument(
        "--context-um",
        type=float,
        help="crop width in micrometres instead of --size: CONTEXT / pixel size px (ncm train resizes them "
        "to its --input-size)",
    )
    c.add_argument("--pixel-size", type=float, help="micrometres per pixel (default: the frames' metadata)")
    c.add_argument("--per-frame", type=positive, default=K.per_frame, help=f"crops per frame (default {K.per_frame})")
    c.add_argument(
        "--val-fraction",
        type=float,
        default=K.val_fraction,
        help=f"share of each class's frames for validation (default {K.val_fraction})",
    )
    c.add_argument(
        "--test-fraction",
        type=float,
        default=K.test_fraction,
        help=f"share of each class's frames for testing (default {K.test_fraction})",
    )
    c.add_argument(
        "--exclude-rows",
        type=band,
        default=K.exclude_rows,
        help=f"rows no crop may touch: {BAND_HELP} (default {K.exclude_rows})",
    )
    c.add_argument("--masks", help="folder like DATA with <class>/<frame stem>.png masks, non-zero = avoid")
    c.add_argument(
        "--max-masked",
        type=float,
        default=K.max_masked,
        help=f"largest masked share of a crop (default {K.max_masked:g})",
    )
    c.add_argument("--seed", type=int, default=K.seed)
    c.add_argument("--overwrite", action="store_true")
    strict(c, "frame")
    common(c, device=False)
    c.set_defaults(func=cmd_crops)
    x = sub.add_parser("sections", help="find the collector in cross-section mosaics, straighten, cut crops")
    x.add_argument(
        "mosaics",
        nargs="+",
        help="cross-section mosaics (TIFF, zarr, PNG, ...); one that fails is skipped and listed in "
        "OUT/failures.csv (exit status 3)",
    )
    x.add_argument("--out", required=True, help="crop folder to write (crops, sections.csv, sections.json)")
    x.add_argument(
        "--crop",
        type=positive,
        nargs=2,
        metavar=("H", "W"),
        default=(224, 672),
        help="crop height and width in pixels (default 224 672)",
    )
    x.add_argument(
        "--mode",
        choices=["center", "sliding"],
        default="center",
        help="one row of crops centred in the active layer, or a sliding window",
    )
    x.add_argument(
        "--stride", type=positive, nargs=2, metavar=("SY", "SX"), help="sliding-window stride (default half a crop)"
    )
    x.add_argument("--margin", type=int, default=4, help="pixels left out at the collector and the surface")
    x.add_argument("--pixel-size", type=float, help="micrometres per pixel, when the files do not say")
    x.add_argument("--overwrite", action="store_true")
    strict(x, "mosaic")
    common(x, device=False)
    x.set_defaults(func=cmd_sections)
