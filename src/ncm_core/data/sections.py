"""Electrode cross-sections cut into crops: one image per crop, a manifest and each section's geometry.

:func:`extract_sections` finds each mosaic's section (:func:`~ncm_core.data.section_detection.detect_section`:
collector, surface, the largest rectangle of active layer; the method is described there) and writes
its crops, resampled along the collector, to a folder the regression training reads. The geometry's
names are importable from here too.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.batch import Batch, BatchPath
from ncm_core.data.section_detection import (  # noqa: F401  (importable from here, as before)
    MODES,
    Collector,
    CropMode,
    SectionOptions,
    detect_section,
    find_collector,
    largest_rectangle,
    sample_frame,
)
from ncm_core.data.section_geometry import SectionGeometry
from ncm_core.data.targets import image_stem
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import Mosaic, open_mosaic
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

MANIFEST = "sections.csv"
SUMMARY = "sections.json"


def iter_crops(mosaic: Any, geom: SectionGeometry, cancel: CancelFlag = None) -> Iterator[np.ndarray]:
    """The crops of ``geom``, resampled (bilinear) from the mosaic one at a time, in its pixel type."""
    m = mosaic if isinstance(mosaic, Mosaic) else open_mosaic(mosaic)
    o, u, d = (np.asarray(v) for v in (geom.origin, geom.u, geom.d))
    dtype = m.dtype
    for r0, c0 in geom.crops:
        check_cancel(cancel)
        win, _ = sample_frame(m, o, u, d, r0, c0, geom.crop[0], geom.crop[1])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            win = np.clip(np.rint(win), info.min, info.max)
        yield win.astype(dtype)


# ------------------------------------------------------------------------------------------- on disk
def extract_sections(
    mosaics: Sequence[str | Path | Mosaic],
    out: str | Path,
    options: SectionOptions | None = None,
    *,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> BatchPath:
    """Cut the cross-sections of ``mosaics`` into crops under ``out``.

    ``out`` gets one PNG (or TIFF for 16-bit/float) per crop, named
    ``<mosaic stem>_<k>.png``, a manifest ``sections.csv`` (crop file, source
    mosaic, crop index, the crop's corners in the mosaic) and ``sections.json``
    with each mosaic's geometry (angle, thickness, rectangle). Written to
    ``<out>.partial`` and renamed when complete.

    A mosaic that fails (unreadable, or no straight stretch of active layer as wide as a crop) is
    skipped and listed with its reason in ``failures.csv`` and under ``failures`` in ``sections.json``;
    the returned path's ``failures`` holds them too (:mod:`ncm_core.batch`). ``strict=True`` stops at
    the first failure instead; when every mosaic fails, nothing is written.
    """
    out = Path(out).expanduser()
    if not mosaics:
        raise NcmError("no mosaics given")
    o = merge_options(SectionOptions, options, overrides)
    batch = Batch(len(mosaics), strict=o.strict, what="mosaics")
    stems = _stems(mosaics)
    with atomic_output(out, overwrite, inputs=mosaics) as part:  # nothing half-written is left behind
        rows: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        for i, (src, stem) in enumerate(zip(mosaics, stems)):
            with batch.attempt(src) as attempt:
                geom, crop_rows = _cut(src, stem, o, part, cancel)
                rows += crop_rows
                summary.append({"name": stem, **geom.to_dict()})
            done = "failed" if attempt.failed else f"{len(geom.crops)} crops, angle {geom.angle_deg:.2f} deg"
            report(progress, i + 1, len(mosaics), f"{stem}: {done}")
        batch.check()  # every mosaic failed: the .partial is removed, nothing written
        with open(part / MANIFEST, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["file", "source"])
            w.writeheader()
            w.writerows(rows)
        info = {"format": "ncm-sections", "crop": list(o.crop), "mode": o.mode, "mosaics": summary}
        if batch.failures:
            info["failures"] = batch.records()
        (part / SUMMARY).write_text(json.dumps(info, indent=2))
        batch.write(part)
    batch.warn(out)
    return BatchPath.of(out, batch.failures)


def _stems(mosaics: Sequence[str | Path | Mosaic]) -> list[str]:
    """Each mosaic's name (a crop's file name starts with it); two mosaics of one name are refused."""
    seen: dict[str, str] = {}
    for src in mosaics:
        stem = src.name if isinstance(src, Mosaic) else image_stem(str(src))
        where = str(src.source if isinstance(src, Mosaic) else src)
        if stem in seen:
            raise NcmError(
                f"two mosaics are both named {stem!r} ({seen[stem]} and {where}); labels match by name", where
            )
        seen[stem] = where
    return list(seen)


def _cut(
    src: str | Path | Mosaic, stem: str, o: SectionOptions, part: Path, cancel: CancelFlag
) -> tuple[SectionGeometry, list[dict[str, Any]]]:
    """One mosaic's crops written into ``part``: its geometry and manifest rows. On an error, the
    crops it wrote are removed (the batch goes on without them)."""
    from ncm_core.data.tilesets import _write_png, _write_tif

    m = src if isinstance(src, Mosaic) else open_mosaic(src, pixel_size=o.pixel_size)
    geom = detect_section(m, o, cancel=cancel)
    rows, written = [], []
    try:
        crops = zip(iter_crops(m, geom, cancel), geom.crops, geom.crop_polygons())
        for k, (tile, (r0, c0), poly) in enumerate(crops):
            name = f"{stem}_{k:03d}" + (".png" if tile.dtype == np.uint8 else ".tif")
            written.append(part / name)
            (_write_png if tile.dtype == np.uint8 else _write_tif)(part / name, tile)
            rows.append(
                {
                    "file": name,
                    "source": stem,
                    "mosaic": str(m.source or stem),
                    "crop": k,
                    "row": r0,
                    "column": c0,
                    "corners_yx": json.dumps(np.round(poly, 2).tolist()),
                }
            )
    except NcmError:
        for f in written:
            f.unlink(missing_ok=True)
        raise
    return geom, rows


def is_sections_folder(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file() and (Path(path) / SUMMARY).is_file()


def summary_arrays(summary: dict[str, dict[str, float]], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per target, in the order of ``names``, of a section's summary
    (``{target: {"mean": ..., "std": ...}}``, as a section prediction gives it)."""
    return np.array([summary[n]["mean"] for n in names]), np.array([summary[n]["std"] for n in names])


def summary_line(summary: dict[str, dict[str, float]], n_crops: int, shown: int = 3) -> str:
    """One line: the number of crops and the first ``shown`` targets' mean +- std."""
    parts = ", ".join(f"{n} {v['mean']:.4g}+-{v['std']:.2g}" for n, v in list(summary.items())[:shown])
    return f"{n_crops} crops: {parts}{', ...' if len(summary) > shown else ''}"
