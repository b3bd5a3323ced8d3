"""A second family of synthetic cross-sections: spherical pores from PoreSpy, another microscope.

Where :mod:`ncm_core.data.synth_sections` packs bright particles at 0.123 um/px, this family is built
by an independent generator, so that a model trained on one family can be tested on the other:

* the active layer's pores are overlapping discs (``porespy.generators.overlapping_spheres``, radius
  3-7 px per section) at porosity 0.2-0.5, in a solid matrix;
* carbon-binder flakes (``porespy.generators.blobs``) fill part of the pores, mid-grey;
* preparation artefacts: one or two cracks across the layer, scratches across the whole image, a few
  pull-outs (dark holes larger than pores);
* another microscope: 0.2 um/px, other colours and contrast, a stronger blur, a tilt up to 1.5 degrees;
* a layer thickness that differs between sections (30-48 um);
* capacities from the same transport model of porosity and thickness
  (:func:`ncm_core.data.synth_sections.rate_capability`), with the *measured* porosity (pores and
  cracks; binder counts as solid).

Deterministic by seed, no download. ``ncm sample section-set-spheres OUT`` writes a set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ncm_core.data.synth_sections import SampleSection, rate_capability

#: pixel size of this family's microscope
SPHERES_PIXEL_SIZE_UM = 0.2
#: nominal porosities of a set (each section jitters around its value by up to 0.03)
SPHERES_POROSITIES: tuple[float, ...] = (0.2, 0.275, 0.35, 0.425, 0.5)


def _line_mask(shape: tuple[int, int], p0: tuple[float, float], p1: tuple[float, float], width: float) -> np.ndarray:
    """Pixels within ``width / 2`` of the segment ``p0``-``p1`` (row, column)."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    d = np.subtract(p1, p0, dtype=float)
    t = np.clip(((yy - p0[0]) * d[0] + (xx - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
    return (yy - p0[0] - t * d[0]) ** 2 + (xx - p0[1] - t * d[1]) ** 2 <= (width / 2) ** 2


def sphere_cross_section(
    porosity: float = 0.35,
    shape: tuple[int, int] = (500, 2000),
    *,
    tilt_deg: float = 0.5,
    thickness_um: float = 40.0,
    seed: int = 0,
) -> SampleSection:
    """One RGB cross-section of this family (module docstring); ``porosity`` in [0.1, 0.6] is the share of
    pore discs asked of PoreSpy (cracks and pull-outs add a little, binder takes some away)."""
    import porespy as ps

    if not 0.1 <= porosity <= 0.6:
        raise ValueError(f"porosity must be in [0.1, 0.6], got {porosity}")
    rng = np.random.default_rng([seed, int(porosity * 1000), 7])
    h, w = shape
    thickness_px = int(round(thickness_um / SPHERES_PIXEL_SIZE_UM))
    pad = int(abs(np.tan(np.radians(tilt_deg))) * w / 2) + 20
    H, W = h + 2 * pad, w + 2 * pad
    top = pad + (h - thickness_px) // 2 - 30
    bottom = top + thickness_px
    band = (thickness_px + 16, W)
    r = int(rng.integers(3, 8))
    asked = min(porosity / 0.85, 0.7)  # binder takes about 15 % of the pore discs
    pores = ~ps.generators.overlapping_spheres(list(band), r=r, porosity=1 - asked, seed=int(rng.integers(1 << 30)))
    flakes = ps.generators.blobs(list(band), porosity=0.8, blobiness=3, seed=int(rng.integers(1 << 30)))
    binder = pores & ~flakes & (rng.random(band) < 0.9)
    binder = ndimage.binary_opening(binder, iterations=1)
    pore = pores & ~binder
    for _ in range(int(rng.integers(1, 3))):  # cracks through the layer
        c0 = rng.uniform(0, band[1])
        pore |= _line_mask(band, (0, c0), (band[0], c0 + rng.uniform(-40, 40)), rng.uniform(1.5, 3))
    for _ in range(int(rng.integers(2, 5))):  # pull-outs
        cy, cx, rr = rng.uniform(0, band[0]), rng.uniform(0, band[1]), rng.uniform(8, 14)
        yy, xx = np.ogrid[0 : band[0], 0 : band[1]]
        pore |= (yy - cy) ** 2 + (xx - cx) ** 2 < rr**2
    # phase map: 0 epoxy, 1 solid, 2 binder, 3 aluminium
    phase = np.zeros((H, W), np.uint8)
    layer = np.zeros((H, W), bool)
    y0 = top - 8
    phase[y0 : y0 + band[0]] = np.where(pore, 0, np.where(binder, 2, 1))
    layer[top:bottom] = True
    phase[~layer & (phase != 3)] = 0
    phase[bottom + 2 : bottom + 2 + 30] = 3
    measured = float((phase[top:bottom] == 0).mean())
    colours = np.array([[25, 30, 38], [150, 158, 170], [85, 88, 92], [225, 228, 235]], np.float32)
    colours *= rng.uniform(0.9, 1.1)  # exposure
    img = colours[phase]
    img += ndimage.gaussian_filter(rng.normal(0, 1, (H, W, 1)), (6, 6, 0)) * 14  # uneven illumination
    for _ in range(int(rng.integers(1, 4))):  # scratches across the whole image
        r0 = rng.uniform(0, H)
        m = _line_mask((H, W), (r0, 0), (r0 + rng.uniform(-0.15, 0.15) * W, W), rng.uniform(1, 2))
        img[m] += rng.choice([-35.0, 35.0])
    img = ndimage.gaussian_filter(img, (1.2, 1.2, 0))
    img += rng.normal(0, 6, img.shape)
    if tilt_deg:
        img = ndimage.rotate(img, tilt_deg, axes=(1, 0), reshape=False, order=1, mode="reflect")
    img = img[pad : pad + h, pad : pad + w]
    thickness = thickness_px * SPHERES_PIXEL_SIZE_UM
    return SampleSection(
        image=np.clip(img, 0, 255).astype(np.uint8),
        porosity=measured,
        tilt_deg=tilt_deg,
        thickness_um=thickness,
        collector_row=float(bottom + 2 - pad),
        targets=rate_capability(measured, thickness),
        pixel_size=SPHERES_PIXEL_SIZE_UM,
    )


def write_sphere_section_dataset(
    root: str | Path,
    per_porosity: int = 4,
    shape: tuple[int, int] = (500, 2000),
    *,
    thickness_um: tuple[float, float] = (30.0, 48.0),
    max_tilt: float = 1.5,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``5 * per_porosity`` mosaics of this family (OME-TIFF, 0.2 um/px), ``targets.csv`` (``image``,
    ``porosity`` (the nominal value, a grouping column), capacities at 0.2C-5C) and ``truth.json`` under
    ``root``, like :func:`ncm_core.data.synth_sections.write_section_dataset`."""
    import csv
    import json

    import tifffile

    from ncm_core.outputs import atomic_output, write_sample_marker

    out = Path(root)
    with atomic_output(out, overwrite) as part:
        write_sample_marker(part, "section-set-spheres", seed)
        rng = np.random.default_rng([seed, 98])
        rows, truth, k = [], {}, 0
        for p in SPHERES_POROSITIES:
            for _ in range(per_porosity):
                tilt = float(np.round(rng.uniform(-max_tilt, max_tilt), 3))
                th = float(np.round(rng.uniform(*thickness_um), 1))
                por = float(np.clip(p + rng.uniform(-0.03, 0.03), 0.1, 0.6))
                s = sphere_cross_section(por, shape, tilt_deg=tilt, thickness_um=th, seed=seed * 1000 + k)
                name = f"spheres_{k:03d}"
                meta = {"axes": "YXS", "PhysicalSizeX": s.pixel_size, "PhysicalSizeY": s.pixel_size}
                meta.update(PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
                tifffile.imwrite(part / f"{name}.ome.tif", s.image, photometric="rgb", metadata=meta)
                rows.append({"image": name, "porosity": f"{p:g}", **s.targets})
                truth[name] = {"tilt_deg": tilt, "thickness_um": s.thickness_um, "porosity": s.porosity}
                k += 1
        with open(part / "targets.csv", "w", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=list(rows[0]))
            wr.writeheader()
            wr.writerows(rows)
        (part / "truth.json").write_text(json.dumps(truth, indent=2))
    return out
