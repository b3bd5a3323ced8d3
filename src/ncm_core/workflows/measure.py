"""``ncm measure``: the microstructure numbers of a segmentation, written to a folder.

:func:`measure` is the one function behind the command line, the API and the Measure widget. It opens
the segmentation (:func:`ncm_core.io.labels.open_labels`), then

1. counts the phases block by block: phase fractions and porosity of the whole image, of each region of
   a regions image, and as a profile along the through-plane axis (or through the thickness from the
   collector, with ``ncm sections``' geometry); interface densities between every pair of classes;
2. reads the part picked for in-memory measures (``region``; the whole image when it fits) and
   measures there: particles of the particle phase (separated, sizes, shapes, d10/d50/d90), the pore
   phase's local thickness, percolation, two-point correlation and chord lengths, specific surface area
   (3D), and the tortuosity factor of the pores along the axis (TauFactor);
3. writes one JSON and one CSV per measure, the figures, ``particles.tif`` and ``local_thickness.tif``
   (the napari layers; their offset is ``region_offset`` in ``measure.json``) and ``measure.json``
   with the inputs, classes, units and every summary. The folder is written under ``.partial`` and
   renamed when complete.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.measure.options import MeasureOptions, parse_region
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output, check_output
from ncm_core.progress import ProgressFn, check_cancel, report
from ncm_core.workflows.measure_tables import jsonable, write_table

SUMMARY = "measure.json"
FORMAT = "ncm-measure"
#: Bytes per pixel that the in-memory measures hold at their peak (labels, distance maps, regions,
#: local thickness, correlation FFTs), to refuse a region that would not fit before starting.
IN_MEMORY_BYTES_PER_PIXEL = 96
PARTICLE_NAMES = ("active", "active material", "am", "particle", "particles", "solid")
STAGES = ("counting phases", "regions", "profile", "interfaces", "particles", "thickness", "tortuosity", "figures")


def measure(
    segmentation: Any,
    out: str | Path,
    options: MeasureOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: Any = None,
    **overrides: Any,
) -> Path:
    """Measure ``segmentation`` (a path, or a numpy / dask label array) into the folder ``out`` (module
    docstring); options as :class:`MeasureOptions` or keywords. Returns ``out``."""
    from ncm_core.io.labels import open_labels
    from ncm_core.measure import phases
    from ncm_core.measure._labels import class_map, pore_values

    o = merge_options(MeasureOptions, options, overrides)
    img = open_labels(segmentation, labels=o.labels, classes=o.classes, pixel_size=o.pixel_size)
    if not -img.ndim <= o.axis < img.ndim:
        raise NcmError(f"axis {o.axis} is not an axis of a {img.ndim}-D segmentation (0 to {img.ndim - 1})")
    axis = o.axis % img.ndim
    sub = parse_region(o.region, img.shape)
    sections = None if o.sections is None else Path(o.sections)
    if sections is not None and sections.is_dir():
        sections = sections / "sections.json"  # the file is the input: an output beside it is fine
    inputs = [p for p in (segmentation, o.regions, sections) if isinstance(p, (str, Path))]
    check_output(out, o.overwrite, inputs)  # before the first pass over the pixels, not after it
    stage = _Stages(progress)
    counts = phases.class_counts(img.data, progress=stage("counting phases"), cancel=cancel)
    classes = img.classes or class_map(None, list(counts))
    where = None if img.source == "array" else img.source
    unnamed = sorted(v for v in counts if v and v not in classes)
    if unnamed:
        raise NcmError(
            f"label values {', '.join(map(str, unnamed[:8]))} have no class name (classes: "
            f"{', '.join(f'{v}={n}' for v, n in classes.items())}): give the names with --classes a,b,c",
            where,
        )
    try:
        pores = pore_values(classes, o.pore)
    except NcmError as exc:
        raise NcmError(str(exc), where) from None
    solid = _particle_values(classes, counts, pores, o.particle_class)
    if img.pixel_size is None:
        warnings.warn("the segmentation has no pixel size: measures are in pixels (give --pixel-size)", stacklevel=2)
    unit = "um" if img.pixel_size else "px"
    _check_memory(sub, o)
    regions = _open_regions(o.regions, img) if o.regions is not None else None
    coordinate, section = _collector_distance(o.sections, img) if o.sections else (None, None)
    ctx = _Context(img, classes, pores, solid, unit, axis, sub, stage, cancel)
    with atomic_output(out, o.overwrite, inputs=inputs) as part:
        ctx.part = part
        summary: dict[str, Any] = {"format": FORMAT, "source": img.source, "labels": img.name}
        summary.update(shape=list(img.shape), pixel_size=img.pixel_size, unit=unit, axis=axis)
        summary.update(classes={str(v): n for v, n in classes.items()}, pore=[classes[v] for v in pores])
        summary["fractions"] = _fractions(ctx, counts)
        if regions is not None:
            summary["regions"] = _regions(ctx, regions)
        summary["profile"] = _profile(ctx, o, coordinate)
        summary["interfaces"] = _interfaces(ctx)
        summary["region"] = [[s.start, s.stop] for s in sub]
        summary["region_offset"] = [s.start for s in sub]
        _in_memory(ctx, o, summary)
        check_cancel(cancel)
        if o.figures:
            from ncm_core.workflows.measure_figures import write_figures

            write_figures(ctx, summary)
        if section is not None:
            summary["section"] = _section_descriptors(ctx, section, summary)
        summary["options"] = {
            k: v if not hasattr(v, "shape") else "array" for k, v in vars(o).items() if k != "overwrite"
        }
        (part / SUMMARY).write_text(json.dumps(jsonable(summary), indent=2))
    report(progress, 1, 1, "measured")
    return Path(out)


class _Stages:
    """Progress of the whole run from each stage's own (done, total)."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress

    def __call__(self, name: str) -> ProgressFn | None:
        if self.progress is None:
            return None
        i = STAGES.index(name)
        n = len(STAGES)

        def cb(done: int, total: int, message: str = "") -> None:
            frac = done / total if total else 1.0
            report(self.progress, int(1000 * (i + frac)), 1000 * n, f"{name}: {message}" if message else name)

        return cb


