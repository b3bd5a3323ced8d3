"""Electrode cross-sections: find the current collector, straighten the section, place the crops.

A light-microscopy cross-section shows, from top to bottom, embedding epoxy,
the porous active layer, and the bright aluminium current collector. The
extraction follows Deeg et al. (Batteries 2024, 10, 99):

1. **Collector.** The mosaic is read in vertical strips (never whole). In each
   strip the collector is the longest run of rows whose 20th-percentile grey
   value is bright: uniformly bright, unlike bright particles between dark
   pores. Its top edge is located to a fraction of a pixel, and a RANSAC line
   (scikit-learn) through the edges gives the collector's angle.
2. **Section frame.** Coordinates along the collector (columns) and
   perpendicular to it (rows, 0 at the collector's top edge, negative above).
   Nothing is rotated as a whole: every strip or crop is resampled from the
   bounding box it covers in the mosaic (``scipy.ndimage.map_coordinates``), so
   memory depends on strip and crop size only.
3. **Surface.** In each strip of the section frame, the share of solid pixels
   (brighter than an Otsu threshold) per row; the electrode surface is where it
   falls below half the layer's level for good.
4. **Rectangle.** The largest rectangle of active layer standing on the
   collector (largest rectangle under the histogram of per-strip layer
   heights), minus small margins at the collector and the surface.
5. **Crops** of ``crop`` = (height, width) px: one row of crops centred in the
   rectangle (``mode="center"``), or a sliding window over it.

Angles follow the image as seen on screen: positive = the collector rises to
the right (counter-clockwise).

Cutting the crops and writing them to a folder is :mod:`ncm_core.data.sections`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ncm_core.data.section_geometry import SectionGeometry
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import Mosaic, open_mosaic
from ncm_core.io.pixels import read_pixels
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, check_cancel

CropMode = Literal["center", "sliding"]
MODES: tuple[CropMode, ...] = ("center", "sliding")


@dataclass(frozen=True)
class SectionOptions:
    """How a cross-section is found and cut (the one home of these defaults; see :func:`detect_section`)."""

    crop: tuple[int, int] = (224, 672)  # crop (height, width), pixels (as published)
    mode: CropMode = "center"  # one row of crops centred in the rectangle, or a sliding window
    stride: tuple[int, int] | None = None  # sliding window step (None: half a crop)
    strip: int = 32  # width of the strips the mosaic is read in, pixels
    margin: int = 4  # pixels left out next to the collector and below the surface
    turn: bool | None = None  # None: find out whether the collector is at the top; True/False force it
    pixel_size: float | None = None  # micrometres per pixel, for a mosaic opened from a path
    strict: bool = False  # several mosaics: stop at the first that fails (default: skip it, record why)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise NcmError(f"crop mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        crop = (int(self.crop[0]), int(self.crop[1]))
        if min(crop) < 8:
            raise NcmError(f"crops must be at least 8 x 8 px, got {crop[0]} x {crop[1]}")
        object.__setattr__(self, "crop", crop)
        if self.strip < 1 or self.margin < 0:
            raise NcmError(f"strip must be positive and margin not negative, got {self.strip} / {self.margin}")
        if self.pixel_size is not None and not (math.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise NcmError(f"pixel size must be a finite number of micrometres above 0, got {self.pixel_size}")


def _gray(block: np.ndarray) -> np.ndarray:
    block = np.asarray(block)
    g = block.astype(np.float32)
    return g.mean(axis=-1) if g.ndim == 3 else g


def sample_frame(
    mosaic: Mosaic,
    geom_origin: np.ndarray,
    u: np.ndarray,
    d: np.ndarray,
    r0: float,
    c0: float,
    h: int,
    w: int,
    order: int = 1,
    gray: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample an ``h`` x ``w`` section-frame window from the mosaic, reading only its bounding box.

    Returns the window (``(h, w)`` or ``(h, w, C)``, float32) and a mask of
    pixels that fall inside the mosaic.
    """
    from scipy import ndimage

    rr, cc = np.meshgrid(np.arange(h, dtype=np.float64) + r0, np.arange(w, dtype=np.float64) + c0, indexing="ij")
    pts = geom_origin + cc[..., None] * u + rr[..., None] * d  # (h, w, 2) of (y, x)
    H, W = mosaic.shape
    inside = (pts[..., 0] > -0.5) & (pts[..., 0] < H - 0.5) & (pts[..., 1] > -0.5) & (pts[..., 1] < W - 0.5)
    y0 = int(max(np.floor(pts[..., 0].min()) - 1, 0))
    y1 = int(min(np.ceil(pts[..., 0].max()) + 2, H))
    x0 = int(max(np.floor(pts[..., 1].min()) - 1, 0))
    x1 = int(min(np.ceil(pts[..., 1].max()) + 2, W))
    chans = mosaic.channels
    shape_out = (h, w) if gray or chans == 1 else (h, w, chans)
    if y1 <= y0 or x1 <= x0:
        return np.zeros(shape_out, np.float32), inside
    block = read_pixels(mosaic, (slice(y0, y1), slice(x0, x1)))
    if gray:
        block = _gray(block)
    coords = np.stack([pts[..., 0] - y0, pts[..., 1] - x0])
    if block.ndim == 2:
        out = ndimage.map_coordinates(block.astype(np.float32), coords, order=order, mode="nearest")
    else:
        out = np.stack(
            [
                ndimage.map_coordinates(block[..., k].astype(np.float32), coords, order=order, mode="nearest")
                for k in range(block.shape[-1])
            ],
            axis=-1,
        )
    return out.astype(np.float32), inside


