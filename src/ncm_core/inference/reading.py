"""Reading a block's pixels for the streaming engine: checked as they are read.

:func:`read_block` returns the block's pixels together with a per-pixel *problem map*, so a task can
leave out exactly the tiles or windows whose pixels are not real data, and predict the rest:

- ``NONFINITE``: NaN or inf pixels (a float mosaic with holes); they are read as 0 and the tiles that
  hold them are not predicted (a counted, reported reason; ``strict`` makes it an error);
- ``UNREADABLE``: a chunk whose bytes cannot be decoded (a damaged file, a codec error) after retries.
  Only that chunk is lost, not the block: when the whole block cannot be read, it is read again chunk by
  chunk and the readable chunks are kept;
- ``MISSING``: a chunk that is absent from a zarr store (:meth:`ncm_core.io.mosaic.Mosaic.absent_chunks`):
  zarr would silently read it as the fill value. Stores written sparsely on purpose (empty chunks
  left out) are read as written with ``missing_chunks="fill"``.

Unreadable and missing chunks are *failures* (the block is retried by the next run, and the run ends
incomplete); non-finite pixels are a property of the data. ``digest`` is a hash of the pixels as read
(:mod:`ncm_core.inference.resume` compares it when a run is resumed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

Rect = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open

# problem codes, per pixel (read) and per cell (outputs); the highest code of a tile's pixels wins
OK, NONFINITE, UNREADABLE, MISSING, FAILED_BLOCK = 0, 1, 2, 3, 4
REASONS = {
    NONFINITE: "non-finite pixels (NaN or inf)",
    UNREADABLE: "unreadable chunk",
    MISSING: "missing chunk",
    FAILED_BLOCK: "block could not be read",
}
FAILURES = (UNREADABLE, MISSING, FAILED_BLOCK)  # codes that make a run incomplete


@dataclass
class BlockRead:
    """A block's pixels (clipped to the image; problem pixels set to 0), their problem map and digest."""

    region: np.ndarray
    problems: np.ndarray | None  # uint8 (h, w) codes; None when every pixel is fine
    digest: bytes  # of the pixels as read
    failures: list[dict[str, Any]] = field(default_factory=list)  # unreadable / missing chunk records
    origin: tuple[int, int] = (0, 0)  # mosaic pixel of region[0, 0]

    def describe(self) -> str:
        """The first problem, in words, for an error line (strict mode)."""
        if self.failures:
            return self.failures[0]["error"]
        assert self.problems is not None
        ys, xs = np.nonzero(self.problems)
        y, x = int(ys[0]) + self.origin[0], int(xs[0]) + self.origin[1]
        return f"{REASONS[int(self.problems[ys[0], xs[0]])]} at pixel y {y}, x {x}"


def clip(shape: tuple[int, int], pixels: Rect) -> Rect:
    """``pixels`` clipped to an image of ``shape``."""
    H, W = shape
    y0, y1, x0, x1 = pixels
    return max(0, y0), min(y1, H), max(0, x0), min(x1, W)


def _compute(arr: Any, rect: Rect) -> np.ndarray:
    from dask.local import get_sync  # a function, not the name "synchronous", for which dask imports distributed

    y0, y1, x0, x1 = rect
    return np.asarray(arr[y0:y1, x0:x1].compute(scheduler=get_sync))


def _error(exc: Exception, rect: Rect, source: Any) -> NcmError:
    y0, y1, x0, x1 = rect
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return NcmError(f"cannot read pixels y {y0}:{y1}, x {x0}:{x1} ({type(exc).__name__}: {text})", source)


def read_region(mosaic: Any, pixels: Rect) -> np.ndarray:
    """The mosaic's pixels in ``pixels`` clipped to the image; one-line :class:`NcmError` when unreadable."""
    rect = clip(mosaic.shape, pixels)
    try:
        return _compute(mosaic.data, rect)
    except Exception as exc:  # a damaged chunk, a vanished file, a codec error
        raise _error(exc, rect, mosaic.source) from None


def _with_retries(mosaic: Any, rect: Rect, retries: int, delay: float) -> np.ndarray | NcmError:
    for attempt in range(retries + 1):
        try:
            return read_region(mosaic, rect)
        except NcmError as exc:
            if attempt == retries:
                return exc
            time.sleep(delay * (attempt + 1))
    raise AssertionError("unreachable")


