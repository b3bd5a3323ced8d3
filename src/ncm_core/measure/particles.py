"""Particles: separating touching particles, their sizes and shapes, and the size distribution.

* :func:`separate_particles`: a labelled image of particles from a phase mask, by PoreSpy's SNOW
  partitioning (a distance-transform watershed whose markers are peaks of the smoothed distance map,
  trimmed of saddles and plateaus: Gostick, Phys. Rev. E 96, 2017) or by a plain distance-transform
  watershed (scikit-image) with a minimum distance between markers;
* :func:`particle_sizes`: one row per particle (scikit-image ``regionprops_table``): area or volume,
  equivalent diameter (of the disc / sphere of the same area / volume), and in 2D circularity
  ``4 pi A / P^2`` (P from scikit-image's Crofton perimeter; 1 for a disc, lower for elongated or
  rough shapes, clipped to 1) and aspect ratio (major / minor axis of the ellipse of the same second
  moments); whether the particle touches the image border (its size there is cut);
* :func:`size_quantiles`: d10 / d50 / d90 by number (each particle once) or by volume (as laser
  diffraction reports them);
* :func:`particle_summary`: the quantiles, the count and the count per area (per volume in 3D).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ncm_core.errors import NcmError

SEPARATION_METHODS = ("snow", "watershed", "none")


def separate_particles(
    mask: np.ndarray, *, method: str = "snow", r_max: int = 4, sigma: float = 0.4, min_distance: int = 5
) -> np.ndarray:
    """Labelled particles (int32, 0 = background) of a 2D or 3D phase mask, touching particles split.

    ``snow``: PoreSpy's SNOW partitioning (``r_max``: radius of the maximum filter that finds peaks,
    ``sigma``: Gaussian smoothing of the distance map before it); ``watershed``: scikit-image's watershed
    of the negated Euclidean distance (edt) from peaks at least ``min_distance`` apart; ``none``: connected
    components only."""
    m = np.asarray(mask, bool)
    if method not in SEPARATION_METHODS:
        raise NcmError(f"particle separation must be one of {', '.join(SEPARATION_METHODS)}, got {method!r}")
    if not m.any():
        return np.zeros(m.shape, np.int32)
    if method == "none":
        from skimage.measure import label

        return label(m, connectivity=1).astype(np.int32)
    if method == "snow":
        import porespy as ps

        with _quiet():
            regions = ps.filters.snow_partitioning(m, r_max=r_max, sigma=sigma).regions
        return (regions * m).astype(np.int32)
    import edt
    from skimage.feature import peak_local_max
    from skimage.measure import label
    from skimage.segmentation import watershed

    dist = edt.edt(m)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=label(m, connectivity=1))
    markers = np.zeros(m.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=m).astype(np.int32)


def _quiet():
    """PoreSpy's progress bars and logging off inside the block."""
    import contextlib
    import logging

    @contextlib.contextmanager
    def cm():
        import porespy as ps

        old_bar = ps.settings.tqdm.get("disable", None)
        ps.settings.tqdm["disable"] = True
        level = logging.getLogger("porespy").level
        logging.getLogger("porespy").setLevel(logging.ERROR)
        try:
            yield
        finally:
            ps.settings.tqdm["disable"] = old_bar
            logging.getLogger("porespy").setLevel(level)

    return cm()


