"""Tile grids over mosaics: geometry, masks and chunk-aligned iteration.

A :class:`TileGrid` places square tiles of ``tile`` pixels every ``stride``
pixels, starting at ``offset``. Grid cell ``(i, j)`` covers the pixel rectangle
``[oy + i*stride, oy + i*stride + tile) x [ox + j*stride, ox + j*stride + tile)``.
With ``edge="pad"`` (default) the last row and column may run past the image
border, so every pixel from the offset on is covered, and the missing part is
filled by reflection; with ``edge="drop"`` only tiles fully inside are kept.

One value per grid cell overlays the mosaic in world coordinates with
``scale = pixel_size * stride`` and ``translate = t + pixel_size * (offset +
(tile - 1) / 2)``, because napari and NGFF put pixel centres at integer
coordinates: see :meth:`TileGrid.world_transform`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ncm_core.errors import NcmError

Edge = Literal["pad", "drop"]


def _n_tiles(length: int, tile: int, stride: int, edge: Edge) -> int:
    if length < tile:
        return 0
    if edge == "drop":
        return (length - tile) // stride + 1
    # enough tiles to reach the far edge, but none that starts outside the image
    return min(math.ceil((length - tile) / stride) + 1, math.ceil(length / stride))


@dataclass(frozen=True)
class TileGrid:
    """A regular grid of square tiles over an image of ``image_shape`` (height, width)."""

    image_shape: tuple[int, int]
    tile: int
    stride: int | None = None
    offset: tuple[int, int] = (0, 0)
    edge: Edge = "pad"

    def __post_init__(self) -> None:
        if self.stride is None:
            object.__setattr__(self, "stride", self.tile)
        object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape[:2]))
        object.__setattr__(self, "offset", tuple(int(v) for v in self.offset))
        if not isinstance(self.tile, (int, np.integer)) or self.tile < 1:
            raise NcmError(f"tile size must be a positive number of pixels, got {self.tile}")
        if not isinstance(self.stride, (int, np.integer)) or self.stride < 1:
            raise NcmError(f"tile stride must be a positive number of pixels, got {self.stride}")
        if self.edge not in ("pad", "drop"):
            raise NcmError(f"edge must be 'pad' or 'drop', got {self.edge!r}")
        h, w = self.image_shape
        oy, ox = self.offset
        if not (0 <= oy < max(h, 1) and 0 <= ox < max(w, 1)):
            raise NcmError(f"tile offset {self.offset} lies outside the image ({h}x{w} px)")
        if h - oy < self.tile or w - ox < self.tile:
            raise NcmError(
                f"the image ({h}x{w} px, offset {oy},{ox}) is smaller than one tile ({self.tile}x{self.tile} px)"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        h, w = self.image_shape
        oy, ox = self.offset
        return (
            _n_tiles(h - oy, self.tile, self.stride, self.edge),
            _n_tiles(w - ox, self.tile, self.stride, self.edge),
        )

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def cell_rect(self, i: int, j: int) -> tuple[int, int, int, int]:
        """Pixel rectangle ``(y0, y1, x0, x1)`` of cell (i, j), half-open; may pass the border with ``pad``."""
        rows, cols = self.shape
        if not (0 <= i < rows and 0 <= j < cols):
            raise IndexError(f"cell ({i}, {j}) outside a {rows}x{cols} grid")
        y0 = self.offset[0] + i * self.stride
        x0 = self.offset[1] + j * self.stride
        return y0, y0 + self.tile, x0, x0 + self.tile

    def cell_of_pixel(self, y: float, x: float) -> tuple[int, int] | None:
        """The cell whose stride-sized footprint holds pixel (y, x), or None."""
        i = math.floor((y - self.offset[0]) / self.stride)
        j = math.floor((x - self.offset[1]) / self.stride)
        rows, cols = self.shape
        return (i, j) if 0 <= i < rows and 0 <= j < cols else None

    def region(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int, int, int]:
        """Pixel rectangle spanned by the cells ``[r0, r1) x [c0, c1)`` (unclipped)."""
        y0 = self.offset[0] + r0 * self.stride
        x0 = self.offset[1] + c0 * self.stride
        return (
            y0,
            self.offset[0] + (r1 - 1) * self.stride + self.tile,
            x0,
            self.offset[1] + (c1 - 1) * self.stride + self.tile,
        )

    def blocks(self, block: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
        """Blocks of cells ``(r0, r1, c0, c1)`` of at most ``block`` cells, row-major.

        With ``block`` equal to the output chunk shape, each block writes whole
        output chunks, so blocks can be written by independent workers.
        """
        rows, cols = self.shape
        br, bc = block
        for r0 in range(0, rows, br):
            for c0 in range(0, cols, bc):
                yield r0, min(r0 + br, rows), c0, min(c0 + bc, cols)

    def block_shape_for(self, mosaic_chunks: tuple[int, int], max_pixels: int = 2048 * 2048) -> tuple[int, int]:
        """A block of cells whose pixel footprint follows the mosaic's chunks.

        The block spans a whole number of mosaic chunks where it can (so each
        chunk is read about once) and at most ``max_pixels`` pixels.
        """
        out = []
        for ch in mosaic_chunks[:2]:
            n = max(1, round(ch / self.stride))
            out.append(n)
        while out[0] * out[1] * self.stride**2 > max_pixels and max(out) > 1:
            k = 0 if out[0] >= out[1] else 1
            out[k] = max(1, out[k] // 2)
        while (2 * out[0]) * (2 * out[1]) * self.stride**2 <= max_pixels:
            out = [2 * out[0], 2 * out[1]]
            if out[0] >= self.shape[0] and out[1] >= self.shape[1]:
                break
        return out[0], out[1]

    def world_transform(
        self,
        pixel_size: float | tuple[float, float] = 1.0,
        translate: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` that overlays a one-value-per-cell array on the image.

        The image has world ``scale = pixel_size`` and ``translate``; cell (i, j)'s
        value is drawn centred on its tile: scale ``s * stride``, translate
        ``t + s * (offset + (tile - 1) / 2)``.
        """
        s = (pixel_size, pixel_size) if np.isscalar(pixel_size) else tuple(pixel_size)
        scale = (s[0] * self.stride, s[1] * self.stride)
        trans = tuple(translate[k] + s[k] * (self.offset[k] + (self.tile - 1) / 2) for k in range(2))
        return scale, trans  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_shape": list(self.image_shape),
            "tile": int(self.tile),
            "stride": int(self.stride),
            "offset": list(self.offset),
            "edge": self.edge,
            "grid_shape": list(self.shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TileGrid:
        return cls(tuple(d["image_shape"]), int(d["tile"]), int(d["stride"]), tuple(d["offset"]), d["edge"])


def pad_region(region: np.ndarray, grid: TileGrid, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """``region`` (the image clipped to :meth:`TileGrid.region` of the cells) brought to the full
    region: parts past the image border are filled by reflection, surplus rows/columns dropped."""
    y0, y1, x0, x1 = grid.region(r0, r1, c0, c1)
    need = (y1 - y0, x1 - x0)
    region = region[: need[0], : need[1]]  # with edge="drop" the image may extend past the last tile
    if region.shape[:2] != need:
        pad = [(0, need[0] - region.shape[0]), (0, need[1] - region.shape[1])] + [(0, 0)] * (region.ndim - 2)
        mode = "reflect" if min(region.shape[:2]) > 1 else "edge"
        if any(p[1] >= region.shape[k] for k, p in enumerate(pad[:2])):
            mode = "symmetric"
        region = np.pad(region, pad, mode=mode)
    return region


def extract_tiles(region: np.ndarray, grid: TileGrid, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Cut the tiles of cells ``[r0, r1) x [c0, c1)`` out of ``region``.

    ``region`` is the image clipped to :meth:`TileGrid.region` of those cells;
    parts past the image border are filled by reflection. Returns
    ``(r1-r0, c1-c0, tile, tile[, C])``, a view where possible.
    """
    region = pad_region(region, grid, r0, r1, c0, c1)
    t, s = grid.tile, grid.stride
    win = np.lib.stride_tricks.sliding_window_view(region, (t, t), axis=(0, 1))[::s, ::s]
    win = win[: r1 - r0, : c1 - c0]
    if region.ndim == 3:  # (r, c, C, t, t) -> (r, c, t, t, C)
        win = np.moveaxis(win, 2, -1)
    return win


def parse_rows(text: str) -> tuple[int | None, int | None] | None:
    """Parse a band of rows written ``START:STOP`` (Python slice style): ``"-32:"`` is the bottom 32
    rows, ``""`` is no band."""
    text = text.strip()
    if not text:
        return None
    a, sep, b = text.partition(":")
    try:
        if not sep:
            raise ValueError
        band = (int(a) if a.strip() else None, int(b) if b.strip() else None)
    except ValueError:
        raise NcmError(f"rows must be written START:STOP (e.g. -32: for the bottom 32 rows), got {text!r}") from None
    return check_rows(band)


def check_rows(rows: tuple[int | None, int | None] | None) -> tuple[int | None, int | None] | None:
    """``rows`` (a band ``(start, stop)`` of rows to leave out), or one error line when it is reversed,
    empty or the whole image: ``5:2``, ``3:3`` and ``0:`` are refused. A band with one negative end
    depends on the image height and is checked where the image is known."""
    if rows is None:
        return None
    try:
        a, b = rows
    except (TypeError, ValueError):
        raise NcmError(f"a band of rows is (start, stop), got {rows!r}") from None
    text = f"{'' if a is None else a}:{'' if b is None else b}"
    if (a is None or a == 0) and b is None:
        raise NcmError(f"rows {text} leave out every row; give a band such as -32: (the bottom 32 rows)")
    a0 = 0 if a is None else a
    if b is not None and (a0 >= 0) == (b >= 0) and b <= a0:
        raise NcmError(f"rows {text} is an empty or reversed band; START must come before STOP (e.g. 2:5)")
    if b is not None and b == 0 and a0 < 0:
        raise NcmError(f"rows {text} is an empty band; STOP 0 is the first row (use {a}: for the bottom rows)")
    return (a, b)


def band_mask(grid: TileGrid, rows: tuple[int | None, int | None]) -> np.ndarray:
    """Cells to keep when the pixel rows ``rows = (start, stop)`` must be excluded.

    Negative values count from the bottom, as in Python slicing, so
    ``(-32, None)`` excludes a 32-row SEM information bar. A cell is dropped
    when its tile overlaps the band.
    """
    h = grid.image_shape[0]
    start, stop, _ = slice(*rows).indices(h)
    keep = np.ones(grid.shape, bool)
    for i in range(grid.shape[0]):
        y0, y1, _, _ = grid.cell_rect(i, 0)
        if y0 < stop and start < min(y1, h):
            keep[i] = False
    return keep


def pixel_mask_to_cells(grid: TileGrid, mask: Any, min_fraction: float = 0.5) -> np.ndarray:
    """Cells to keep from a pixel mask (True = keep) of the image's size or a downsampled version.

    A cell is kept when at least ``min_fraction`` of its in-image pixels are
    True. A mask smaller than the image is taken as a uniform downsampling.
    """
    import dask.array as da

    m = da.asarray(mask)
    if m.ndim != 2:
        raise NcmError(f"a tile mask must be 2-D, got shape {tuple(m.shape)}")
    h, w = grid.image_shape
    fy, fx = h / m.shape[0], w / m.shape[1]
    if abs(fy - fx) / max(fy, fx) > 0.05:
        raise NcmError(f"mask shape {tuple(m.shape)} does not match the image ({h}x{w} px) or a downsampling of it")
    small = np.asarray(m.astype(np.float32).compute())
    keep = np.zeros(grid.shape, bool)
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            y0, y1, x0, x1 = grid.cell_rect(i, j)
            a = small[
                int(y0 / fy) : max(int(math.ceil(min(y1, h) / fy)), int(y0 / fy) + 1),
                int(x0 / fx) : max(int(math.ceil(min(x1, w) / fx)), int(x0 / fx) + 1),
            ]
            keep[i, j] = a.size > 0 and a.mean() >= min_fraction
    return keep


def foreground_mask(
    image: Any, *, level_size: int = 2048, method: str = "texture", threshold: float | None = None, invert: bool = False
) -> np.ndarray:
    """Boolean sample-vs-empty mask at low resolution.

    ``image`` (a :class:`~ncm_core.io.mosaic.Mosaic` or array) is read once, chunk
    by chunk, and averaged down so its longer side is at most ``level_size``.
    ``method="texture"`` (default) drops areas that are nearly flat: local
    standard deviation below ``threshold`` (default 5 % of its 90th
    percentile, i.e. of the sample's own texture), so empty slide or stage
    goes whether it is brighter or darker than the sample, a mosaic without
    empty areas loses nothing, and flat particle interiors are kept by
    filling holes. ``method="intensity"`` is Otsu's threshold on brightness
    (foreground brighter unless ``invert``).
    """
    import dask.array as da
    from scipy import ndimage
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_holes

    from ncm_core.io.mosaic import open_mosaic

    if method not in ("texture", "intensity"):
        raise NcmError(f"foreground method must be 'texture' or 'intensity', got {method!r}")
    mosaic = open_mosaic(image)
    data = mosaic.data
    if data.ndim == 3:
        data = data[..., :3].astype(np.float32).mean(axis=2)
    f = max(1, math.ceil(max(data.shape) / level_size))
    small = da.coarsen(np.mean, data.astype(np.float32), {0: f, 1: f}, trim_excess=True) if f > 1 else data
    small = np.asarray(small.compute(), np.float32)
    if method == "texture":
        mean = gaussian(small, 2.0)
        score = np.sqrt(np.clip(gaussian(small**2, 2.0) - mean**2, 0, None))
    else:
        score = gaussian(small, 1.0)
    if method == "texture":
        fg = score > (0.05 * np.percentile(score, 90) if threshold is None else threshold)
    elif np.ptp(score) == 0:
        fg = np.ones(score.shape, bool)
    else:
        thr = threshold_otsu(score) if threshold is None else threshold
        fg = score < thr if invert else score > thr
    if method == "texture":
        fg = ndimage.binary_closing(fg, iterations=2)
        fg = remove_small_holes(fg, max_size=max(64, fg.size // 200))
    # trim_excess dropped the last partial block: extend to cover the whole image
    ph = math.ceil(mosaic.shape[0] / f) - fg.shape[0]
    pw = math.ceil(mosaic.shape[1] / f) - fg.shape[1]
    if ph > 0 or pw > 0:
        fg = np.pad(fg, ((0, max(ph, 0)), (0, max(pw, 0))), mode="edge")
    return fg
