"""Synthetic sample data: SEM frames of NCM cathodes, class mosaics, and (from
:mod:`ncm_core.data.synth_sections`) light-microscopy cross-sections of calendered electrodes.

Everything is deterministic by seed and needs no download. The images are made
to carry the cues the real studies rely on, so models trained on them have to
learn the same kind of features:

* **composition** (333/523/622/811) sets the secondary-particle size, the
  primary-grain size and shape (high-Ni grains are smaller and elongated) and
  the grain-boundary contrast;
* **state** (pristine / after formation / after 100 cycles) sets the outline
  roughness, the number and width of cracks, and the amount of fragments;
* SEM look: sphere shading, edge brightening, grain texture, beam blur, shot
  noise, scan-line noise, a slow brightness drift, and a bottom information
  bar like a tabletop SEM's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ncm_core.data.synth_sections import (  # noqa: F401  (importable from here, as before)
    C_RATES,
    LM_PIXEL_SIZE_UM,
    SampleSection,
    cross_section,
    rate_capability,
    write_section_dataset,
)

COMPOSITIONS: tuple[str, ...] = ("NCM333", "NCM523", "NCM622", "NCM811")
STATES: tuple[str, ...] = ("pristine", "formation", "cycled100")
CLASS_NAMES: tuple[str, ...] = tuple(f"{c}_{s}" for c in COMPOSITIONS for s in STATES)

#: SEM pixel size of the synthetic frames, micrometres per pixel.
SEM_PIXEL_SIZE_UM = 0.05


@dataclass(frozen=True)
class _Composition:
    radius: float  # mean secondary-particle radius, px
    grain: float  # primary-grain spacing, px
    elongation: float  # grain aspect ratio
    gb_contrast: float  # darkening of grain boundaries, grey levels
    brightness: float  # base brightness of the particle surface


@dataclass(frozen=True)
class _State:
    roughness: float  # relative amplitude of outline harmonics
    cracks: tuple[int, int]  # min, max cracks per particle
    crack_width: float  # px
    fragments: float  # fragments per 10^4 px^2 of background
    gb_open: float  # extra grain-boundary darkening (intergranular cracking)


_COMP = {
    "NCM333": _Composition(radius=30, grain=7.5, elongation=1.0, gb_contrast=35, brightness=150),
    "NCM523": _Composition(radius=24, grain=5.5, elongation=1.5, gb_contrast=45, brightness=140),
    "NCM622": _Composition(radius=19, grain=4.2, elongation=2.2, gb_contrast=55, brightness=132),
    "NCM811": _Composition(radius=14, grain=3.0, elongation=3.2, gb_contrast=65, brightness=122),
}
_STATE = {
    "pristine": _State(roughness=0.02, cracks=(0, 0), crack_width=0.0, fragments=0.0, gb_open=0),
    "formation": _State(roughness=0.08, cracks=(2, 3), crack_width=1.0, fragments=3.0, gb_open=15),
    "cycled100": _State(roughness=0.15, cracks=(4, 7), crack_width=2.0, fragments=8.0, gb_open=35),
}


def class_index(composition: str, state: str) -> int:
    """Index of a (composition, state) pair in :data:`CLASS_NAMES`."""
    return COMPOSITIONS.index(composition) * len(STATES) + STATES.index(state)


def _particle(
    out: np.ndarray,
    cy: float,
    cx: float,
    radius: float,
    comp: _Composition,
    state: _State,
    rng: np.random.Generator,
) -> None:
    """Draw one secondary particle into ``out`` (float image), in place."""
    h, w = out.shape
    rmax = radius * (1 + 3 * state.roughness) + 3
    y0, y1 = int(max(cy - rmax, 0)), int(min(cy + rmax + 1, h))
    x0, x1 = int(max(cx - rmax, 0)), int(min(cx + rmax + 1, w))
    if y1 <= y0 or x1 <= x0:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    d = np.hypot(dy, dx)
    theta = np.arctan2(dy, dx)
    # Outline: radius modulated by random harmonics (roughness grows with cycling).
    r_theta = np.full_like(d, radius)
    for k in range(2, 9):
        amp = state.roughness * radius * rng.normal() / k**0.6
        r_theta += amp * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    inside = d < r_theta
    if not inside.any():
        return
    rel = np.clip(d / np.maximum(r_theta, 1e-3), 0, 1)
    # Sphere shading plus SEM edge brightening.
    shade = comp.brightness + 45 * np.sqrt(1 - rel**2) * (0.6 + 0.4 * (-dy / radius).clip(-1, 1))
    shade += 55 * np.exp(-(r_theta - d).clip(0) / 1.8)
    # Primary grains: Voronoi cells of random seeds, stretched along a random
    # direction for elongated (high-Ni) grains.
    n_seeds = max(4, int(np.pi * (rmax / comp.grain) ** 2 * 1.3))
    seeds = rng.uniform([y0, x0], [y1, x1], size=(n_seeds, 2)).astype(np.float32)
    phi = rng.uniform(0, np.pi)
    c, s = np.cos(phi), np.sin(phi)
    stretch = np.array([[c, s], [-s / comp.elongation, c / comp.elongation]], np.float32)
    pts = np.stack([yy.ravel(), xx.ravel()], 1) @ stretch.T
    _, lab = cKDTree(seeds @ stretch.T).query(pts)
    lab = lab.reshape(d.shape)
    grain_val = rng.normal(0, 14, n_seeds)[lab]
    boundary = (np.diff(lab, axis=0, prepend=lab[:1]) != 0) | (np.diff(lab, axis=1, prepend=lab[:, :1]) != 0)
    tex = grain_val - boundary * (comp.gb_contrast + state.gb_open) * (rel < 0.97)
    val = shade + tex
    # Cracks: persistent random walks from near the centre outwards.
    n_cracks = rng.integers(state.cracks[0], state.cracks[1] + 1) if state.cracks[1] else 0
    crack = np.zeros(d.shape, bool)
    for _ in range(n_cracks):
        py, px = cy + rng.normal(0, radius * 0.2), cx + rng.normal(0, radius * 0.2)
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(int(radius * 1.3)):
            ang += rng.normal(0, 0.25)
            py, px = py + np.sin(ang), px + np.cos(ang)
            iy, ix = int(round(py)) - y0, int(round(px)) - x0
            if 0 <= iy < crack.shape[0] and 0 <= ix < crack.shape[1]:
                crack[iy, ix] = True
    if n_cracks:
        if state.crack_width > 1:
            crack = ndimage.binary_dilation(crack, iterations=max(int(state.crack_width) - 1, 0))
        val = np.where(crack, 25 + 10 * rng.random(d.shape), val)
    region = out[y0:y1, x0:x1]
    region[inside] = val[inside]


def _fragments(out: np.ndarray, density: float, rng: np.random.Generator) -> None:
    h, w = out.shape
    n = rng.poisson(density * h * w / 1e4)
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 4.5)
        y0, y1 = int(max(cy - r - 1, 0)), int(min(cy + r + 2, h))
        x0, x1 = int(max(cx - r - 1, 0)), int(min(cx + r + 2, w))
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ell = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * rng.uniform(0.5, 1.5))) ** 2 < 1
        out[y0:y1, x0:x1][ell] = 170 + 40 * rng.random()


def _particle_field(shape: tuple[int, int], composition: str, state: str, rng: np.random.Generator) -> np.ndarray:
    """Float image of particles of one class on a dark carbon/binder background."""
    comp, st = _COMP[composition], _STATE[state]
    h, w = shape
    bg = 38 + 10 * ndimage.gaussian_filter(rng.normal(size=shape), 3) * 3
    out = bg.astype(np.float32)
    _fragments(out, st.fragments * 0.4, rng)
    area = h * w
    n = int(0.75 * area / (np.pi * comp.radius**2)) + 1
    centres = rng.uniform([-comp.radius, -comp.radius], [h + comp.radius, w + comp.radius], size=(n, 2))
    for cy, cx in centres:
        r = comp.radius * float(np.exp(rng.normal(0, 0.18)))
        _particle(out, cy, cx, r, comp, st, rng)
    _fragments(out, st.fragments, rng)
    return out


def _sem_look(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Beam blur, drift, shot and scan-line noise; returns uint8."""
    h, w = img.shape
    img = ndimage.gaussian_filter(img, 0.7)
    gy, gx = np.linspace(-1, 1, h)[:, None], np.linspace(-1, 1, w)[None, :]
    img = img * (1 + 0.08 * rng.normal() * gy + 0.08 * rng.normal() * gx) + rng.normal(0, 6)
    img = img + rng.normal(0, 1, (h, 1)) * 2.5  # scan lines
    img = img + rng.normal(0, 1, img.shape) * np.sqrt(np.clip(img, 1, None)) * 0.7
    return np.clip(img, 0, 255).astype(np.uint8)


