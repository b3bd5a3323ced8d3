"""Checks of generated microstructure: the numbers of ``ncm measure`` on generated volumes against the
training images' (``ncm generate check``).

Following Kench & Cooper (2021) and Finegan et al. (2022), a generator is trusted by the numbers it was
not trained on. For each phase:

- **on slices** along each axis of every generated volume (``slices`` evenly spaced slices per axis),
  the same 2D measures as the training images: phase fraction, two-point correlation ``S2(r)``, lineal
  path (chord-length CDF), interface length per area and particle ``d50`` (:mod:`ncm_core.measure`);
  the curves on a common grid of ``r`` / lengths, so real and generated curves are compared point by
  point (RMSE);
- **volumetric numbers** that the 2D images cannot give: specific surface area and the tortuosity
  factor (TauFactor) along z, with their spread (mean, standard deviation) over ``volumes`` volumes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output, register_marker
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

CURVE_POINTS = 24  # distances (px) of the S2 curves and lengths of the chord CDFs
register_marker("a generator check", lambda p: (p / "check.json").is_file() and (p / "check.png").is_file())


@dataclass(frozen=True)
class CheckOptions:
    """Options of :func:`check_generator`: the one home of their defaults."""

    volumes: int = 3  # generated volumes (their spread is reported)
    size: int = 64  # voxels a side of each volume
    slices: int = 8  # slices per axis measured in 2D
    seed: int = 0  # of the first volume (the others: seed + 1, ...)
    tortuosity: bool = True  # TauFactor on each volume (the slowest part)
    device: str = "auto"
    overwrite: bool = False


def _curve(x: np.ndarray, y: np.ndarray, grid: np.ndarray, right: float | None = None) -> list[float]:
    """``y(x)`` on ``grid`` (held at the ends, or ``right`` past the last ``x``)."""
    if len(x) == 0:
        return [float("nan")] * len(grid)
    return np.interp(grid, x, y, right=right).tolist()


def image_measures(labels: np.ndarray, phases: list[int]) -> dict[str, dict[str, Any]]:
    """The 2D measures of one phase map, per phase value: fraction, S2 and chord CDF curves, interface
    density (1/px) and particle d50 (px)."""
    from ncm_core.measure.correlation import lineal_path, two_point_correlation
    from ncm_core.measure.interfaces import interface_density
    from ncm_core.measure.particles import particle_sizes, size_quantiles

    grid = np.arange(CURVE_POINTS, dtype=np.float64)
    out: dict[str, dict[str, Any]] = {}
    for v in phases:
        m = labels == v
        s2 = two_point_correlation(m, bins=min(100, min(m.shape) // 2))
        chords = lineal_path(m, axis=0, bins=25)
        d = particle_sizes(m, method="watershed")["equivalent_diameter"] if 0 < m.mean() < 1 else np.zeros(0)
        out[str(v)] = {
            "fraction": float(m.mean()),
            "s2": _curve(s2["distance"], s2["probability"], grid),
            "chord_cdf": _curve(chords["length"], chords["cdf"], grid, right=0.0),  # no chord is longer
            "interface_density": float(interface_density(labels, v)),
            "d50": size_quantiles(d)["d50"],
        }
    return out


def mean_measures(records: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Element-wise means of several :func:`image_measures` (NaN-aware)."""
    import warnings

    out: dict[str, dict[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mean of NaN only (no particle): NaN
        for phase in records[0]:
            out[phase] = {
                key: np.nanmean([np.asarray(r[phase][key], np.float64) for r in records], axis=0).tolist()
                for key in records[0][phase]
            }
    return out


def slice_measures(volume: np.ndarray, phases: list[int], slices: int) -> list[dict[str, dict[str, Any]]]:
    """:func:`image_measures` averaged over ``slices`` evenly spaced slices normal to each axis (z, y, x)."""
    out = []
    for axis in range(3):
        n = volume.shape[axis]
        picks = np.unique(np.linspace(0, n - 1, min(slices, n)).round().astype(int))
        out.append(mean_measures([image_measures(np.take(volume, k, axis=axis), phases) for k in picks]))
    return out


def volume_measures(volume: np.ndarray, phases: list[int], tortuosity: bool, device: str) -> dict[str, Any]:
    """Specific surface area (1/px) and tortuosity factor along z of each phase of a 3D phase map."""
    from ncm_core.measure.interfaces import specific_surface_area
    from ncm_core.measure.tortuosity import tortuosity_factor

    out: dict[str, Any] = {}
    for v in phases:
        m = volume == v
        rec = {"fraction": float(m.mean()), "specific_surface_area": float(specific_surface_area(m))}
        if tortuosity:
            rec["tortuosity"] = float(tortuosity_factor(m, axis=0, device=None if device == "auto" else device).tau)
        out[str(v)] = rec
    return out


def _spread(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    finite = a[np.isfinite(a)]
    return {
        "mean": float(finite.mean()) if finite.size else float("nan"),
        "std": float(finite.std()) if finite.size else float("nan"),
        "values": a.tolist(),
    }


def rmse(a: Any, b: Any) -> float:
    """Root mean square difference of two curves over the points where both are defined (NaN if none)."""
    d = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2
    d = d[np.isfinite(d)]
    return float(np.sqrt(d.mean())) if d.size else float("nan")


def compare(real: dict[str, dict[str, Any]], generated: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per phase: differences of the scalar measures and RMSE of the curves (generated - real)."""
    out: dict[str, dict[str, float]] = {}
    for phase, r in real.items():
        g = generated[phase]
        out[phase] = {
            "fraction_difference": g["fraction"] - r["fraction"],
            "s2_rmse": float(np.sqrt(np.nanmean((np.asarray(g["s2"]) - np.asarray(r["s2"])) ** 2))),
            "chord_cdf_rmse": float(
                np.sqrt(np.nanmean((np.asarray(g["chord_cdf"]) - np.asarray(r["chord_cdf"])) ** 2))
            ),
            "interface_density_ratio": g["interface_density"] / r["interface_density"]
            if r["interface_density"]
            else float("nan"),
            "d50_ratio": g["d50"] / r["d50"] if r["d50"] and np.isfinite(r["d50"]) else float("nan"),
        }
    return out


def check_generator(
    bundle: str | Path,
    out: str | Path,
    options: CheckOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate ``volumes`` volumes and compare their measures with the training images' (recorded in the
    bundle); writes ``OUT/check.json`` and ``OUT/check.png``; returns the record."""
    from ncm_core.inference.generate import generate_volume, read_volume
    from ncm_core.models.slicegan import load_generator
    from ncm_core.viz.generate import check_figure

    o = merge_options(CheckOptions, options, overrides)
    if o.volumes < 1 or o.size < 8 or o.slices < 1:
        raise NcmError("volumes and slices must be at least 1, size at least 8 voxels")
    b = load_generator(bundle)
    real_list = b.spec.training.get("measures", {}).get("images")
    if not real_list:
        raise NcmError("the bundle records no measures of its training images (retrain it with this version)", bundle)
    phases = b.spec.phases
    real_axes = real_list if len(real_list) == 3 else real_list * 3  # isotropic: the one image for each axis
    per_volume: list[dict[str, Any]] = []
    total = o.volumes * (3 if o.tortuosity else 2)
    with atomic_output(out, o.overwrite, inputs=[bundle]) as tmp:
        for k in range(o.volumes):
            check_cancel(cancel)
            report(progress, len(per_volume) * total // o.volumes, total, f"volume {k + 1}: generating")
            path = generate_volume(b, tmp / f"volume{k}.zarr", size=(o.size,) * 3, seed=o.seed + k, device=o.device)
            vol = read_volume(path).astype(np.int64)
            vol = np.asarray(phases)[vol - 1]  # back to the training images' label values
            report(progress, k * total // o.volumes + 1, total, f"volume {k + 1}: slices")
            axes = slice_measures(vol, phases, o.slices)
            check_cancel(cancel)
            report(progress, k * total // o.volumes + 2, total, f"volume {k + 1}: surface, tortuosity")
            per_volume.append({"slices": axes, "volume": volume_measures(vol, phases, o.tortuosity, o.device)})
        gen_axes = [mean_measures([v["slices"][a] for v in per_volume]) for a in range(3)]
        record: dict[str, Any] = {
            "bundle": str(bundle),
            "options": asdict(o),
            "phases": phases,
            "curve_points": CURVE_POINTS,
            "real": real_axes,
            "generated": gen_axes,
            "comparison": [compare(r, g) for r, g in zip(real_axes, gen_axes)],
            "volumetric": {
                str(v): {
                    key: _spread([pv["volume"][str(v)][key] for pv in per_volume])
                    for key in per_volume[0]["volume"][str(v)]
                }
                for v in phases
            },
        }
        (tmp / "check.json").write_text(json.dumps(record, indent=2))
        check_figure(record).savefig(tmp / "check.png")
    report(progress, total, total, "done")
    return record