class _Context:
    """What every stage needs: the labels, classes, units, the in-memory region, progress and cancel."""

    def __init__(self, img, classes, pores, solid, unit, axis, sub, stage, cancel) -> None:  # noqa: PLR0913
        self.img, self.classes, self.pores, self.solid = img, classes, pores, solid
        self.unit, self.axis, self.sub, self.stage, self.cancel = unit, axis, sub, stage, cancel
        self.size = img.pixel_size or 1.0
        self.part: Path = Path()
        self.figures: dict[str, Any] = {}
        self.profile: dict[str, np.ndarray] = {}

    @property
    def pore_names(self) -> list[str]:
        return [self.classes[v] for v in self.pores]


def _particle_values(
    classes: Mapping[int, str], counts: Mapping[int, int], pores: list[int], name: str | None
) -> list[int]:
    """The label values of the particle phase: ``name``, the class named like active material, or the
    largest class that is not pore."""
    from ncm_core.measure._labels import pore_values

    if name is not None:
        try:
            return pore_values(classes, name)
        except NcmError:
            raise NcmError(
                f"particle class {name!r} is not one of {', '.join(classes.values())} (--particle-class)"
            ) from None
    by_name = {n.lower(): v for v, n in classes.items()}
    for n in PARTICLE_NAMES:
        if n in by_name and by_name[n] not in pores:
            return [by_name[n]]
    rest = [v for v in classes if v not in pores]
    return [max(rest, key=lambda v: counts.get(v, 0))] if rest else []


def _check_memory(sub: tuple[slice, ...], o: MeasureOptions) -> None:
    if not (o.particles or o.tortuosity):
        return
    import psutil

    n = int(np.prod([s.stop - s.start for s in sub]))
    need, free = n * IN_MEMORY_BYTES_PER_PIXEL, int(psutil.virtual_memory().available)
    if need > free:
        raise NcmError(
            f"particles and tortuosity of {n / 1e6:.0f} Mpx need about {need / 2**30:.1f} GiB and "
            f"{free / 2**30:.1f} GiB is free: pick a region with --region y0:y1,x0:x1[,z0:z1]"
        )


def _fractions(ctx: _Context, counts: Mapping[int, int]) -> dict[str, Any]:
    total = sum(counts.get(v, 0) for v in ctx.classes)
    rows = [
        {
            "class": n,
            "value": v,
            "pixels": counts.get(v, 0),
            "fraction": counts.get(v, 0) / total if total else math.nan,
        }
        for v, n in ctx.classes.items()
    ]
    por = sum(counts.get(v, 0) for v in ctx.pores) / total if total else math.nan
    s = {"porosity": por, "classified_pixels": total, "unclassified_pixels": counts.get(0, 0)}
    s["fractions"] = {r["class"]: r["fraction"] for r in rows}
    write_table(ctx.part, "fractions", rows, s)
    return s


def _open_regions(regions: Any, img: Any) -> Any:
    from ncm_core.io.labels import open_labels

    reg = open_labels(regions, what="regions image")
    if reg.shape != img.shape:
        where = regions if isinstance(regions, (str, Path)) else None
        raise NcmError(f"the regions image has shape {reg.shape}, the segmentation {img.shape}", where)
    return reg


def _regions(ctx: _Context, reg: Any) -> dict[str, Any]:
    from ncm_core.measure import phases
    from ncm_core.measure._labels import read

    t = phases.profile(
        ctx.img.data,
        0,
        ctx.classes,
        coordinate=lambda sl: read(reg.data, sl),
        progress=ctx.stage("regions"),
        cancel=ctx.cancel,
    )
    rows = []
    for i, px in enumerate(t["pixels"]):
        value = int(round(t["position"][i] - 0.5))
        if value == 0 or px == 0:
            continue  # region 0 is "no region"
        r = {"region": value, "pixels": int(px), "porosity": sum(t[n][i] for n in ctx.pore_names)}
        r.update({n: t[n][i] for n in ctx.classes.values()})
        rows.append(r)
    write_table(ctx.part, "regions", rows, {"regions": len(rows)})
    return {"count": len(rows), "porosity": {r["region"]: r["porosity"] for r in rows}}


