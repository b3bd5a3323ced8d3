"""Synthetic light-microscopy cross-sections of calendered cathodes, with rate-capability targets.

Deterministic by seed, no download: epoxy above a porous active layer of bright particles on a bright
aluminium collector, tilted and blurred like a real micrograph, and capacities at several C-rates from a
transport-limited model of porosity and thickness (:func:`rate_capability`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Light-microscopy pixel size of the synthetic cross-sections (Deeg et al. 2024).
LM_PIXEL_SIZE_UM = 0.123
#: C-rates of the synthetic rate-capability targets.
C_RATES: tuple[float, ...] = (0.2, 1.0, 2.0, 3.0, 5.0)


@dataclass
class SampleSection:
    """A synthetic light-microscopy cross-section with its labels."""

    image: np.ndarray  # (H, W, 3) uint8
    porosity: float  # measured pore fraction of the active layer
    tilt_deg: float
    thickness_um: float
    collector_row: float  # row of the collector's top edge at the image centre
    targets: dict[str, float]  # capacity per C-rate, Ah/kg
    pixel_size: float = LM_PIXEL_SIZE_UM


def rate_capability(porosity: float, thickness_um: float, c_rates: tuple[float, ...] = C_RATES) -> dict[str, float]:
    """Discharge capacity (Ah/kg) at each C-rate for a given porosity and thickness.

    A transport-limited model: ``Q(C) = Q0 / (1 + (C / Cc)^1.6)`` with a
    characteristic rate ``Cc`` proportional to the porosity (the electrolyte's
    effective conductivity at constant tortuosity) and inversely proportional
    to the thickness: ``Cc = 8.5 (porosity / 0.35) (40 um / thickness)``. At
    40 um, 5C keeps about 55 % of the capacity at 25 % porosity and 77 % at 45 %.
    """
    q0 = 182.0
    cc = 8.5 * (porosity / 0.35) * (40.0 / max(thickness_um, 1.0))
    return {f"Q_{c:g}C": round(q0 / (1 + (c / cc) ** 1.6), 3) for c in c_rates}


def cross_section(
    porosity: float = 0.35,
    shape: tuple[int, int] = (600, 1800),
    *,
    tilt_deg: float = 1.0,
    thickness_px: int = 320,
    seed: int = 0,
) -> SampleSection:
    """An RGB light-microscopy cross-section of a calendered cathode.

    From top to bottom: epoxy, a porous active layer (NCM particles and
    carbon-binder, pores filled with epoxy) of ``thickness_px`` rows at the
    given ``porosity`` (0.2-0.5), and an aluminium current collector; the whole
    section is rotated by ``tilt_deg``.
    """
    if not 0.05 <= porosity <= 0.8:
        raise ValueError(f"porosity must be in [0.05, 0.8], got {porosity}")
    rng = np.random.default_rng([seed, int(porosity * 1000)])
    h, w = shape
    pad = int(abs(np.tan(np.radians(tilt_deg))) * w / 2) + 20
    H, W = h + 2 * pad, w + 2 * pad
    top = pad + (h - thickness_px) // 2 - 40
    bottom = top + thickness_px
    coll = 36
    # phase map: 0 epoxy, 1 particle, 2 carbon-binder, 3 aluminium
    phase = np.zeros((H, W), np.uint8)
    layer = np.zeros((H, W), bool)
    layer[top:bottom] = True
    solid = np.zeros((H, W), bool)
    target = 1 - porosity
    area = layer.sum()
    yy, xx = np.mgrid[0:H, 0:W]
    while solid[layer].sum() / area < target * 0.9:
        batch = 200
        cy = rng.uniform(top - 4, bottom + 4, batch)
        cx = rng.uniform(0, W, batch)
        rr = rng.uniform(4, 13, batch)
        for y, x, r in zip(cy, cx, rr):
            y0, y1, x0, x1 = int(max(y - r, 0)), int(min(y + r + 1, H)), int(max(x - r, 0)), int(min(x + r + 1, W))
            disk = (yy[y0:y1, x0:x1] - y) ** 2 + (xx[y0:y1, x0:x1] - x) ** 2 < r * r
            solid[y0:y1, x0:x1] |= disk
        solid &= layer
    phase[solid] = 1
    # carbon-binder fills pores next to particles, up to the requested solid fraction
    cbd = ndimage.binary_dilation(solid, iterations=2) & ~solid & layer
    need = target * area - solid[layer].sum()
    cbd &= rng.random((H, W)) < np.clip(need / max(cbd.sum(), 1), 0, 1)
    phase[cbd] = 2
    phase[bottom + 2 : bottom + 2 + coll] = 3
    measured = 1 - (phase[top:bottom] > 0).mean()
    colours = np.array([[40, 42, 70], [175, 170, 160], [70, 66, 60], [235, 235, 228]], np.float32)
    img = colours[phase]
    img += ndimage.gaussian_filter(rng.normal(0, 1, (H, W, 1)), (2, 2, 0)) * 18
    img = ndimage.gaussian_filter(img, (0.8, 0.8, 0))
    img += rng.normal(0, 4, img.shape)
    if tilt_deg:
        img = ndimage.rotate(img, tilt_deg, axes=(1, 0), reshape=False, order=1, mode="reflect")
    img = img[pad : pad + h, pad : pad + w]
    thickness_um = thickness_px * LM_PIXEL_SIZE_UM
    return SampleSection(
        image=np.clip(img, 0, 255).astype(np.uint8),
        porosity=float(measured),
        tilt_deg=tilt_deg,
        thickness_um=thickness_um,
        collector_row=float(bottom + 2 - pad),
        targets=rate_capability(float(measured), thickness_um),
    )


def write_section_dataset(
    root: str | Path,
    porosities: tuple[float, ...] = (0.25, 0.3, 0.35, 0.4, 0.45),
    per_porosity: int = 4,
    shape: tuple[int, int] = (600, 1800),
    *,
    max_tilt: float = 3.0,
    thickness_px: int = 320,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write cross-section mosaics (OME-TIFF with pixel size) and ``targets.csv`` under ``root``.

    Mosaics ``section_<k>.ome.tif`` are tilted by a random angle in
    ``[-max_tilt, max_tilt]`` degrees; ``targets.csv`` has the columns ``image``,
    ``porosity`` (the nominal value: a grouping column), one capacity per C-rate
    (:func:`rate_capability`, Ah/kg, from the *measured* porosity), and
    ``truth.json`` the true tilt and thickness of each mosaic. Written whole (under ``<root>.partial``); a
    folder that is not empty is refused unless ``overwrite``.
    """
    from ncm_core.outputs import atomic_output, write_sample_marker

    out = Path(root)
    with atomic_output(out, overwrite) as part:
        write_sample_marker(part, "section-set", seed)
        _write_sections(part, porosities, per_porosity, shape, max_tilt, thickness_px, seed)
    return out