def _word(bar: np.ndarray, x: int, limit: float, rng: np.random.Generator) -> int:
    """Draw one 'word' of bright character blocks into an information bar from column ``x`` (no character
    at or past ``limit``); returns the column after it and its space."""
    rows = bar.shape[0]
    cw = int(rng.integers(4, 8))
    for _ in range(int(rng.integers(3, 9))):
        if x + cw >= limit:
            break
        bar[rows // 3 : rows // 3 + rows // 3, x : x + cw - 1] = rng.integers(180, 255)
        x += cw + 1
    return x + 3 * cw


def _bar(img: np.ndarray, rows: int) -> np.ndarray:
    """The bottom ``rows`` of ``img`` made an empty bar (dark, a bright separator line); returned."""
    bar = img[img.shape[0] - rows :]
    bar[:] = 12
    bar[:2] = 90
    return bar


def _scale_bar(bar: np.ndarray) -> None:
    rows, w = bar.shape
    sb = int(w * 0.15)
    bar[rows // 2 - 1 : rows // 2 + 1, w - sb - 10 : w - 10] = 255


def _info_bar(img: np.ndarray, rows: int, rng: np.random.Generator) -> None:
    """Overwrite the bottom ``rows`` with a tabletop-SEM information bar."""
    w = img.shape[1]
    bar = _bar(img, rows)
    x = 8
    while x < w * 0.7:  # words of 'text'
        x = _word(bar, x, w, rng)
    _scale_bar(bar)


def sem_frame(
    composition: str,
    state: str,
    shape: tuple[int, int] = (512, 512),
    *,
    info_bar: int | None = 32,
    seed: int = 0,
) -> np.ndarray:
    """One synthetic SEM frame (uint8, ``shape``) of a given class.

    ``info_bar`` is the height in rows of the bottom information bar (``None``
    or 0 for none). Pixel size is :data:`SEM_PIXEL_SIZE_UM`.
    """
    if composition not in _COMP:
        raise ValueError(f"unknown composition {composition!r}; expected one of {COMPOSITIONS}")
    if state not in _STATE:
        raise ValueError(f"unknown state {state!r}; expected one of {STATES}")
    rng = np.random.default_rng([seed, class_index(composition, state)])
    img = _sem_look(_particle_field(shape, composition, state, rng), rng)
    if info_bar:
        _info_bar(img, info_bar, rng)
    return img


def write_sem_dataset(
    root: str | Path,
    frames_per_class: int = 4,
    shape: tuple[int, int] = (512, 512),
    *,
    info_bar: int = 32,
    seed: int = 0,
    classes: tuple[str, ...] = CLASS_NAMES,
    overwrite: bool = False,
) -> Path:
    """Write a class-per-folder dataset of SEM frames (PNG) under ``root``, whole (under ``<root>.partial``,
    then renamed): a folder that is not empty is refused unless ``overwrite``, so old and new frames never mix."""
    from PIL import Image

    from ncm_core.outputs import atomic_output, write_sample_marker

    root = Path(root)
    with atomic_output(root, overwrite) as part:
        write_sample_marker(part, "sem-frames", seed)
        for name in classes:
            comp, state = name.split("_")
            (part / name).mkdir(parents=True, exist_ok=True)
            for k in range(frames_per_class):
                img = sem_frame(comp, state, shape, info_bar=info_bar, seed=seed * 1000 + k)
                Image.fromarray(img).save(part / name / f"{name}_{k:03d}.png")
    return root


@dataclass
class SampleMosaic:
    """A synthetic mosaic with its ground truth."""

    image: np.ndarray
    truth: np.ndarray  # class index per pixel (uint8)
    class_names: tuple[str, ...] = CLASS_NAMES
    pixel_size: float = SEM_PIXEL_SIZE_UM
    regions: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # y0, y1, x0, x1, class


def sem_mosaic(
    shape: tuple[int, int] = (1100, 1500),
    grid: tuple[int, int] = (3, 4),
    *,
    seed: int = 0,
    classes: tuple[str, ...] = CLASS_NAMES,
) -> SampleMosaic:
    """A mosaic stitched from rectangular regions of different classes.

    The regions form a ``grid`` with jittered borders; their classes are a
    seeded permutation so every class appears once when ``grid`` has 12 cells.
    The default shape is deliberately not a multiple of common tile sizes.
    """
    h, w = shape
    rng = np.random.default_rng([seed, 7])
    ny, nx = grid
    ys = np.linspace(0, h, ny + 1).round().astype(int)
    xs = np.linspace(0, w, nx + 1).round().astype(int)
    ys[1:-1] += rng.integers(-h // (6 * ny), h // (6 * ny) + 1, ny - 1)
    xs[1:-1] += rng.integers(-w // (6 * nx), w // (6 * nx) + 1, nx - 1)
    order = rng.permutation(np.resize(np.arange(len(classes)), ny * nx))
    image = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.uint8)
    regions = []
    for k in range(ny * nx):
        i, j = divmod(k, nx)
        y0, y1, x0, x1 = ys[i], ys[i + 1], xs[j], xs[j + 1]
        ci = int(order[k])
        comp, state = classes[ci].split("_")
        field_rng = np.random.default_rng([seed, 11, k])
        image[y0:y1, x0:x1] = _particle_field((y1 - y0, x1 - x0), comp, state, field_rng)
        truth[y0:y1, x0:x1] = CLASS_NAMES.index(classes[ci])
        regions.append((int(y0), int(y1), int(x0), int(x1), CLASS_NAMES.index(classes[ci])))
    return SampleMosaic(_sem_look(image, rng), truth, regions=regions)
