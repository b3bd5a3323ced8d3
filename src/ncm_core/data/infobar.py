"""Automatic detection of an SEM information bar: a uniform band with text at the bottom (or top) of a frame.

Tabletop SEMs write date, time, magnification and a scale bar into a band of rows under the image. A
crop that touches it leaks the session (and so the label), so ``ncm crops`` and ``ncm train`` skip it.
A bar is found from row statistics only: a run of rows at the frame's edge whose pixels mostly sit at
one grey level (the bar's background, within a couple of levels), with high-contrast strokes on it
(text, a scale bar), ending at a sharp transition to rows that are not uniform (the micrograph). A
frame without such a band gives ``None``: a flat region of the micrograph has no strokes, and noisy
particles have no single background level, so detection errs on the side of finding nothing.

JPEG frames (most tabletop SEMs save JPEG) ring around every stroke of the text, so their bars are
judged a second way: an 8 x 8 block (JPEG's own grid) that holds a stroke is left out, and the bar's
background is flat in the blocks that remain, with rows of dense text bridged. In frames clipped to
black right above the bar, a block of those black rows may join the band (more is left out, never less).

Band settings (``exclude_rows`` of :class:`~ncm_core.data.crops.CropOptions`, ``TrainConfig``,
``PredictOptions``): a band ``(start, stop)``; ``"detect"`` skips a bar where one is found (the default
for frames of class folders); ``"auto"`` insists on one (an image without a bar is an error naming it);
``"none"`` (or ``None`` given directly) skips nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from ncm_core.errors import NcmError

Band = tuple[int | None, int | None]
BandSpec = Band | Literal["detect", "auto", "none"] | None

MIN_ROWS = 6  # the thinnest band taken for a bar
TOLERANCE = 1.5  # grey levels (of 255) from the background level that still count as background
UNIFORM = 0.3  # least share of a bar row's pixels at the background level (text rows included)
CLEAN = 0.8  # least share of a bar row's pixels that are background or stroke (nothing in between)
CONTRAST = 60.0  # grey levels (of 255) a stroke differs from the background
CONTEXT = 16  # micrograph rows looked at beyond the band
# JPEG frames: strokes ring inside their 8 x 8 block, so flatness is judged in the blocks without strokes
JPEG_TOLERANCE = 2.0  # grey levels from the background level in a block without strokes
BLOCK = 8  # px: JPEG's block, which holds a stroke's ringing
MARK = 30.0  # grey levels from the background that mark a block as holding a stroke
QUIET = 0.05  # least share of a row's pixels in quiet blocks to judge its flatness
JPEG_UNIFORM = 0.9  # least share of the quiet pixels of a bar row at the background level


def parse_band(text: str) -> BandSpec:
    """A band setting as written on the command line: ``auto``, ``detect``, ``none`` or empty (no band),
    or ``START:STOP`` (:func:`ncm_core.data.tiling.parse_rows`)."""
    from ncm_core.data.tiling import parse_rows

    t = text.strip().lower()
    if t in ("auto", "detect"):
        return t  # type: ignore[return-value]
    if t in ("", "none"):
        return "none"
    return parse_rows(text)


def check_band(spec: Any) -> BandSpec:
    """``spec`` normalised (a tuple band, a keyword or None), or one error line."""
    from ncm_core.data.tiling import check_rows

    if isinstance(spec, str):
        if spec not in ("detect", "auto", "none"):
            raise NcmError(f"exclude_rows must be a band (start, stop), 'auto', 'detect' or 'none', got {spec!r}")
        return spec  # type: ignore[return-value]
    return check_rows(None if spec is None else tuple(spec))


def band_text(band: Band | None) -> str:
    """``-32:`` for ``(-32, None)``; ``none`` for no band."""
    if band is None:
        return "none"
    a, b = band
    return f"{'' if a is None else a}:{'' if b is None else b}"


def spec_text(spec: BandSpec) -> str:
    """A band setting as the command line writes it: ``detect``, ``auto``, ``none`` or ``START:STOP``."""
    return spec if isinstance(spec, str) else band_text(None if spec is None else tuple(spec))  # type: ignore[arg-type]


def bar_note(bands: dict[str, Any], total: int | None = None) -> str | None:
    """One line saying which images had an information bar detected and left out (None when none had);
    ``bands`` maps an image to its band (a tuple, its text, or None)."""
    found = {k: b if isinstance(b, str) else band_text(b) for k, b in bands.items() if b is not None}
    if not found:
        return None
    shown = ", ".join(f"{k} rows {b}" for k, b in list(found.items())[:3])
    more = f", ... ({len(found) - 3} more)" if len(found) > 3 else ""
    n = len(bands) if total is None else total
    return f"information bar detected and left out in {len(found)} of {n} images: {shown}{more}"


def _gray(img: np.ndarray) -> np.ndarray:
    """Grey levels scaled to 0..255 over the image's own range (channels averaged)."""
    g = np.asarray(img, np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    lo, hi = float(g.min()), float(g.max())
    return (g - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(g)


def _row_stats(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its background level (the mode), the share of pixels within TOLERANCE of it, and the share
    of stroke pixels (at least CONTRAST from it)."""
    q = np.clip(np.rint(rows), 0, 255).astype(np.uint8)
    modes = np.array([np.bincount(r, minlength=256).argmax() for r in q], np.float32)
    d = np.abs(rows - modes[:, None])
    return modes, (d <= TOLERANCE).mean(1), (d >= CONTRAST).mean(1)


def _bottom_band(g: np.ndarray, max_rows: int) -> int:
    """Height of a bar at the bottom of ``g`` (rows scaled 0..255), or 0."""
    n = min(g.shape[0], max_rows + CONTEXT + 1)
    modes, uniform, ink = _row_stats(g[::-1][:n])
    bar_like = (uniform >= UNIFORM) & (uniform + ink >= CLEAN)  # background and strokes, nothing between
    k = 0
    while k < n and bar_like[k]:
        k += 1
    if k < MIN_ROWS or k > max_rows or n - k < CONTEXT:
        return 0
    band_uniform, band_ink = uniform[:k], ink[:k]
    above = uniform[k : k + CONTEXT]
    if band_uniform.mean() < 0.6 or np.median(above) > 0.35 or bar_like[k : k + CONTEXT].any():
        return 0  # not uniform enough, or the rows beyond it look like a bar too (a flat region)
    if (band_ink > 0.002).sum() < 3 or band_ink.mean() < 0.005:
        return 0  # no text or scale bar on it
    # most of the bar shares one background level (a separator line may differ)
    level = np.median(modes[:k])
    if (np.abs(modes[:k] - level) <= 2 * TOLERANCE).mean() < 0.6:
        return 0
    return k


def _block_stats(rows: np.ndarray, first: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: its background level (the mode); the share of its pixels in quiet blocks; the share of
    those within JPEG_TOLERANCE of the level; and the share of stroke pixels (at least CONTRAST from it).

    ``rows`` are image rows ``first, first + step, ...`` (``step`` -1 when read upwards from the bottom).
    JPEG compression rings around every stroke, but only inside the stroke's 8 x 8 block: a block
    (on the image's own 8 px grid) with a pixel more than MARK from the row's level is left out, and
    the bar's background is flat in the blocks that remain, while a micrograph is noisy everywhere.
    """
    q = np.clip(np.rint(rows), 0, 255).astype(np.uint8)
    modes = np.array([np.bincount(r, minlength=256).argmax() for r in q], np.float32)
    d = np.abs(rows - modes[:, None])
    h, w = d.shape
    absolute = first + step * np.arange(h)
    marked = np.zeros(d.shape, bool)
    wb = -(-w // BLOCK) * BLOCK
    loud = np.pad(d > MARK, ((0, 0), (0, wb - w))).reshape(h, -1, BLOCK).any(-1)  # per row and column block
    for b in np.unique(absolute // BLOCK):  # rows of one 8-row block of the image
        sel = absolute // BLOCK == b
        marked[sel] = np.repeat(loud[sel].any(0), BLOCK)[:w][None]
    quiet = ~marked
    n_quiet = quiet.sum(1)
    uniform = ((d <= JPEG_TOLERANCE) & quiet).sum(1) / np.maximum(n_quiet, 1)
    return modes, n_quiet / w, uniform, (d >= CONTRAST).mean(1)


def _jpeg_band(g: np.ndarray, max_rows: int, first: int, step: int) -> int:
    """Height of a JPEG-compressed bar at the edge of ``g`` (rows scaled 0..255, the edge row first), or 0."""
    n = min(g.shape[0], max_rows + CONTEXT + 1)
    modes, quiet, uniform, ink = _block_stats(g[:n], first, step)
    seen = quiet >= QUIET  # enough quiet pixels to judge the row
    flat = seen & (uniform >= JPEG_UNIFORM)
    if not flat[:MIN_ROWS].any():
        return 0
    level = np.median(modes[:MIN_ROWS][flat[:MIN_ROWS]])
    # a bar row: flat where it can be judged; a row of strokes (too few quiet pixels) on the bar's level
    bar_like = flat | (~seen & (np.abs(modes - level) <= 2 * JPEG_TOLERANCE))
    # a text row or two can ring in a block without a stroke pixel of its own: close gaps of <= 2 rows
    nxt = np.convolve(bar_like, [1, 1, 0, 0, 0], "same") > 0  # one of the next two rows (towards the image)
    prv = np.convolve(bar_like, [0, 0, 0, 1, 1], "same") > 0  # one of the two rows before
    bar_like = bar_like | (nxt & prv)
    k = 0
    while k < n and bar_like[k]:
        k += 1
    if k < MIN_ROWS or k > max_rows or n - k < CONTEXT:
        return 0
    if (flat & (quiet >= 0.8))[:k].sum() < MIN_ROWS // 2:
        return 0  # a bar has margins of plain background above and below its text
    if flat[k : k + CONTEXT].mean() > 0.25 or np.median(uniform[k : k + CONTEXT]) >= JPEG_UNIFORM:
        return 0  # the rows beyond it look like a bar too (a flat region)
    band_ink = ink[:k]
    if (band_ink > 0.002).sum() < 3 or band_ink.mean() < 0.005:
        return 0  # no text or scale bar on it
    # most of the bar shares one background level (a separator line may differ)
    if (np.abs(modes[:k] - level) <= 2 * JPEG_TOLERANCE).mean() < 0.6:
        return 0
    return k


def detect_info_bar(
    image: np.ndarray, max_rows: int | None = None, edges: Literal["both", "bottom", "top"] = "both"
) -> Band | None:
    """The band of an SEM information bar in ``image`` (2-D, or 3-D with channels last), or None.

    A bottom bar of ``k`` rows is ``(-k, None)``, a top bar ``(None, k)`` (the conventions of
    :func:`ncm_core.data.tiling.parse_rows`). ``max_rows`` is the tallest band taken for a bar (default:
    a quarter of the image). ``edges`` says where to look (a strip cut from a mosaic's edge: that edge).
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3) or img.shape[0] < 4 * MIN_ROWS or min(img.shape[:2]) < 8:
        return None
    limit = img.shape[0] // 4 if max_rows is None else int(max_rows)
    span = min(img.shape[0], limit + CONTEXT + 1)
    if edges != "top":
        g = _gray(img[-span:])
        bottom = _bottom_band(g, limit) or _jpeg_band(g[::-1], limit, img.shape[0] - 1, -1)
        if bottom:
            return (-bottom, None)
    if edges == "bottom":
        return None
    g = _gray(img[:span][::-1])
    top = _bottom_band(g, limit) or _jpeg_band(g[::-1], limit, 0, 1)
    return (None, top) if top else None


def resolve_band(spec: BandSpec, image: np.ndarray, where: str | Path | None = None) -> Band | None:
    """The band of rows to leave out of ``image`` for the setting ``spec``: a band as given, a detected
    bar (``"detect"``: None when there is none), or, for ``"auto"``, a detected bar or one error line
    naming ``where``."""
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        return tuple(spec)  # type: ignore[return-value]
    band = detect_info_bar(image)
    if band is None and spec == "auto":
        raise NcmError(
            "no information bar found (--exclude-rows auto): give the band, e.g. --exclude-rows=-64:, "
            "or --exclude-rows=none",
            where,
        )
    return band


def cut_band(image: np.ndarray, band: Band) -> np.ndarray:
    """``image`` without the rows of ``band``."""
    start, stop, _ = slice(*band).indices(image.shape[0])
    return np.concatenate([image[:start], image[stop:]], axis=0)


def widest(bands: list[Band | None]) -> Band | None:
    """One band that covers the bars of several frames (the tallest at the bottom, else at the top), for a
    bundle to remember; None when no frame had one."""
    bottom = [-b[0] for b in bands if b is not None and b[0] is not None and b[0] < 0 and b[1] is None]
    if bottom:
        return (-max(bottom), None)
    top = [b[1] for b in bands if b is not None and b[0] is None and b[1] is not None and b[1] > 0]
    return (None, max(top)) if top else None