def _write_sections(
    root: Path,
    porosities: tuple[float, ...],
    per_porosity: int,
    shape: tuple[int, int],
    max_tilt: float,
    thickness_px: int,
    seed: int,
) -> None:
    """The body of :func:`write_section_dataset`, into the folder ``root``."""
    import csv

    import tifffile

    rng = np.random.default_rng([seed, 99])
    rows, truth = [], {}
    k = 0
    for p in porosities:
        for _ in range(per_porosity):
            tilt = float(np.round(rng.uniform(-max_tilt, max_tilt), 3))
            s = cross_section(p, shape, tilt_deg=tilt, thickness_px=thickness_px, seed=seed * 1000 + k)
            name = f"section_{k:03d}"
            tifffile.imwrite(
                root / f"{name}.ome.tif",
                s.image,
                photometric="rgb",
                metadata={
                    "axes": "YXS",
                    "PhysicalSizeX": s.pixel_size,
                    "PhysicalSizeY": s.pixel_size,
                    "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeYUnit": "µm",
                },
            )
            rows.append({"image": name, "porosity": f"{p:g}", **s.targets})
            truth[name] = {
                "tilt_deg": tilt,
                "thickness_um": s.thickness_um,
                "porosity": s.porosity,
                "collector_row": s.collector_row,
            }
            k += 1
    with open(root / "targets.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (root / "truth.json").write_text(json.dumps(truth, indent=2))
    return root
