"""Segmented images (phase maps) read whole: a few integer label values, one per phase.

Generation (:mod:`ncm_core.training.generate`) and the checks of generated volumes need a phase map, not a
grey-level image; a grey-level image given by mistake is refused in one line that says how to segment it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

MAX_PHASES = 8  # more distinct values than this: a grey-level image, not a phase map

SEGMENT_FIRST = (
    "segment it first (ncm train --task segment DATA SEG, then ncm predict SEG IMAGE OUT.zarr) and give its labels"
)


def read_phase_image(source: Any, ndim: int = 2) -> np.ndarray:
    """A phase map (``ndim``-D integer labels) read whole from a file, an OME-Zarr or an array."""
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.io.pixels import read_pixels

    where = str(source) if isinstance(source, (str, Path)) else None
    if isinstance(source, np.ndarray) and source.ndim == ndim:
        arr = source
    elif ndim == 2:
        arr = read_pixels(open_mosaic(source))
    else:
        import zarr

        try:
            g = zarr.open(str(source), mode="r")
            arr = np.asarray(g["0"] if hasattr(g, "group_keys") else g)
        except Exception as exc:  # noqa: BLE001 - any reader error is one line
            raise NcmError(f"cannot read a {ndim}-D volume ({type(exc).__name__})", where) from None
    if arr.ndim == ndim + 1 and arr.shape[-1] in (3, 4):  # RGB(A) phase maps with equal channels
        if not (arr[..., :3] == arr[..., :1]).all():
            raise NcmError(f"is a colour image, not a phase map: {SEGMENT_FIRST}", where)
        arr = arr[..., 0]
    if arr.ndim != ndim:
        raise NcmError(f"expected a {ndim}-D phase map, got an array of shape {arr.shape}", where)
    return check_phase_map(arr, where)


def check_phase_map(arr: np.ndarray, where: str | None = None) -> np.ndarray:
    """``arr`` as int64 labels, or one line when it looks like a grey-level image."""
    fractional = np.issubdtype(arr.dtype, np.floating) and not (np.isfinite(arr) & (arr == np.round(arr))).all()
    if fractional:
        raise NcmError(f"is a grey-level image (fractional values), not a phase map: {SEGMENT_FIRST}", where)
    values = np.unique(arr)
    if len(values) > MAX_PHASES:
        raise NcmError(
            f"looks like a grey-level image ({len(values)} distinct values; a phase map has at most "
            f"{MAX_PHASES}), not a phase map: {SEGMENT_FIRST}",
            where,
        )
    if len(values) < 2:
        raise NcmError("holds a single phase: a phase map needs at least two", where)
    return arr.astype(np.int64)


def one_hot(labels: np.ndarray, phases: list[int]) -> np.ndarray:
    """``(P, ...)`` float32 one-hot channels of ``labels`` for the label values ``phases``."""
    return np.stack([(labels == v) for v in phases]).astype(np.float32)


def phase_fractions_of(labels: np.ndarray, phases: list[int]) -> list[float]:
    """Fraction of each phase (a training target of the phase-fraction loss; measures are in ncm_core.measure)."""
    return [float((labels == v).mean()) for v in phases]