# ------------------------------------------------------------------------------------------- collector
def _strip_edges(
    mosaic: Mosaic, strip: int, cancel: CancelFlag
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Every run of uniformly bright rows in every vertical strip: x centre, sub-pixel first and last row.

    Dense particle clusters can be bright over many rows in one strip; only the
    collector's runs line up across the whole image, which the line fit finds.
    """
    H, W = mosaic.shape
    starts = list(range(0, W - strip + 1, strip)) or [0]
    profiles = []
    for x0 in starts:
        check_cancel(cancel)
        g = _gray(read_pixels(mosaic, (slice(None), slice(x0, x0 + strip))))
        profiles.append(np.percentile(g, 20, axis=1))
    q = np.stack(profiles)  # (strips, H)
    high, low = float(np.percentile(q, 99.5)), float(np.median(q))
    thr = 0.5 * (high + low)
    xs, tops, bottoms = [], [], []
    for k, prof in enumerate(q):
        above = prof > thr
        d = np.diff(np.concatenate([[0], above.astype(np.int8), [0]]))
        for first, end in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)):  # every run of bright rows
            if end - first < 3:
                continue
            # threshold crossings; a crossing half-way between rows k-1 and k puts the edge at k - 0.5
            top = (
                first - 0.5
                if first == 0
                else first - 1 + float((thr - prof[first - 1]) / (prof[first] - prof[first - 1]))
            )
            bot = end - 0.5 if end == H else end - 1 + float((prof[end - 1] - thr) / (prof[end - 1] - prof[end]))
            xs.append(starts[k] + (min(strip, W) - 1) / 2)
            tops.append(top + 0.5)  # first bright row
            bottoms.append(bot - 0.5)  # last bright row
    return np.asarray(xs), np.asarray(tops), np.asarray(bottoms), high, low


@dataclass
class Collector:
    """The collector band's edges as lines ``y = row + slope * x`` in the mosaic."""

    angle_deg: float  # counter-clockwise on screen
    slope: float
    top_row: float  # first bright row at column 0
    bottom_row: float  # last bright row at column 0
    residual_px: float  # RMS distance of the strip edges from the line
    strips: int  # strips that show the band


def find_collector(mosaic: Mosaic, strip: int = 32, cancel: CancelFlag = None) -> Collector:
    """Fit the current collector's edges with a RANSAC line (scikit-learn) through per-strip edges.

    Raises :class:`NcmError` when no bright, straight, uniform band crosses the mosaic.
    """
    from sklearn.linear_model import LinearRegression, RANSACRegressor

    where = mosaic.source or mosaic.name
    xs, tops, bottoms, high, low = _strip_edges(mosaic, strip, cancel)
    n_strips = max(1, mosaic.shape[1] // strip)
    full = float(np.iinfo(mosaic.dtype).max) if np.issubdtype(mosaic.dtype, np.integer) else 1.0
    with_band = len(set(xs.tolist()))
    if high - low < 0.08 * full or with_band < max(3, 0.5 * n_strips):
        raise NcmError(
            "no current collector found: no bright, uniform band crosses the image "
            f"({with_band} of {n_strips} strips show one)",
            where,
        )
    ransac = RANSACRegressor(LinearRegression(), residual_threshold=2.0, random_state=0, min_samples=2, max_trials=1000)
    ransac.fit(xs[:, None], tops)
    inl = ransac.inlier_mask_
    if len(set(xs[inl].tolist())) < max(3, 0.5 * n_strips):
        raise NcmError(
            "no current collector found: no bright band is straight across the image "
            f"(only {len(set(xs[inl].tolist()))} of {n_strips} strips line up)",
            where,
        )
    slope = float(ransac.estimator_.coef_[0])
    top = float(ransac.estimator_.intercept_)
    resid = tops[inl] - (top + slope * xs[inl])
    bottom = float(np.median(bottoms[inl] - slope * xs[inl]))
    return Collector(
        float(np.degrees(np.arctan(-slope))), slope, top, bottom, float(np.sqrt(np.mean(resid**2))), int(inl.sum())
    )


# ------------------------------------------------------------------------------------------- geometry
def largest_rectangle(heights: Sequence[float]) -> tuple[int, int, float]:
    """Largest rectangle under a histogram: (first bar, bar after the last, height)."""
    best, best_area = (0, 0, 0.0), 0.0
    stack: list[int] = []  # bars of increasing height
    hs = [float(h) for h in heights] + [0.0]
    for i, h in enumerate(hs):
        while stack and hs[stack[-1]] >= h:
            j = stack.pop()
            left = stack[-1] + 1 if stack else 0
            if hs[j] * (i - left) > best_area:
                best_area, best = hs[j] * (i - left), (left, i, hs[j])
        stack.append(i)
    return best


def _surface_profile(
    mosaic: Mosaic,
    origin: np.ndarray,
    u: np.ndarray,
    d: np.ndarray,
    c_range: tuple[float, float],
    strip: int,
    cancel: CancelFlag,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per section-frame strip: column centre, layer height above the collector (px), usable height (px)."""
    from skimage.filters import threshold_otsu

    H, W = mosaic.shape
    max_up = int(np.ceil(np.hypot(H, W)))
    # how far up the frame stays inside the mosaic, per strip, bounds the read
    cols = np.arange(c_range[0], c_range[1] - strip + 1, strip)
    strips = []
    for c0 in cols:
        check_cancel(cancel)
        # rows from -max_up .. -1, clipped to the part inside the mosaic
        top = _rows_inside(origin, u, d, c0, strip, H, W, max_up)
        if top < 8:
            strips.append((c0, None, None))
            continue
        win, inside = sample_frame(mosaic, origin, u, d, -top, c0, top, strip, gray=True)
        strips.append((c0, win, inside))
    vals = [w[m] for _, w, m in strips if w is not None and m.any()]
    if not vals:
        raise NcmError("the section above the collector lies outside the image", mosaic.source or mosaic.name)
    allv = np.concatenate(vals)
    thr = threshold_otsu(allv[:: max(1, allv.size // 2_000_000)])
    centres, layer, usable = [], [], []
    for c0, win, inside in strips:
        centres.append(c0 + (strip - 1) / 2)
        if win is None:
            layer.append(0.0)
            usable.append(0.0)
            continue
        solid = ((win > thr) & inside).mean(axis=1)[::-1]  # row 0 = just above the collector, going up
        ok_rows = inside.all(axis=1)[::-1]
        limit = int(np.argmin(ok_rows)) if not ok_rows.all() else len(ok_rows)  # rows fully inside the mosaic
        k = 9
        sm = np.convolve(solid, np.ones(k) / k, mode="same")
        solid_rows = sm[:limit][sm[:limit] > 0.1]
        level = float(np.median(solid_rows)) if len(solid_rows) else 0.0
        if level < 0.1:
            layer.append(0.0)
            usable.append(0.0)
            continue
        # the surface: the highest solid row below which most rows are solid (pores inside the layer
        # and specks of debris floating in the epoxy above it do not move it)
        solid_row = sm >= 0.5 * level
        share = np.cumsum(solid_row) / np.arange(1, len(solid_row) + 1)
        top = np.flatnonzero(solid_row & (share >= 0.6))
        height = float(top[-1] + 1) if len(top) else 0.0
        layer.append(height)
        usable.append(min(height, float(limit)))
    return np.asarray(centres), np.asarray(layer), np.asarray(usable)


def _rows_inside(
    origin: np.ndarray, u: np.ndarray, d: np.ndarray, c0: float, w: int, H: int, W: int, max_up: int
) -> int:
    """How many rows above the collector a strip can go before all of it leaves the mosaic."""
    for c in (c0, c0 + w - 1):
        p = origin + c * u
        if not (-0.5 < p[0] < H - 0.5 and -0.5 < p[1] < W - 0.5):
            return 0
    # walk up along -d from the strip's centre until outside (closed form per image border)
    p = origin + (c0 + (w - 1) / 2) * u
    ts = []
    for axis, size in ((0, H), (1, W)):
        step = -d[axis]
        if step > 1e-12:
            ts.append((size - 0.5 - p[axis]) / step)
        elif step < -1e-12:
            ts.append((-0.5 - p[axis]) / step)
    return int(min(min(ts) if ts else max_up, max_up))


def detect_section(
    mosaic: Any, options: SectionOptions | None = None, *, cancel: CancelFlag = None, **overrides: Any
) -> SectionGeometry:
    """Find collector, surface and the largest active-layer rectangle, and place crops in it.

    ``options`` (or its field names as keywords):

    crop
        Crop (height, width) in pixels (default 224 x 672, as published).
    mode
        ``center``: one row of side-by-side crops centred in the rectangle;
        ``sliding``: a window moved by ``stride`` (default half a crop) over it.
    margin
        Pixels left out next to the collector and below the surface.
    turn
        ``None`` finds out whether the collector is at the bottom (as it should
        be) or at the top (the section is then turned by 180 degrees, with a
        warning); ``True``/``False`` force it.
    """
    o = merge_options(SectionOptions, options, overrides)
    crop, mode, stride, strip, margin, turn = o.crop, o.mode, o.stride, o.strip, o.margin, o.turn
    m = mosaic if isinstance(mosaic, Mosaic) else open_mosaic(mosaic, pixel_size=o.pixel_size)
    where = m.source or m.name
    ch, cw = crop
    H, W = m.shape
    col = find_collector(m, strip, cancel)
    theta = np.arctan(-col.slope)
    u = np.array([-np.sin(theta), np.cos(theta)])  # (y, x): along the collector, to the right
    d = np.array([np.cos(theta), np.sin(theta)])  # perpendicular, downwards
    c_hi = float((W - 1) / np.cos(theta))  # frame columns where the collector is inside the mosaic
    c_range = (0.0, c_hi)
    upright = (np.array([col.top_row, 0.0]), u, d)
    turned_frame = (np.array([col.bottom_row, 0.0]) + c_hi * u, -u, -d)
    profile = _surface_profile(m, *(turned_frame if turn else upright), c_range, strip, cancel)
    turned = bool(turn)
    if turn is None:  # is the layer below the collector instead? (then the upright profile is not needed)
        below = _surface_profile(m, *turned_frame, c_range, strip, cancel)
        turned = bool(np.median(below[1]) > 2 * max(float(np.median(profile[1])), 1.0))
        if turned:
            profile = below
            warnings.warn(
                f"{where}: the current collector is at the top of the image; the section is turned "
                "by 180 degrees so that the active layer lies above it",
                stacklevel=2,
            )
    origin, u, d = turned_frame if turned else upright
    centres, layer, usable = profile
    have = layer > 0
    if not have.any():
        raise NcmError("no active layer found above the current collector", where)
    thickness = float(np.median(layer[have]))
    heights = np.clip(usable - 2 * margin, 0, None)
    px = f" ({thickness * m.pixel_size:.1f} um)" if m.pixel_size else ""
    if heights.max() < ch:
        h_fit = max(8, int(heights.max()) // 8 * 8)  # a crop that fits, with the same aspect ratio
        raise NcmError(
            f"the active layer is {thickness:.0f} px{px} thick ({heights.max():.0f} px usable); crops "
            f"of {ch} px height do not fit: use a smaller crop height, e.g. --crop {h_fit} "
            f"{max(8, round(cw * h_fit / ch / 8) * 8)} (same aspect ratio)",
            where,
        )
    i0, i1, hgt = largest_rectangle(np.where(heights >= ch, heights, 0.0))
    r_top = -int(np.floor(hgt)) - margin
    r_bottom = -margin  # exclusive
    c0 = int(np.ceil(centres[i0] - (strip - 1) / 2))
    c1 = int(np.floor(centres[i1 - 1] + (strip - 1) / 2)) + 1
    if c1 - c0 < cw:
        raise NcmError(
            f"the straight part of the active layer is {c1 - c0} px wide, narrower than a crop "
            f"({cw} px): use a smaller crop width, e.g. --crop {ch} {max(8, (c1 - c0) // 8 * 8)}",
            where,
        )
    crops: list[tuple[int, int]] = []
    if mode == "center":
        n = (c1 - c0) // cw
        left = c0 + ((c1 - c0) - n * cw) // 2
        r = r_top + ((r_bottom - r_top) - ch) // 2
        crops = [(r, left + k * cw) for k in range(n)]
    else:
        sy, sx = stride or (max(1, ch // 2), max(1, cw // 2))
        if sy < 1 or sx < 1:
            raise NcmError(f"stride must be positive, got {sy} x {sx}")
        rows = list(range(r_bottom - ch, r_top - 1, -sy))[::-1]
        for r in rows:
            cols = list(range(c0, c1 - cw + 1, sx))
            crops += [(r, c) for c in cols]
    o = [float(v) for v in origin]
    return SectionGeometry(
        source=str(where),
        shape=(H, W),
        angle_deg=col.angle_deg,
        turned=turned,
        origin=(o[0], o[1]),
        u=(float(u[0]), float(u[1])),
        d=(float(d[0]), float(d[1])),
        columns=c_range,
        pixel_size=m.pixel_size,
        thickness_px=thickness,
        surface=[(float(c), float(-h)) for c, h in zip(centres, layer)],
        rectangle=(r_top, r_bottom, c0, c1),
        crop=(ch, cw),
        crops=crops,
        edge_residual_px=col.residual_px,
    )
