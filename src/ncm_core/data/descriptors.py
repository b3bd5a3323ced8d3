"""Microstructure descriptors of cross-section crops: numbers a simple model can regress on.

:func:`crop_descriptors` measures, for each crop of a stack (gray ``(N, H, W)``, RGB ``(N, H, W, 3)`` or
channels-first ``(N, C, H, W)`` with ``channels_first=True``), after one dark/bright threshold:

* ``porosity``: share of dark (pore) pixels;
* ``pore_chord`` / ``solid_chord``: mean chord length of pore and solid runs along rows and columns
  (px, or um with ``pixel_size``): a pore and a particle size. A chord along a grid line through a disc of
  radius r averages pi r / 2, through a square of side s it is s;
* ``interface_density``: pore-solid interface length per area (1/px, or 1/um), from the count of
  4-neighbour phase changes with the Cauchy-Crofton factor pi/4 (exact on average for isotropic
  boundaries; an axis-aligned boundary is under-counted by that factor);
* ``thickness`` (only where the geometry is known, :func:`section_thickness`): the active layer's
  thickness of the crop's section (px, or um), from ``ncm sections``' ``sections.json``.

Defined values for degenerate crops, never a division by zero: a crop without pore pixels has porosity 0,
pore chord 0 and interface density 0 (its solid chord is the mean row/column length); a crop without solid
pixels likewise has solid chord 0. The threshold, when not given, is Otsu's (scikit-image) over the pixels
of all crops together, so one pore-free crop among others still reads as pore-free (a per-crop Otsu would
split its noise in two); :func:`descriptor_matrix` with ``sources`` takes it per section. Everything is
vectorised over the stack (a few ms per crop of 128 x 384 px).

The numbers are computed by :mod:`ncm_core.measure` (:func:`mask_descriptors`, which also takes the pore
masks of a segmentation instead of a threshold); tortuosity, local thickness and particle sizes of a
segmentation come from ``ncm measure`` (per cross-section with ``--sections``). The names and units of
this table stay.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DESCRIPTORS = ("porosity", "pore_chord", "solid_chord", "interface_density")
#: Otsu's threshold is computed on at most this many pixels, sampled evenly from all crops.
OTSU_SAMPLE = 2_000_000


def to_gray(crops: Any, channels_first: bool = False) -> np.ndarray:
    """``(N, H, W)`` float32 gray stack from gray, RGB (mean of channels) or channels-first crops."""
    a = np.asarray(crops)
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 4:
        a = a.mean(1) if channels_first else a.mean(-1)
    return a.astype(np.float32, copy=False)


def otsu_threshold(gray: np.ndarray) -> float:
    """Otsu's threshold over all pixels of a stack (an even sample of at most ``OTSU_SAMPLE`` pixels);
    a constant stack gives its value (then no pixel is below it)."""
    from skimage.filters import threshold_otsu

    flat = gray.reshape(-1)
    if flat.size > OTSU_SAMPLE:
        flat = flat[:: flat.size // OTSU_SAMPLE + 1]
    lo, hi = float(flat.min()), float(flat.max())
    if hi <= lo:
        return lo
    return float(threshold_otsu(flat))


def crop_descriptors(
    crops: Any,
    threshold: float | None = None,
    *,
    pixel_size: float | None = None,
    channels_first: bool = False,
) -> dict[str, np.ndarray]:
    """Descriptors of each crop (module docstring), as ``{name: (N,) float64}``; pores are pixels darker
    than ``threshold`` (default: Otsu over all crops). Lengths in px, or um with ``pixel_size`` (um/px)."""
    gray = to_gray(crops, channels_first)
    t = otsu_threshold(gray) if threshold is None else float(threshold)
    return mask_descriptors(gray < t, pixel_size=pixel_size)


def mask_descriptors(pores: Any, *, pixel_size: float | None = None) -> dict[str, np.ndarray]:
    """The descriptors of :func:`crop_descriptors` from pore masks ``(N, H, W)`` (True = pore): a
    segmentation instead of a threshold. Computed by :mod:`ncm_core.measure` (phase fraction, mean chord
    length, interface density), one number per crop."""
    from ncm_core.measure.correlation import mean_chord_length
    from ncm_core.measure.interfaces import interface_density

    pore = np.asarray(pores, bool)
    if pore.ndim == 2:
        pore = pore[None]
    return {
        "porosity": pore.mean((1, 2)).astype(np.float64),
        "pore_chord": mean_chord_length(pore, pixel_size, batch=True),
        "solid_chord": mean_chord_length(~pore, pixel_size, batch=True),
        "interface_density": interface_density(pore, 1, None, pixel_size, batch=True).astype(np.float64),
    }


def section_thickness(root: str | Path, sources: Sequence[str], pixel_size: float | None = None) -> np.ndarray | None:
    """Active-layer thickness of each crop's section from ``root/sections.json`` (px, or um with
    ``pixel_size``); None when the folder has no such file or a source is not in it."""
    from ncm_core.data.sections import SUMMARY

    path = Path(root) / SUMMARY
    if not path.is_file():
        return None
    try:
        by_name = {m["name"]: float(m["thickness_px"]) for m in json.loads(path.read_text()).get("mosaics", [])}
    except (ValueError, KeyError, TypeError):
        return None
    if not all(s in by_name for s in sources):
        return None
    return np.array([by_name[s] for s in sources]) * (1.0 if pixel_size is None else float(pixel_size))


def descriptor_matrix(
    crops: Any,
    *,
    pixel_size: float | None = None,
    thickness: np.ndarray | None = None,
    channels_first: bool = True,
    threshold: float | None = None,
    sources: Sequence[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """``(N, D)`` descriptor table and its column names: :func:`crop_descriptors` of ``crops``
    (channels-first by default, as prepared crops are), plus ``thickness`` per crop when given and not
    constant (:func:`section_thickness`).

    ``sources`` (the section of each crop): the threshold is Otsu's over each section's crops, so that
    sections imaged with another brightness or contrast read the same porosity (a section is always
    porous; a pore-free crop among its crops still reads as pore-free)."""
    if sources is not None and threshold is None:
        src = np.asarray(sources)
        gray = to_gray(crops, channels_first)
        d = {k: np.zeros(len(src)) for k in DESCRIPTORS}
        for s in dict.fromkeys(src.tolist()):
            rows = np.flatnonzero(src == s)
            part = crop_descriptors(gray[rows], None, pixel_size=pixel_size)
            for k in DESCRIPTORS:
                d[k][rows] = part[k]
    else:
        d = crop_descriptors(crops, threshold, pixel_size=pixel_size, channels_first=channels_first)
    names = list(DESCRIPTORS)
    none = int((d["porosity"] == 0).sum())
    if none:  # defined values, not measured ones: say so once
        warnings.warn(
            f"{none} crop(s) have no pore pixels: their porosity, pore chord and interface density are 0 "
            "(defined, not measured); check the threshold or the crops",
            stacklevel=2,
        )
    cols = [d[k] for k in names]
    th = thickness
    if th is not None and np.ptp(th) > 0:  # a constant thickness says nothing
        names.append("thickness")
        cols.append(th)
    return np.stack(cols, 1), names
