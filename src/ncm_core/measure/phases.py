"""Phase fractions, porosity and profiles of fractions along an axis.

All three are sums over pixels, so each has a block-by-block form for label arrays larger than memory
(zarr, dask, or an NGFF image-label opened lazily): the counts of each block are added up, and the
result equals that of the whole array in memory exactly (integer counts).

Fractions are shares of the *classified* pixels: pixels whose value names no class (0, "not predicted",
in the NGFF convention) are left out of the denominator; :func:`class_counts` gives them too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.measure._labels import block_slices, chunks_of, class_map, pore_values, read
from ncm_core.progress import ProgressFn, check_cancel, report

Classes = Sequence[str] | Mapping[int, str] | None


def _as_labels(labels: np.ndarray) -> np.ndarray:
    a = np.asarray(labels)
    if a.dtype == bool:
        return a.astype(np.uint8)
    if not np.issubdtype(a.dtype, np.integer):
        if a.size and not np.all(np.mod(a, 1) == 0):
            raise NcmError(f"labels must be whole numbers (class values), got {a.dtype} values with fractions")
        a = a.astype(np.int64)
    if a.size and a.min() < 0:
        raise NcmError("labels must not be negative (value k+1 = class k, 0 = not predicted)")
    return a


def class_counts(labels: Any, *, progress: ProgressFn | None = None, cancel: Any = None) -> dict[int, int]:
    """Pixels of each label value (0 included), block by block for zarr / dask arrays."""
    total: np.ndarray = np.zeros(0, np.int64)
    blocks = list(block_slices(np.shape(labels), chunks_of(labels)))
    for i, sl in enumerate(blocks):
        check_cancel(cancel)
        c = np.bincount(_as_labels(read(labels, sl)).reshape(-1))
        if c.size > total.size:
            c[: total.size] += total
            total = c
        else:
            total[: c.size] += c
        report(progress, i + 1, len(blocks), "counting phases")
    return {int(v): int(n) for v, n in enumerate(total) if n}


def _fractions(counts: Mapping[int, int], classes: Classes) -> dict[str, float]:
    names = class_map(classes, list(counts))
    n = sum(counts.get(v, 0) for v in names)
    return {name: (counts.get(v, 0) / n if n else float("nan")) for v, name in names.items()}


def phase_fractions(labels: Any, classes: Classes = None) -> dict[str, float]:
    """``{class name: share of the classified pixels}`` of a label image or volume (module docstring for
    ``classes``); a boolean mask gives ``{"class_1": share of True}``. Sums to 1 over the classes."""
    a = _as_labels(labels)
    counts = np.bincount(a.reshape(-1))
    return _fractions({v: int(n) for v, n in enumerate(counts) if n}, classes)


def phase_fractions_lazy(
    labels: Any, classes: Classes = None, *, progress: ProgressFn | None = None, cancel: Any = None
) -> dict[str, float]:
    """:func:`phase_fractions` of a zarr / dask / numpy label array read block by block (slabs along the
    first axis, whole chunks): memory is one block, the result is exactly that of the whole array."""
    return _fractions(class_counts(labels, progress=progress, cancel=cancel), classes)


def porosity(labels: Any, classes: Classes = None, pore: Any = None) -> float:
    """Share of the classified pixels that are pore. A boolean mask is a pore mask (True = pore);
    otherwise the pore classes are ``pore`` (names or values) or the class named like a pore."""
    a = np.asarray(labels)
    if a.dtype == bool:
        return float(a.mean()) if a.size else float("nan")
    counts = np.bincount(_as_labels(a).reshape(-1))
    names = class_map(classes, list(np.flatnonzero(counts)))
    pores = pore_values(names, pore)
    n = sum(int(counts[v]) for v in names if v < counts.size)
    return sum(int(counts[v]) for v in pores if v < counts.size) / n if n else float("nan")


def profile(
    labels: Any,
    axis: int = 0,
    classes: Classes = None,
    *,
    coordinate: Callable[[tuple[slice, ...]], np.ndarray] | None = None,
    bin_width: float = 1.0,
    pixel_size: float | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> dict[str, np.ndarray]:
    """Phase fractions per slab along ``axis`` (rows, columns or slices), block by block.

    ``coordinate(slices) -> array`` bins pixels by any position instead of their index along ``axis``:
    for a cross-section, the distance from the current collector in pixels (from the geometry that
    ``ncm sections`` finds), so the profile runs through the electrode's thickness wherever it lies.
    ``bin_width`` is in pixels. Returns ``{"position": bin centres (px, or um with pixel_size),
    "pixels": classified pixels per bin, <class name>: fraction per bin}`` (NaN where a bin has no
    classified pixel)."""
    shape = np.shape(labels)
    if not -len(shape) <= axis < len(shape):
        raise NcmError(f"profile axis {axis} is not an axis of a {len(shape)}-D image")
    axis %= len(shape)
    if bin_width <= 0:
        raise NcmError(f"profile bin width must be > 0, got {bin_width}")
    blocks = list(block_slices(shape, chunks_of(labels)))
    acc: np.ndarray | None = None  # (bins, values) counts
    lo_bin = 0
    for i, sl in enumerate(blocks):
        check_cancel(cancel)
        lab = _as_labels(read(labels, sl))
        if coordinate is None:
            start = sl[0].start if axis == 0 else 0
            idx = np.arange(start, start + lab.shape[axis]).reshape([-1 if d == axis else 1 for d in range(lab.ndim)])
            coord = np.broadcast_to(idx, lab.shape)
        else:
            coord = np.broadcast_to(np.asarray(coordinate(sl)), lab.shape)
        b = np.floor(coord / bin_width).astype(np.int64).reshape(-1)
        if b.size == 0:
            continue
        v = lab.reshape(-1)
        nv = max(int(v.max()) + 1, acc.shape[1] if acc is not None else 0)
        part = np.bincount((b - b.min()) * nv + v, minlength=(int(b.max() - b.min()) + 1) * nv).reshape(-1, nv)
        acc, lo_bin = _add_counts(acc, lo_bin, part, int(b.min()))
        report(progress, i + 1, len(blocks), "profile")
    if acc is None:
        acc = np.zeros((0, 1), np.int64)
    names = class_map(classes, list(np.flatnonzero(acc.sum(0))))
    cols = [v for v in names if v < acc.shape[1]]
    n = acc[:, cols].sum(1) if cols else np.zeros(acc.shape[0], np.int64)
    size = 1.0 if pixel_size is None else float(pixel_size)
    out: dict[str, np.ndarray] = {
        "position": (lo_bin + np.arange(acc.shape[0]) + 0.5) * bin_width * size,
        "pixels": n,
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        for v, name in names.items():
            c = acc[:, v] if v < acc.shape[1] else np.zeros(acc.shape[0], np.int64)
            out[name] = np.where(n > 0, c / np.maximum(n, 1), np.nan)
    return out


def _add_counts(acc: np.ndarray | None, lo: int, part: np.ndarray, part_lo: int) -> tuple[np.ndarray, int]:
    """Add ``part`` (bins from ``part_lo``) into ``acc`` (bins from ``lo``), growing either as needed."""
    if acc is None:
        return part.astype(np.int64), part_lo
    new_lo = min(lo, part_lo)
    new_hi = max(lo + acc.shape[0], part_lo + part.shape[0])
    nv = max(acc.shape[1], part.shape[1])
    out = np.zeros((new_hi - new_lo, nv), np.int64)
    out[lo - new_lo : lo - new_lo + acc.shape[0], : acc.shape[1]] += acc
    out[part_lo - new_lo : part_lo - new_lo + part.shape[0], : part.shape[1]] += part
    return out, new_lo


def porosity_profile(profile_table: Mapping[str, np.ndarray], pores: Sequence[str]) -> np.ndarray:
    """The pore fraction per bin of a :func:`profile` table (the sum of the pore classes' fractions)."""
    return np.sum([np.asarray(profile_table[p]) for p in pores], axis=0)