def chunk_rects(arr: Any, rect: Rect) -> Iterator[Rect]:
    """The parts of ``rect`` that lie in one chunk (along y and x) of the dask array ``arr`` each."""
    y0, y1, x0, x1 = rect
    ys = np.cumsum((0, *arr.chunks[0]))
    xs = np.cumsum((0, *arr.chunks[1]))
    for a, b in zip(ys[:-1], ys[1:]):
        if b <= y0 or a >= y1:
            continue
        for c, d in zip(xs[:-1], xs[1:]):
            if d <= x0 or c >= x1:
                continue
            yield int(max(a, y0)), int(min(b, y1)), int(max(c, x0)), int(min(d, x1))


def _by_chunk(mosaic: Any, rect: Rect, retries: int, delay: float) -> tuple[np.ndarray, np.ndarray, list[Any]] | None:
    """The block read chunk by chunk: ``(region, problem map, failure records)``, or None when no chunk
    could be read."""
    y0, y1, x0, x1 = rect
    region = np.zeros((y1 - y0, x1 - x0, *mosaic.data.shape[2:]), mosaic.dtype)
    problems = np.zeros((y1 - y0, x1 - x0), np.uint8)
    failures, n_ok = [], 0
    for r in chunk_rects(mosaic.data, rect):
        part = _with_retries(mosaic, r, min(retries, 1), delay)
        sl = (slice(r[0] - y0, r[1] - y0), slice(r[2] - x0, r[3] - x0))
        if isinstance(part, NcmError):
            problems[sl] = UNREADABLE
            failures.append({"pixels": list(r), "error": str(part), "reason": REASONS[UNREADABLE]})
        else:
            region[sl] = part
            n_ok += 1
    return (region, problems, failures) if n_ok else None


def _missing(mosaic: Any, rect: Rect, region: np.ndarray, problems: np.ndarray | None) -> tuple[Any, list[Any]]:
    """Mark the pixels of chunks absent from the store (``mosaic.absent_chunks()``) as ``MISSING``."""
    absent = mosaic.absent_chunks()
    if absent is None:
        return problems, []
    gone = _compute(absent, rect)
    if not gone.any():
        return problems, []
    y0, _, x0, _ = rect
    problems = np.zeros(gone.shape, np.uint8) if problems is None else problems
    problems[gone] = MISSING
    region[gone] = 0  # (the caller passes a writable copy)
    failures = []
    for r in chunk_rects(absent, rect):
        if gone[r[0] - y0 : r[1] - y0, r[2] - x0 : r[3] - x0].any():
            where = f"y {r[0]}:{r[1]}, x {r[2]}:{r[3]}"
            failures.append(
                {
                    "pixels": list(r),
                    "error": f"{mosaic.source}: chunk at pixels {where} is missing from the store (read as "
                    "the fill value by zarr; if the store leaves out empty chunks on purpose, pass "
                    "--missing-chunks fill)",
                    "reason": REASONS[MISSING],
                }
            )
    return problems, failures


def read_block(mosaic: Any, pixels: Rect, retries: int = 2, delay: float = 0.5) -> BlockRead | NcmError:
    """Read ``pixels`` (clipped) with retries and checks; an :class:`NcmError` when no chunk is readable."""
    rect = clip(mosaic.shape, pixels)
    whole = _with_retries(mosaic, rect, retries, delay)
    problems: np.ndarray | None = None
    failures: list[dict[str, Any]] = []
    if isinstance(whole, NcmError):
        parts = _by_chunk(mosaic, rect, retries, delay)
        if parts is None:
            return whole
        region, problems, failures = parts
    else:
        region = whole
    if not region.flags.writeable:  # problem pixels are set to 0 below
        region = region.copy()
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(region).view(np.uint8).reshape(-1).data)
    problems, gone = _missing(mosaic, rect, region, problems)
    failures += gone
    if problems is not None:
        h.update(problems.tobytes())
    if np.issubdtype(region.dtype, np.floating):
        bad = ~np.isfinite(region)
        if bad.any():
            region[bad] = 0
            if bad.ndim == 3:
                bad = bad.any(axis=2)
            problems = np.zeros(bad.shape, np.uint8) if problems is None else problems
            problems[bad & (problems == OK)] = NONFINITE
    return BlockRead(region, problems, h.digest(), failures, (rect[0], rect[2]))


def cell_problems(problems: np.ndarray | None, tiles_of: Any) -> np.ndarray | None:
    """Per-cell problem codes (the highest code among a cell's pixels), from ``tiles_of(problems)``:
    a function that cuts the problem map like the pixels, ``(rows, cols, t, t)``."""
    if problems is None:
        return None
    return tiles_of(problems).max(axis=(2, 3))


def counts(codes: np.ndarray | None) -> dict[int, int]:
    """``{code: number of items}`` for the non-zero codes of ``codes``."""
    if codes is None:
        return {}
    values, n = np.unique(codes[codes > 0], return_counts=True)
    return {int(v): int(k) for v, k in zip(values, n)}
