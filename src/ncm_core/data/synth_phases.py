"""Synthetic electrode images whose phase maps are known: sample data for segmentation and measurement.

Two kinds, deterministic by seed, no download:

* ``"sem"``: SEM-like top views (grey) of pores, active particles and the carbon-binder domain;
* ``"section"``: light-microscopy-like cross-sections (RGB) of embedding resin, a porous active layer
  and the aluminium current collector (pores are filled with resin, so resin and pores are one class).

Active particles are discs of known radii that touch but do not overlap, so their size distribution is
known exactly. The images carry what makes global thresholding fail at boundaries: a blur that mixes
phases over a few pixels, noise, a slow shading across the field, charging halos around particles (SEM)
and textures whose grey levels overlap (a binder's fine texture spans the pore and particle levels).
:func:`paint_strokes` mimics a person painting a few lines and scribbles inside each phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: phases of each kind; class k (0-based) is label value k + 1 in label images
PHASES: dict[str, tuple[str, ...]] = {
    "sem": ("pore", "active", "binder"),
    "section": ("pore", "active", "binder", "collector"),
}
PIXEL_SIZE_UM: dict[str, float] = {"sem": 0.05, "section": 0.123}
DEFAULT_SHAPE: dict[str, tuple[int, int]] = {"sem": (384, 384), "section": (384, 512)}


@dataclass
class PhaseSample:
    """A synthetic image with its phase map and particles."""

    image: np.ndarray  # (H, W) uint8 (sem) or (H, W, 3) uint8 (section)
    truth: np.ndarray  # (H, W) uint8, class index (0-based) per pixel
    classes: tuple[str, ...]
    particles: np.ndarray  # (N, 3) float: centre row, centre column, radius (px)
    pixel_size: float
    porosity: float  # pore fraction (of the active layer for a section)
    layer: tuple[int, int] | None = None  # rows [top, bottom) of the active layer (section)

    def info(self) -> dict:
        return {
            "classes": list(self.classes),
            "pixel_size_um": self.pixel_size,
            "porosity": round(self.porosity, 6),
            "layer_rows": list(self.layer) if self.layer else None,
            "radii_px": [round(float(r), 3) for r in self.particles[:, 2]],
            "centres_px": [[round(float(y), 2), round(float(x), 2)] for y, x in self.particles[:, :2]],
        }


def _smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    n = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def _place_discs(
    shape: tuple[int, int],
    rows: tuple[float, float],
    fill: float,
    radius: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Non-overlapping discs (touching allowed) inside ``rows`` until they cover ``fill`` of the area or
    no more fit: ``(N, 3)`` centre row, centre column, radius. Radii are log-normal around ``radius``."""
    h, w = shape
    r0, r1 = rows
    target = fill * (r1 - r0) * w
    cell = 2.6 * radius
    grid: dict[tuple[int, int], list[int]] = {}
    discs: list[tuple[float, float, float]] = []
    area, misses = 0.0, 0
    while area < target and misses < 3000:
        r = float(np.clip(radius * np.exp(rng.normal(0, 0.25)), 0.5 * radius, 1.6 * radius))
        if r1 - r0 <= 2 * r:
            misses += 1
            continue
        cy, cx = rng.uniform(r0 + r, r1 - r), rng.uniform(-0.5 * r, w + 0.5 * r)
        gy, gx = int(cy // cell), int(cx // cell)
        ok = True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for i in grid.get((gy + dy, gx + dx), ()):
                    y, x, rr = discs[i]
                    if (y - cy) ** 2 + (x - cx) ** 2 < (rr + r - 0.5) ** 2:
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if not ok:
            misses += 1
            continue
        misses = 0
        grid.setdefault((gy, gx), []).append(len(discs))
        discs.append((cy, cx, r))
        area += np.pi * r * r
    return np.array(discs, np.float64).reshape(-1, 3)


def _draw_discs(shape: tuple[int, int], discs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask of the discs, their sphere height (0..1) and the distance to each disc's rim (px, inside)."""
    h, w = shape
    mask = np.zeros(shape, bool)
    height = np.zeros(shape, np.float32)
    rim = np.zeros(shape, np.float32)
    for cy, cx, r in discs:
        y0, y1 = max(int(cy - r) - 1, 0), min(int(cy + r) + 2, h)
        x0, x1 = max(int(cx - r) - 1, 0), min(int(cx + r) + 2, w)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        d = np.hypot(yy - cy, xx - cx).astype(np.float32)
        inside = d < r
        mask[y0:y1, x0:x1] |= inside
        hgt = np.sqrt(np.clip(1 - (d / r) ** 2, 0, 1)) * (0.65 + 0.35 * np.clip((cy - yy) / r, -1, 1))
        height[y0:y1, x0:x1] = np.where(inside, hgt, height[y0:y1, x0:x1])
        rim[y0:y1, x0:x1] = np.where(inside, r - d, rim[y0:y1, x0:x1])
    return mask, height, rim


def _binder(active: np.ndarray, allowed: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Carbon-binder: patches hugging the particles, plus a few free blobs, within ``allowed``."""
    shape = active.shape
    near = ndimage.distance_transform_edt(~active)
    blobs = _smooth_noise(shape, 3.0, rng)
    # binder wets the particles: likely next to them, blobby further out
    score = blobs - 0.35 * near
    free = allowed & ~active
    if not free.any():
        return np.zeros(shape, bool)
    cut = np.quantile(score[free], 1 - amount)
    return free & (score > cut)


def _finish(img: np.ndarray, rng: np.random.Generator, blur: float, noise: float, shading: float) -> np.ndarray:
    """Blur, slow shading (a tilt and a broad bump), shot-like noise; clipped to uint8."""
    h, w = img.shape[:2]
    extra = (0,) * (img.ndim - 2)
    img = ndimage.gaussian_filter(img, (blur, blur, *extra))
    gy, gx = np.linspace(-1, 1, h)[:, None], np.linspace(-1, 1, w)[None, :]
    field = 1 + shading * (rng.uniform(-1, 1) * gy + rng.uniform(-1, 1) * gx)
    field = field + shading * 0.8 * ndimage.zoom(rng.normal(size=(3, 3)), (h / 3, w / 3), order=3)[:h, :w]
    if img.ndim == 3:
        field = field[..., None]
    img = img * field
    img = img + rng.normal(0, 1, img.shape) * noise * np.sqrt(np.clip(img, 4, None) / 100)
    return np.clip(img, 0, 255).astype(np.uint8)


def sem_phases(shape: tuple[int, int] | None = None, *, radius: float = 11.0, seed: int = 0) -> PhaseSample:
    """An SEM-like grey top view: pores (0), active particles (1), carbon-binder (2)."""
    shape = tuple(shape or DEFAULT_SHAPE["sem"])
    rng = np.random.default_rng([seed, 19, 1])
    discs = _place_discs(shape, (0, shape[0]), 0.5, radius, rng)
    active, height, rim = _draw_discs(shape, discs)
    binder = _binder(active, np.ones(shape, bool), 0.3, rng)
    truth = np.zeros(shape, np.uint8)
    truth[active] = 1
    truth[binder] = 2
    pore = 38 + 6 * _smooth_noise(shape, 5, rng)
    fine = _smooth_noise(shape, 0.8, rng)
    bind = 82 + 30 * fine + 10 * _smooth_noise(shape, 2.5, rng)
    grains = 9 * _smooth_noise(shape, 1.5, rng)
    act = 120 + 70 * height + 50 * np.exp(-rim / 1.5) + grains
    img = np.where(active, act, np.where(binder, bind, pore)).astype(np.float32)
    # charging: particles light up their surroundings, brighter near big particle clusters
    img += 38 * ndimage.gaussian_filter(active.astype(np.float32), 7) * (~active)
    img = _finish(img, rng, blur=1.3, noise=9.0, shading=0.28)
    pore_frac = float((truth == 0).mean())
    return PhaseSample(img, truth, PHASES["sem"], discs, PIXEL_SIZE_UM["sem"], pore_frac)


def section_phases(shape: tuple[int, int] | None = None, *, radius: float = 9.0, seed: int = 0) -> PhaseSample:
    """An RGB light-microscopy-like cross-section: resin-filled pores and resin above the layer (0), active
    particles (1), carbon-binder (2), aluminium collector (3)."""
    shape = tuple(shape or DEFAULT_SHAPE["section"])
    h, w = shape
    rng = np.random.default_rng([seed, 19, 2])
    top = int(h * rng.uniform(0.12, 0.22))
    coll_top = int(h * rng.uniform(0.74, 0.8))
    coll_bottom = min(h, coll_top + max(8, h // 10))
    discs = _place_discs(shape, (top, coll_top), 0.55, radius, rng)
    active, height, rim = _draw_discs(shape, discs)
    layer = np.zeros(shape, bool)
    layer[top:coll_top] = True
    binder = _binder(active, layer, 0.35, rng)
    truth = np.zeros(shape, np.uint8)
    truth[active] = 1
    truth[binder] = 2
    truth[coll_top:coll_bottom] = 3
    colours = np.array([[48, 50, 86], [168, 162, 150], [88, 80, 74], [226, 226, 218]], np.float32)
    img = colours[truth]
    img += (14 * _smooth_noise(shape, 6, rng))[..., None]  # resin and polishing unevenness
    img += (10 * _smooth_noise(shape, 1.0, rng) * (truth == 2))[..., None]  # binder texture
    img += (40 * (height - 0.5) * active + 30 * np.exp(-rim / 1.5) * active)[..., None]
    img += (6 * _smooth_noise(shape, 0.6, rng) * (truth == 3))[..., None]  # polishing scratches
    img = _finish(img, rng, blur=1.2, noise=7.0, shading=0.22)
    pore_frac = float((truth[top:coll_top] == 0).mean())
    return PhaseSample(img, truth, PHASES["section"], discs, PIXEL_SIZE_UM["section"], pore_frac, (top, coll_top))


def phase_sample(kind: str = "sem", shape: tuple[int, int] | None = None, *, seed: int = 0) -> PhaseSample:
    """A :class:`PhaseSample` of ``kind`` ``"sem"`` or ``"section"``."""
    if kind == "sem":
        return sem_phases(shape, seed=seed)
    if kind == "section":
        return section_phases(shape, seed=seed)
    raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(PHASES)}")


def paint_strokes(
    truth: np.ndarray, n_classes: int, *, fraction: float = 0.01, width: int = 3, seed: int = 0
) -> np.ndarray:
    """Sparse labels as a person paints them: a few smooth lines and scribbles inside each phase, kept
    ``width // 2 + 1`` px from its boundary, about ``fraction`` of the pixels in all (shared evenly between
    the classes, less for a class too small). Returns uint8, 0 = unlabelled, k + 1 = class k."""
    rng = np.random.default_rng([seed, 23])
    h, w = truth.shape
    out = np.zeros(truth.shape, np.uint8)
    budget = fraction * truth.size / n_classes
    half = width // 2
    brush = np.hypot(*np.mgrid[-half : half + 1, -half : half + 1]) <= half + 0.25
    for k in range(n_classes):
        phase = truth == k
        inner = ndimage.binary_erosion(phase, iterations=half + 1) if half else phase
        if inner.sum() < 20:
            inner = phase
        pts = np.flatnonzero(inner)
        if not len(pts):
            continue
        target = min(budget, 0.25 * phase.sum())
        painted = 0
        for _ in range(200):
            if painted >= target:
                break
            y, x = divmod(int(rng.choice(pts)), w)
            ang, turn = rng.uniform(0, 2 * np.pi), rng.choice([0.05, 0.35])  # a line or a scribble
            ys, xs = [], []
            fy, fx = float(y), float(x)
            for _ in range(int(rng.integers(15, 80))):
                iy, ix = int(round(fy)), int(round(fx))
                if not (0 <= iy < h and 0 <= ix < w) or not inner[iy, ix]:
                    break
                ys.append(iy)
                xs.append(ix)
                ang += rng.normal(0, turn)
                fy, fx = fy + np.sin(ang), fx + np.cos(ang)
            if not ys:
                continue
            # the stroke, drawn with the brush in its own bounding box
            y0, y1 = max(min(ys) - half, 0), min(max(ys) + half + 1, h)
            x0, x1 = max(min(xs) - half, 0), min(max(xs) + half + 1, w)
            stroke = np.zeros((y1 - y0, x1 - x0), bool)
            stroke[np.array(ys) - y0, np.array(xs) - x0] = True
            if half:
                stroke = ndimage.binary_dilation(stroke, brush)
            box = out[y0:y1, x0:x1]
            stroke &= phase[y0:y1, x0:x1] & (box == 0)
            box[stroke] = k + 1
            painted += int(stroke.sum())
    return out


def write_phase_dataset(
    out: str | Path,
    n: int = 4,
    kind: str = "sem",
    shape: tuple[int, int] | None = None,
    *,
    fraction: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write ``n`` images of ``kind`` with stroke labels and their truth, whole (under ``<out>.partial``).

    Per image ``<stem>.png`` (grey or RGB), ``<stem>_labels.png`` (strokes over about ``fraction`` of the
    pixels: 0 = unlabelled, k = class k), ``<stem>_truth.png`` (the dense phase map, same values); and
    ``classes.txt`` and ``phases.json`` (per image: pixel size, porosity, layer rows, particle centres
    and radii). A folder that is not empty is refused unless ``overwrite``.
    """
    from PIL import Image

    from ncm_core.outputs import atomic_output, write_sample_marker

    if kind not in PHASES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {tuple(PHASES)}")
    out = Path(out)
    with atomic_output(out, overwrite) as part:
        write_sample_marker(part, f"phases-{kind}", seed)
        (part / "classes.txt").write_text("\n".join(PHASES[kind]) + "\n")
        info = {}
        for i in range(n):
            s = phase_sample(kind, shape, seed=seed * 1000 + i)
            stem = f"{kind}_{i:03d}"
            strokes = paint_strokes(s.truth, len(s.classes), fraction=fraction, seed=seed * 1000 + i)
            Image.fromarray(s.image).save(part / f"{stem}.png")
            Image.fromarray(strokes).save(part / f"{stem}_labels.png")
            Image.fromarray((s.truth + 1).astype(np.uint8)).save(part / f"{stem}_truth.png")
            info[stem] = {**s.info(), "stroke_fraction": round(float((strokes > 0).mean()), 5)}
        (part / "phases.json").write_text(json.dumps(info))
    return out


def write_phase_mosaic(
    out: str | Path,
    shape: tuple[int, int] = (2048, 2048),
    kind: str = "sem",
    *,
    chunks: int = 512,
    fraction: float = 0.01,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """A chunked OME-Zarr mosaic of ``kind`` with labels ``truth`` (the phase map) and ``strokes`` (painted
    labels), value k + 1 = class k; a 2x pyramid; the particles and porosity in the group's attributes
    (``phases``)."""
    import zarr

    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.outputs import check_output

    check_output(out, overwrite)  # before the image is made
    s = phase_sample(kind, shape, seed=seed)
    strokes = paint_strokes(s.truth, len(s.classes), fraction=fraction, seed=seed)
    names = list(s.classes)
    write_ome_zarr(
        out,
        s.image,
        pixel_size=s.pixel_size,
        chunks=chunks,
        levels=3,
        labels={"truth": s.truth + 1, "strokes": strokes},
        label_classes={"truth": names, "strokes": names},
        overwrite=overwrite,
        name=f"phases_{kind}",
    )
    zarr.open_group(str(out), mode="r+").attrs["phases"] = s.info()
    return Path(out)
