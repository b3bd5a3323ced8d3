"""Small phase maps with known truth, for measuring (``ncm sample volume``, tests, docs, benchmarks).

Each sample is a label array (1 = pore, 2 = solid; :data:`CLASSES`) and the numbers it was built to
have, from its construction rather than from a measurement:

* :func:`tubes`: straight cylindrical pores along an axis: tortuosity factor exactly 1 along it,
  infinite across; porosity from the drawn cylinders;
* :func:`sphere_pack`: non-touching solid spheres (discs in 2D) of one radius in pore (PoreSpy
  ``random_spheres`` with a clearance): equivalent diameter ``2 r``, so d10 = d50 = d90 = ``2 r``;
* :func:`blobs`: a random two-phase structure with a target porosity (PoreSpy ``blobs``): porosity
  within about 0.01 of the target, a finite tortuosity factor along every axis;
* :func:`write_volume_sample`: one of them as a TIFF stack with ``classes.txt`` and ``truth.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

CLASSES = ("pore", "solid")
KINDS = ("tubes", "spheres", "blobs")


@dataclass
class PhaseSample:
    """A label array (1 = pore, 2 = solid) and its truth."""

    labels: np.ndarray
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def pore(self) -> np.ndarray:
        return self.labels == 1


def _labels(pore: np.ndarray) -> np.ndarray:
    return np.where(pore, 1, 2).astype(np.uint8)


def tubes(shape: tuple[int, ...] = (48, 48, 48), radius: int = 3, spacing: int = 12, axis: int = 0) -> PhaseSample:
    """Straight pores of ``radius`` px along ``axis`` on a square grid of ``spacing`` px."""
    shape = tuple(int(s) for s in shape)
    cross = [s for i, s in enumerate(shape) if i != axis]
    grids = np.meshgrid(*[np.arange(s) for s in cross], indexing="ij")
    d2 = sum(((g % spacing) - spacing // 2) ** 2 for g in grids)
    section = d2 <= radius**2
    pore = np.broadcast_to(np.expand_dims(section, axis), shape).copy()
    return PhaseSample(_labels(pore), {"porosity": float(pore.mean()), "tortuosity": 1.0, "axis": axis})


def sphere_pack(
    shape: tuple[int, ...] = (64, 64, 64), radius: int = 6, solid_fraction: float = 0.3, seed: int = 0
) -> PhaseSample:
    """Solid spheres (discs in 2D) of ``radius`` px that do not touch (2 px apart at least), inserted at
    random up to ``solid_fraction`` (PoreSpy ``random_spheres``, unsmoothed: the voxels within ``radius``
    of each centre). Truth: every particle is PoreSpy's ball (disc) of that radius, whose equivalent
    diameter is ``d50`` (``2 * radius`` up to the voxels' staircase: 12.09 px for r = 6 in 3D)."""
    import porespy as ps

    from ncm_core.measure.particles import _quiet

    with _quiet():
        solid = ps.generators.random_spheres(
            shape=list(shape), r=radius, clearance=2, phi=solid_fraction, seed=seed, edges="contained", smooth=False
        )
        template = ps.tools.ps_ball(radius, smooth=False) if len(shape) == 3 else ps.tools.ps_disk(radius, smooth=False)
    n = float(np.count_nonzero(template))
    d = (6 * n / np.pi) ** (1 / 3) if len(shape) == 3 else (4 * n / np.pi) ** 0.5
    solid = np.asarray(solid, bool)
    return PhaseSample(_labels(~solid), {"porosity": float(1 - solid.mean()), "d50": d, "radius": radius})


def blobs(
    shape: tuple[int, ...] = (64, 64, 64), porosity: float = 0.4, blobiness: int = 1, seed: int = 0
) -> PhaseSample:
    """A random two-phase structure whose pore fraction is ``porosity`` (PoreSpy ``blobs``)."""
    import porespy as ps

    if not 0 < porosity < 1:
        raise NcmError(f"porosity must be between 0 and 1, got {porosity}")
    pore = np.asarray(ps.generators.blobs(list(shape), porosity=porosity, blobiness=blobiness, seed=seed), bool)
    return PhaseSample(_labels(pore), {"porosity": porosity, "measured_porosity": float(pore.mean())})


def make_sample(kind: str, shape: tuple[int, ...] | None = None, seed: int = 0, **kw: Any) -> PhaseSample:
    if kind == "tubes":
        return tubes(shape or (48, 48, 48), **kw)
    if kind == "spheres":
        return sphere_pack(shape or (64, 64, 64), seed=seed, **kw)
    if kind == "blobs":
        return blobs(shape or (64, 64, 64), seed=seed, **kw)
    raise NcmError(f"sample volume kind must be one of {', '.join(KINDS)}, got {kind!r}")


def write_volume_sample(
    out: str | Path,
    kind: str = "blobs",
    shape: tuple[int, ...] | None = None,
    *,
    seed: int = 0,
    pixel_size: float = 0.1,
    overwrite: bool = False,
) -> Path:
    """Write a sample as ``out/volume.tif`` (labels, ``pixel_size`` um in its metadata), ``classes.txt``
    and ``truth.json``; ``ncm measure out/volume.tif OUT`` measures it."""
    import tifffile

    from ncm_core.outputs import atomic_output, write_sample_marker

    s = make_sample(kind, shape, seed)
    with atomic_output(out, overwrite) as part:
        res = (1e4 / pixel_size, 1e4 / pixel_size)  # pixels per cm
        tifffile.imwrite(part / "volume.tif", s.labels, resolution=res, resolutionunit="CENTIMETER")
        (part / "classes.txt").write_text("\n".join(CLASSES) + "\n")
        truth = {"kind": kind, "shape": list(s.labels.shape), "pixel_size": pixel_size, **s.truth}
        if "d50" in truth:  # lengths in px and in um, as ncm measure reports them with the file's pixel size
            truth["d50_px"] = truth.pop("d50")
            truth["d50_um"] = truth["d50_px"] * pixel_size
        (part / "truth.json").write_text(json.dumps(truth, indent=2))
        write_sample_marker(part, f"volume-{kind}", seed)
    return Path(out)
