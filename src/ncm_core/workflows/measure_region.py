"""The in-memory part of ``ncm measure``: particles, local thickness, correlation curves, surface and
tortuosity on the region the user picked (the whole image when it fits); see
:mod:`ncm_core.workflows.measure`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncm_core.measure.options import MeasureOptions
from ncm_core.progress import check_cancel, report

#: Bins of the local-thickness histogram written to ``local_thickness.csv``.
THICKNESS_BINS = 30


def measure_region(ctx: Any, o: MeasureOptions, summary: dict[str, Any]) -> None:
    """Measure the region ``ctx.sub`` in memory and add each part to ``summary``."""
    from ncm_core.measure._labels import read

    lab = np.asarray(read(ctx.img.data, ctx.sub))
    pore = np.isin(lab, ctx.pores)
    if o.particles:
        summary["particles"] = _particles(ctx, lab, o)
        check_cancel(ctx.cancel)
        summary["local_thickness"] = _thickness(ctx, pore)
        check_cancel(ctx.cancel)
        summary["correlation"] = _correlation(ctx, pore)
        if lab.ndim == 3:
            from ncm_core.measure.interfaces import specific_surface_area

            summary["specific_surface_area"] = {
                "pore": specific_surface_area(pore, ctx.img.pixel_size),
                "unit": f"1/{ctx.unit}",
            }
    if o.tortuosity:
        summary["tortuosity"] = _tortuosity(ctx, pore, o)


def _tif(ctx: Any, name: str, data: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(ctx.part / name, data, compression="zlib")


def _particles(ctx: Any, lab: np.ndarray, o: MeasureOptions) -> dict[str, Any]:
    from ncm_core.measure.particles import particle_sizes, particle_summary, separate_particles
    from ncm_core.workflows.measure_tables import write_table

    stage = ctx.stage("particles")
    report(stage, 0, 2, "separating")
    parts = separate_particles(np.isin(lab, ctx.solid), method=o.separation)
    report(stage, 1, 2, "sizes")
    table = particle_sizes(parts, ctx.img.pixel_size)
    s = particle_summary(table, lab.shape, ctx.img.pixel_size)
    inner = particle_summary(table, lab.shape, ctx.img.pixel_size, exclude_border=True)
    s.update(
        phase=[ctx.classes[v] for v in ctx.solid],
        separation=o.separation,
        unit=ctx.unit,
        d50_inner=inner["d50"],  # particles cut by the region's border left out
    )
    rows = [{k: table[k][i] for k in table} for i in range(len(table["label"]))]
    write_table(ctx.part, "particles", rows, s)
    _tif(ctx, "particles.tif", parts.astype(np.int32))
    ctx.figures["particles"] = (table["equivalent_diameter"], s)
    report(stage, 2, 2, f"{len(rows)} particles")
    return s


def _thickness(ctx: Any, pore: np.ndarray) -> dict[str, Any]:
    from ncm_core.measure.interfaces import local_thickness
    from ncm_core.workflows.measure_tables import write_table

    stage = ctx.stage("thickness")
    report(stage, 0, 1, "local thickness of the pores")
    lt = local_thickness(pore, ctx.img.pixel_size)
    _tif(ctx, "local_thickness.tif", lt)
    v = lt[pore]
    s: dict[str, Any] = {"phase": ctx.pore_names, "unit": ctx.unit, "mean": float(v.mean()) if v.size else float("nan")}
    s["median"] = float(np.median(v)) if v.size else float("nan")  # half the pore volume is in pores wider
    rows: list[dict[str, Any]] = []
    if v.size:
        hist, edges = np.histogram(v, bins=THICKNESS_BINS)
        rows = [
            {"thickness": (edges[i] + edges[i + 1]) / 2, "volume_fraction": hist[i] / v.size} for i in range(len(hist))
        ]
    write_table(ctx.part, "local_thickness", rows, s)
    report(stage, 1, 1, "local thickness")
    return s


def _correlation(ctx: Any, pore: np.ndarray) -> dict[str, Any]:
    from ncm_core.measure.correlation import lineal_path, two_point_correlation
    from ncm_core.workflows.measure_tables import write_table

    if not pore.any() or pore.all():
        return {"note": "one phase only: no correlation"}
    s2 = two_point_correlation(pore, ctx.img.pixel_size)
    chords = lineal_path(pore, ctx.img.pixel_size, axis=ctx.axis)
    rows = [{"distance": d, "s2": p} for d, p in zip(s2["distance"], s2["probability"], strict=True)]
    write_table(ctx.part, "two_point_correlation", rows, {"phase": ctx.pore_names, "unit": ctx.unit})
    crow = [
        {"length": a, "pdf": b, "cdf": c}
        for a, b, c in zip(chords["length"], chords["pdf"], chords["cdf"], strict=True)
    ]
    mean = (
        float(np.sum(chords["length"] * chords["pdf"]) / np.sum(chords["pdf"]))
        if crow and chords["pdf"].sum()
        else float("nan")
    )
    write_table(ctx.part, "chord_lengths", crow, {"phase": ctx.pore_names, "axis": ctx.axis, "unit": ctx.unit})
    return {"s2_at_zero": float(s2["probability"][0]), "mean_chord": mean, "unit": ctx.unit}


def _tortuosity(ctx: Any, pore: np.ndarray, o: MeasureOptions) -> dict[str, Any]:
    from ncm_core.measure.interfaces import connected_paths
    from ncm_core.measure.tortuosity import tortuosity_factor
    from ncm_core.workflows.measure_tables import write_table

    stage = ctx.stage("tortuosity")
    connected = connected_paths(pore, ctx.axis)
    r = tortuosity_factor(
        pore,
        ctx.axis,
        None if o.device == "auto" else o.device,
        progress=stage,
        cancel=ctx.cancel,
    )
    s = r.to_dict()
    s["phase"] = ctx.pore_names
    s["connected_fraction"] = float(connected.sum() / pore.sum()) if pore.any() else 0.0
    write_table(ctx.part, "tortuosity", [{k: v for k, v in s.items() if k != "phase"}], s)
    ctx.figures["tortuosity"] = (np.moveaxis(pore, ctx.axis, 0), np.moveaxis(connected, ctx.axis, 0), s)
    return s