def _collector_distance(sections: str, img: Any) -> tuple[Any, dict[str, Any]]:
    """``coordinate(slices)``: the distance of each pixel from the current collector (px, positive into
    the electrode), from the geometry ``ncm sections`` found for this image."""
    from ncm_core.io.mosaic import read_json

    p = Path(sections)
    p = p / "sections.json" if p.is_dir() else p
    info = read_json(p, "sections summary")
    ms = info.get("mosaics", [])
    names = {m.get("name"): m for m in ms}
    stem = Path(img.source).name.split(".")[0]
    m = names.get(stem) or (ms[0] if len(ms) == 1 else None)
    if m is None or img.ndim != 2:
        raise NcmError(f"no geometry for {stem!r} among {', '.join(map(str, names)) or 'none'}", p)
    oy, ox = (float(v) for v in m["origin"])
    dy, dx = (float(v) for v in m["d"])
    w = img.shape[1]

    def coordinate(sl: tuple[slice, ...]) -> np.ndarray:
        yy = np.arange(sl[0].start, sl[0].stop, dtype=np.float64)[:, None]
        xx = np.arange(w, dtype=np.float64)[None, :]
        return -((yy - oy) * dy + (xx - ox) * dx) - 0.5  # row 0 is the collector's top row: its edge is at -0.5

    return coordinate, m


def _profile(ctx: _Context, o: MeasureOptions, coordinate: Any) -> dict[str, Any]:
    from ncm_core.measure import phases

    label = f"position along axis {ctx.axis}" if coordinate is None else "distance from the collector"
    t = phases.profile(
        ctx.img.data,
        ctx.axis,
        ctx.classes,
        coordinate=coordinate,
        bin_width=o.profile_bin,
        pixel_size=ctx.img.pixel_size,
        progress=ctx.stage("profile"),
        cancel=ctx.cancel,
    )
    if coordinate is not None:  # keep the electrode: bins from the collector on
        keep = t["position"] >= 0
        t = {k: np.asarray(v)[keep] for k, v in t.items()}
    t["porosity"] = phases.porosity_profile(t, ctx.pore_names) if len(t["position"]) else np.zeros(0)
    rows = [{k: t[k][i] for k in t} for i in range(len(t["position"]))]
    write_table(ctx.part, "profile", rows, {"axis": ctx.axis, "coordinate": label, "unit": ctx.unit})
    ctx.profile = t
    ctx.figures["profile"] = (t, label)
    return {"coordinate": label, "bins": len(rows)}


def _section_descriptors(ctx: _Context, section: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The cross-section's descriptors for rate capability (issue 19, item 6): porosity of the active
    layer (from the profile, up to the thickness ``ncm sections`` found), thickness, tortuosity factor
    and d50 of the measured region; one row of ``section_descriptors.csv``."""
    t = ctx.profile
    th_px = float(section.get("thickness_px", math.nan))
    inside = np.asarray(t["position"]) / ctx.size < th_px
    px = np.asarray(t["pixels"], np.float64)[inside]
    por = float((np.asarray(t["porosity"])[inside] * px).sum() / px.sum()) if px.sum() else math.nan
    tau = summary.get("tortuosity", {}).get("tau")
    row = {
        "name": section.get("name", ctx.img.name),
        "porosity": por,
        "thickness": th_px * ctx.size,
        "tortuosity": math.inf if "tortuosity" in summary and tau is None else (math.nan if tau is None else tau),
        "d50": summary.get("particles", {}).get("d50", math.nan),
    }
    write_table(ctx.part, "section_descriptors", [row], {"unit": ctx.unit, "tortuosity_axis": ctx.axis})
    return row


def _interfaces(ctx: _Context) -> dict[str, Any]:
    from ncm_core.measure import interfaces

    vals = list(ctx.classes)
    pairs = [(a, b) for i, a in enumerate(vals) for b in vals[i + 1 :]]
    counts = interfaces.interface_counts_lazy(ctx.img.data, pairs, progress=ctx.stage("interfaces"), cancel=ctx.cancel)
    factor = math.pi / 4 if ctx.img.ndim == 2 else 2 / 3
    extent = float(np.prod(ctx.img.shape)) * ctx.size
    per = "length per area" if ctx.img.ndim == 2 else "surface per volume"
    rows = [
        {"a": ctx.classes[a], "b": ctx.classes[b], "changes": n, "density": factor * n / extent}
        for (a, b), n in zip(pairs, counts, strict=True)
    ]
    pore_solid = sum(r["density"] for r in rows if (r["a"] in ctx.pore_names) != (r["b"] in ctx.pore_names))
    s = {"measure": f"interface {per}", "unit": f"1/{ctx.unit}", "pore_solid": pore_solid}
    write_table(ctx.part, "interfaces", rows, s)
    return s


def _in_memory(ctx: _Context, o: MeasureOptions, summary: dict[str, Any]) -> None:
    from ncm_core.workflows.measure_region import measure_region

    if not (o.particles or o.tortuosity):
        return
    measure_region(ctx, o, summary)
