"""Pixel-level tasks on the streaming engine: overlapping windows with a halo, blended into the output.

A :class:`WindowTask` maps windows of ``window`` x ``window`` mosaic pixels to ``(K, window/factor,
window/factor)`` outputs (a heatmap, a segmentation's class scores, a filtered image). The engine
side here owns the geometry and the blending, so a task only says how a batch of windows becomes
outputs (:meth:`WindowTask.run_windows`):

- ``halo`` pixels at each side of a window's output are dropped (they saw the window's edge, not
  the image); the rest, the *core*, is kept;
- cores overlap by ``overlap`` pixels and are blended with a weight (``"cosine"``: a raised-cosine
  ramp over the overlap, 1 in the middle; ``"gaussian"``: MONAI's sigma = core / 8; ``"constant"``),
  so seams vanish and a pixel covered by one core keeps that core's value;
- windows start at ``k * stride - halo`` (stride = core - overlap), so the cores tile the image from
  its first pixel; pixels past the border are filled by reflection;
- a block is a rectangle of output chunks (``chunk`` output pixels a side): the windows whose cores
  meet it are read and run for that block only (windows on a block border run for both blocks);
- a window with a problem pixel (NaN/inf, an unreadable or missing chunk: :mod:`ncm_core.inference.reading`)
  is left out and counted; output pixels that no good window covers stay NaN ("not computed").

With a halo at least a local model's reach, the stitched output equals the whole image's result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.inference.engine import Block, BlockTask, Context
from ncm_core.inference.reading import REASONS
from ncm_core.progress import check_cancel

Blend = Literal["cosine", "gaussian", "constant"]


def blend_weight(n: int, ramp: int) -> np.ndarray:
    """1-D blending weight: a raised-cosine ramp of ``ramp`` samples at both ends, 1 in between (never 0)."""
    w = np.ones(n, np.float32)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        r = 0.5 * (1 - np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp))
        w[:ramp], w[n - ramp :] = r, r[::-1]
    return w


def blend_weights(n: int, overlap: int, mode: Blend = "cosine") -> np.ndarray:
    """2-D ``(n, n)`` blending weight of a core of ``n`` output pixels whose neighbours share ``overlap``."""
    if mode == "constant":
        w = np.ones(n, np.float32)
    elif mode == "gaussian":
        c = (n - 1) / 2
        w = np.exp(-0.5 * ((np.arange(n) - c) / max(n / 8, 1e-3)) ** 2).astype(np.float32)
        w = np.maximum(w, 1e-3)  # never 0: a pixel covered by one core keeps its value
    elif mode == "cosine":
        w = blend_weight(n, overlap)
    else:
        raise NcmError(f"blend must be 'cosine', 'gaussian' or 'constant', got {mode!r}")
    return np.outer(w, w)


def _count(length: int, core: int, stride: int) -> int:
    """Windows along an axis: enough cores to reach the far edge, none starting outside the image."""
    if length <= core:
        return 1
    return min(math.ceil((length - core) / stride) + 1, math.ceil(length / stride))


def pad_to(region: np.ndarray, want: tuple[int, int, int, int], image_shape: tuple[int, int]) -> np.ndarray:
    """``region`` (the image clipped to ``want``) brought to the full rectangle ``want`` by reflection."""
    H, W = image_shape
    y0, y1, x0, x1 = want
    pad = [(max(0, -y0), max(0, y1 - H)), (max(0, -x0), max(0, x1 - W))] + [(0, 0)] * (region.ndim - 2)
    if not any(p for pp in pad[:2] for p in pp):
        return region
    # reflection, continued back and forth past a short region (numpy does), so the pixels next to the image
    # border are padded as the whole image would be, however few rows of it a block read
    mode = "reflect" if min(region.shape[:2]) > 1 else "edge"
    return np.pad(region, pad, mode=mode)


@dataclass(frozen=True)
class WindowGeometry:
    """Where the windows of a pixel-level task lie, and which output block each feeds (sizes: mosaic px)."""

    image_shape: tuple[int, int]
    window: int
    halo: int = 0
    overlap: int = 0
    factor: int = 1  # mosaic pixels per output pixel
    chunk: int = 256  # output pixels per block side (and per output chunk)
    blend: Blend = "cosine"

    def __post_init__(self) -> None:
        f = self.factor
        if self.halo < 0 or self.overlap < 0 or self.core - self.overlap < 1:
            raise NcmError(
                f"windows of {self.window} px with halo {self.halo} and overlap {self.overlap} px "
                f"leave no stride: need window - 2 * halo - overlap >= 1"
            )
        if f < 1 or self.window % f or self.halo % f or self.stride % f:
            raise NcmError(
                f"factor {f} must divide the window ({self.window} px), the halo ({self.halo} px) and "
                f"the stride ({self.stride} px = window - 2 x halo - overlap)"
            )
        blend_weights(1, 0, self.blend)  # checks the name

    @property
    def core(self) -> int:
        return self.window - 2 * self.halo

    @property
    def stride(self) -> int:
        return self.core - self.overlap

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Windows along y and x."""
        H, W = self.image_shape
        return _count(H, self.core, self.stride), _count(W, self.core, self.stride)

    @property
    def out_shape(self) -> tuple[int, int]:
        H, W = self.image_shape
        return -(-H // self.factor), -(-W // self.factor)

    @property
    def status_shape(self) -> tuple[int, int]:
        oh, ow = self.out_shape
        return -(-oh // self.chunk), -(-ow // self.chunk)

    def windows_for(self, y0: int, y1: int, axis: int) -> tuple[int, int]:
        """Windows ``[k0, k1)`` along ``axis`` whose cores meet output pixels ``[y0, y1)``."""
        f, s, n = self.factor, self.stride, self.grid_shape[axis]
        k0 = max(0, -(-(y0 * f - self.core + 1) // s))
        return k0, min(n, (y1 * f - 1) // s + 1)

    def blocks(self) -> list[Block]:
        oh, ow = self.out_shape
        nb = self.status_shape
        out = []
        for bi in range(nb[0]):
            for bj in range(nb[1]):
                cells = (
                    bi * self.chunk,
                    min(oh, (bi + 1) * self.chunk),
                    bj * self.chunk,
                    min(ow, (bj + 1) * self.chunk),
                )
                r0, r1 = self.windows_for(cells[0], cells[1], 0)
                c0, c1 = self.windows_for(cells[2], cells[3], 1)
                pixels = (
                    r0 * self.stride - self.halo,
                    (r1 - 1) * self.stride - self.halo + self.window,
                    c0 * self.stride - self.halo,
                    (c1 - 1) * self.stride - self.halo + self.window,
                )
                out.append(Block((bi, bj), cells, pixels))
        return out


@dataclass
class WindowTask(BlockTask):
    """Base of pixel-level tasks: :meth:`run_windows` maps a batch of windows to outputs; the rest
    (windows, halo, blending, output array ``array`` of ``(channels, y, x)`` float32) is done here."""

    geometry: WindowGeometry
    channels: int
    batch_size: int = 16
    array: str = "out/0"  # path of the output array in the group

    def run_windows(self, ctx: Context, x: Any) -> np.ndarray:
        """Outputs ``(n, channels, window / factor, window / factor)`` for a batch of prepared windows."""
        raise NotImplementedError

    def to_input(self, ctx: Context, windows: np.ndarray) -> Any:
        """Windows ``(n, window, window[, C])`` as the model's input (reader thread); default: as they are."""
        return windows

    def status_shape(self) -> tuple[int, int]:
        return self.geometry.status_shape

    def blocks(self) -> list[Block]:
        return self.geometry.blocks()

    def create(self, root: Any) -> None:
        parent, _, name = self.array.rpartition("/")
        group = root.require_group(parent) if parent else root
        c = self.geometry.chunk
        group.create_array(
            name,
            shape=(self.channels, *self.geometry.out_shape),
            dtype=np.float32,
            chunks=(self.channels, c, c),
            fill_value=np.nan,
            dimension_names=["c", "y", "x"],
        )

    def open_arrays(self) -> Any:
        import zarr

        return zarr.open_array(str(self.partial / self.array), mode="r+")

    def prepare(self, ctx: Context, block: Block, region: np.ndarray, problems: np.ndarray | None) -> Any:
        """``(windows per row, the good windows' input, their numbers, problem code per window)``."""
        g = self.geometry
        region = pad_to(region, block.pixels, g.image_shape)
        win = np.lib.stride_tricks.sliding_window_view(region, (g.window, g.window), axis=(0, 1))[
            :: g.stride, :: g.stride
        ]
        nr, nc = win.shape[:2]
        if region.ndim == 3:  # (r, c, C, t, t) -> (r, c, t, t, C)
            win = np.moveaxis(win, 2, -1)
        win = win.reshape(nr * nc, *win.shape[2:])
        codes = None if problems is None else window_codes(pad_to(problems, block.pixels, g.image_shape), g, nr, nc)
        good = np.arange(nr * nc) if codes is None else np.flatnonzero(codes == 0)
        return nc, self.to_input(ctx, np.ascontiguousarray(win[good])), good, codes

    def process(self, ctx: Context, block: Block, prepared: Any, arrays: Any) -> dict[int, int]:
        g = self.geometry
        nc, x, good, codes = prepared
        y0, y1, x0, x1 = block.cells
        r0 = g.windows_for(y0, y1, 0)[0]
        c0 = g.windows_for(x0, x1, 1)[0]
        f, h, cf = g.factor, g.halo // g.factor, g.core // g.factor
        wt = blend_weights(cf, g.overlap // f, g.blend)
        acc = np.zeros((self.channels, y1 - y0, x1 - x0), np.float64)
        wsum = np.zeros((y1 - y0, x1 - x0), np.float64)
        for k0 in range(0, len(x), self.batch_size):
            check_cancel(ctx.cancel)
            maps = self.run_windows(ctx, x[k0 : k0 + self.batch_size])
            for n in range(len(maps)):
                i, j = divmod(int(good[k0 + n]), nc)
                ty, tx = (r0 + i) * g.stride // f - y0, (c0 + j) * g.stride // f - x0  # core origin in the block
                sy0, sy1 = max(0, -ty), min(cf, y1 - y0 - ty)
                sx0, sx1 = max(0, -tx), min(cf, x1 - x0 - tx)
                if sy1 <= sy0 or sx1 <= sx0:
                    continue
                w = wt[sy0:sy1, sx0:sx1]
                acc[:, ty + sy0 : ty + sy1, tx + sx0 : tx + sx1] += maps[n][:, h + sy0 : h + sy1, h + sx0 : h + sx1] * w
                wsum[ty + sy0 : ty + sy1, tx + sx0 : tx + sx1] += w
        with np.errstate(invalid="ignore", divide="ignore"):
            arrays[:, y0:y1, x0:x1] = np.where(wsum > 0, acc / wsum, np.nan).astype(np.float32)
        if codes is None:
            return {}
        values, n = np.unique(codes[codes > 0], return_counts=True)
        return {int(v): int(k) for v, k in zip(values, n)}


def window_codes(problems: np.ndarray, g: WindowGeometry, nr: int, nc: int) -> np.ndarray:
    """The highest problem code in each of the ``nr`` x ``nc`` windows over ``problems`` (padded like the
    pixels), from one integral image per code present."""
    codes = np.zeros(nr * nc, np.uint8)
    ys = np.arange(nr) * g.stride
    xs = np.arange(nc) * g.stride
    for code in sorted(int(c) for c in np.unique(problems) if c and c in REASONS):
        s = np.zeros((problems.shape[0] + 1, problems.shape[1] + 1), np.int64)
        s[1:, 1:] = np.cumsum(np.cumsum(problems == code, axis=0), axis=1)
        y, x = np.meshgrid(ys, xs, indexing="ij")
        hits = (s[y + g.window, x + g.window] - s[y, x + g.window] - s[y + g.window, x] + s[y, x]).reshape(-1) > 0
        codes[hits] = code  # ascending: the highest code wins
    return codes