def particle_sizes(
    particles: np.ndarray, pixel_size: float | None = None, *, method: str = "snow", **separate: Any
) -> dict[str, np.ndarray]:
    """One row per particle as ``{column: (n,) array}``: ``label``, ``area`` (2D, px^2 or um^2) or
    ``volume`` (3D), ``equivalent_diameter`` (px or um), in 2D ``perimeter``, ``circularity`` and
    ``aspect_ratio``, and ``touches_border``. ``particles`` is a labelled image (integers), or a boolean
    mask that is first split with :func:`separate_particles` (``method`` and its keywords)."""
    from skimage.measure import regionprops_table

    p = np.asarray(particles)
    lab = separate_particles(p, method=method, **separate) if p.dtype == bool else p.astype(np.int32, copy=False)
    size = 1.0 if pixel_size is None else float(pixel_size)
    if lab.ndim not in (2, 3):
        raise NcmError(f"particles need a 2D image or a 3D volume, got {lab.ndim} dimensions")
    props = ["label", "area", "bbox"]
    if lab.ndim == 2:
        props += ["perimeter_crofton", "axis_major_length", "axis_minor_length"]
    t = regionprops_table(lab, properties=props)
    n = len(t["label"])
    nd = lab.ndim
    lo = np.stack([t[f"bbox-{d}"] for d in range(nd)], 1) if n else np.zeros((0, nd))
    hi = np.stack([t[f"bbox-{d + nd}"] for d in range(nd)], 1) if n else np.zeros((0, nd))
    border = ((lo == 0) | (hi == np.array(lab.shape))).any(1)
    area = np.asarray(t["area"], np.float64)
    out: dict[str, np.ndarray] = {"label": np.asarray(t["label"], np.int64)}
    if nd == 2:
        out["area"] = area * size**2
        out["equivalent_diameter"] = np.sqrt(4 * area / np.pi) * size
        perim = np.asarray(t["perimeter_crofton"], np.float64)
        out["perimeter"] = perim * size
        with np.errstate(invalid="ignore", divide="ignore"):
            out["circularity"] = np.clip(np.where(perim > 0, 4 * np.pi * area / perim**2, np.nan), 0, 1)
            minor = np.asarray(t["axis_minor_length"], np.float64)
            out["aspect_ratio"] = np.where(minor > 0, np.asarray(t["axis_major_length"]) / minor, np.nan)
    else:
        out["volume"] = area * size**3
        out["equivalent_diameter"] = np.cbrt(6 * area / np.pi) * size
    out["touches_border"] = border
    return out


def size_quantiles(
    diameters: np.ndarray, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), *, weighting: str = "number", ndim: int = 2
) -> dict[str, float]:
    """``{"d10": ..., "d50": ..., "d90": ...}`` of equivalent diameters. ``weighting="number"``: each
    particle counts once; ``"volume"``: each particle weighs by its volume (d^3; d^2 for areas in 2D with
    ``ndim=2`` gives area weighting: use ``ndim=3`` for volume weights from 2D sections). NaN when there
    is no particle."""
    d = np.sort(np.asarray(diameters, np.float64))
    keys = [f"d{round(q * 100)}" for q in quantiles]
    if d.size == 0:
        return dict.fromkeys(keys, float("nan"))
    if weighting == "number":
        return {k: float(np.quantile(d, q)) for k, q in zip(keys, quantiles, strict=True)}
    if weighting != "volume":
        raise NcmError(f"size weighting must be 'number' or 'volume', got {weighting!r}")
    w = d**ndim
    cdf = (np.cumsum(w) - 0.5 * w) / w.sum()  # midpoint rule: a single particle is its own d50
    return {k: float(np.interp(q, cdf, d)) for k, q in zip(keys, quantiles, strict=True)}


def particle_summary(
    table: dict[str, np.ndarray],
    shape: tuple[int, ...],
    pixel_size: float | None = None,
    *,
    exclude_border: bool = False,
) -> dict[str, float]:
    """Count, count per area (per um^2 or px^2; per volume in 3D), d10/d50/d90 by number, mean
    circularity and aspect ratio (2D) of a :func:`particle_sizes` table; ``exclude_border`` leaves out
    particles cut by the image border from the sizes (not from the count)."""
    size = 1.0 if pixel_size is None else float(pixel_size)
    keep = ~table["touches_border"] if exclude_border else np.ones(len(table["label"]), bool)
    d = table["equivalent_diameter"][keep]
    n = len(table["label"])
    extent = float(np.prod(shape)) * size ** len(shape)
    out = {
        "count": float(n),
        "count_per_area" if len(shape) == 2 else "count_per_volume": n / extent if extent else float("nan"),
    }
    out.update(size_quantiles(d))
    out["mean_diameter"] = float(d.mean()) if d.size else float("nan")
    for k in ("circularity", "aspect_ratio"):
        if k in table:
            v = table[k][keep]
            out[f"mean_{k}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out
