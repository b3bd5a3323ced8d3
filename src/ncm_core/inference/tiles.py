"""The tile-classification task: one class (and probabilities, OOD score) per cell of a tile grid.

:class:`TileClassTask` tells the streaming engine (:mod:`ncm_core.inference.engine`) how a block of
grid cells becomes outputs: its pixels are cut into tiles (masked tiles left out) and converted in
the reader thread; the model (PyTorch or ONNX Runtime, or one trunk pass per block in dense mode)
gives probabilities that fill whole output chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ncm_core.data.tiling import TileGrid, band_mask, extract_tiles, foreground_mask, pad_region, pixel_mask_to_cells
from ncm_core.errors import NcmError
from ncm_core.inference.classify import classify_tensor
from ncm_core.inference.engine import Block, BlockTask, Context
from ncm_core.inference.reading import FAILED_BLOCK, cell_problems, counts
from ncm_core.io.mosaic import Mosaic
from ncm_core.models.bundle import ModelBundle
from ncm_core.models.preprocess import tiles_to_array, tiles_to_tensor

#: the smallest tile (px) and the largest rescaling of a tile to the model's input that pixel sizes may imply
MIN_TILE, MAX_RESCALE = 8, 8


def tile_size_for(bundle: ModelBundle, mosaic: Mosaic) -> int:
    """The bundle's tile size in mosaic pixels, rescaled when both pixel sizes are known."""
    t = bundle.config.tile_size
    if bundle.config.pixel_size and mosaic.pixel_size:
        ratio = bundle.config.pixel_size / mosaic.pixel_size
        if abs(ratio - 1) > 0.01:
            t = max(1, round(t * ratio))
            n = int(bundle.config.input.input_size[0])
            if t < MIN_TILE or max(t, n) / min(t, n) > MAX_RESCALE:
                raise NcmError(
                    f"the mosaic's pixel size ({mosaic.pixel_size:g} um) and the model's "
                    f"({bundle.config.pixel_size:g} um) make tiles of {t} px for a {n} px model input "
                    f"(at least {MIN_TILE} px and at most {MAX_RESCALE}x rescaling allowed); give the right pixel "
                    f"size (open_mosaic(..., pixel_size=)) or a tile size (--tile {bundle.config.tile_size})",
                    mosaic.source or None,
                )
    return t


def plan_grid(
    bundle: ModelBundle,
    mosaic: Mosaic,
    *,
    tile: int | None = None,
    stride: int | None = None,
    offset: tuple[int, int] = (0, 0),
    edge: str = "pad",
) -> TileGrid:
    """The tile grid a prediction of ``mosaic`` with ``bundle`` will use."""
    t = tile_size_for(bundle, mosaic) if tile is None else tile
    return TileGrid(mosaic.shape, t, stride if stride is not None else t, offset, edge)  # type: ignore[arg-type]


#: The deepest information bar looked for on a mosaic's edge, and the columns read to find it.
BAR_ROWS, BAR_COLUMNS = 256, 1024


def mosaic_band(spec: Any, mosaic: Mosaic) -> tuple[int | None, int | None] | None:
    """The band of rows to skip in ``mosaic``: as given, or for ``"auto"``/``"detect"`` its information bar,
    looked for once on its bottom and top edges; ``"auto"`` without one is an error naming the mosaic.

    Only the edges are read, and at most :data:`BAR_ROWS` rows deep and :data:`BAR_COLUMNS` columns wide
    (from the left, where the bar's text is), so looking costs the same on a frame and a whole mosaic."""
    from ncm_core.data.infobar import CONTEXT, detect_info_bar, resolve_band
    from ncm_core.io.pixels import read_pixels

    if not isinstance(spec, str) or spec == "none":
        return resolve_band(spec, np.zeros((0, 0)))
    h, w = mosaic.shape[:2]
    limit = min(h // 4, BAR_ROWS)
    span = min(h, limit + CONTEXT + 1)
    cols = slice(0, min(w, BAR_COLUMNS))
    band = None
    try:  # one edge at a time: bottom, then top
        start = (h - span) // 8 * 8  # on JPEG's 8 px grid, which the detection of JPEG bars follows
        band = detect_info_bar(read_pixels(mosaic, (slice(start, h), cols)), limit, edges="bottom")
        if band is None:
            band = detect_info_bar(read_pixels(mosaic, (slice(0, span), cols)), limit, edges="top")
    except NcmError:
        if spec == "auto":
            raise
        # "detect" on an edge that cannot be read: no band; the run records the damaged chunks itself
    if band is None:
        return resolve_band(spec, np.zeros((0, 0)), mosaic.source)  # "auto": the one line naming the mosaic
    return band


def keep_cells(
    grid: TileGrid, mosaic: Mosaic, exclude_rows: Any, mask: Any, foreground: bool, min_fraction: float
) -> np.ndarray:
    """Cells to predict (True) after the row band, the pixel mask and foreground detection."""
    keep = np.ones(grid.shape, bool)
    if exclude_rows is not None:
        keep &= band_mask(grid, tuple(exclude_rows))
    if mask is not None:
        keep &= pixel_mask_to_cells(grid, mask, min_fraction)
    if foreground:
        keep &= pixel_mask_to_cells(grid, foreground_mask(mosaic), min_fraction)
    return keep


@dataclass
class TileClassTask(BlockTask):
    """Tile classification as an engine task; picklable so dask workers can run blocks too."""

    grid: TileGrid
    keep: np.ndarray
    block: tuple[int, int]
    batch_size: int
    channels_last: bool = False
    dense: Any = None  # a dense.DenseGeometry in dense mode
    backend: str = "torch"  # or "onnxruntime" (runtime.choose_backend)
    ood: bool = False  # also write out-of-distribution ratios
    names: tuple[str, ...] = ()
    world: tuple[Any, Any, str | None] = ((1.0, 1.0), (0.0, 0.0), None)  # scale, translate, unit of the arrays

    def status_shape(self) -> tuple[int, int]:
        rows, cols = self.grid.shape
        return -(-rows // self.block[0]), -(-cols // self.block[1])

    def blocks(self) -> list[Block]:
        return [
            Block((b[0] // self.block[0], b[2] // self.block[1]), b, self.grid.region(*b))
            for b in self.grid.blocks(self.block)
        ]

    def create(self, root: Any) -> None:
        from ncm_core.inference.prediction import create_arrays

        create_arrays(
            root, self.grid, self.block, list(self.names), *self.world, ood=self.ood, rechecked=self.rechecked
        )

    @property
    def rechecked(self) -> bool:
        return self.dense is not None and self.dense.recheck > 0

    def open_arrays(self) -> tuple[Any, Any, Any, Any, Any]:
        import zarr

        names = (
            "labels/0",
            "probabilities/0",
            "ood/0" if self.ood else None,
            "rechecked" if self.rechecked else None,
            "unpredicted",
        )
        return tuple(
            zarr.open_array(str(self.partial / n), mode="r+") if n else None  # type: ignore[return-value]
            for n in names
        )

    def skip(self, block: Block) -> bool:
        r0, r1, c0, c1 = block.cells
        return not self.keep[r0:r1, c0:c1].any()

    def prepare(self, ctx: Context, block: Block, region: np.ndarray, problems: np.ndarray | None) -> Any:
        """``(input, problem code per cell or None)``. The input: the padded region (dense mode), or the
        block's kept tiles without problem pixels: a float32 array for ONNX Runtime when no resizing is
        needed (no PyTorch), else a tensor (pinned for a GPU)."""
        r0, r1, c0, c1 = block.cells
        codes = cell_problems(problems, lambda p: extract_tiles(p, self.grid, r0, r1, c0, c1))
        if codes is not None:
            codes = np.where(self.keep[r0:r1, c0:c1], codes, 0).astype(np.uint8)  # masked cells: no reason needed
        if self.dense:
            return pad_region(region, self.grid, r0, r1, c0, c1), codes
        tiles = extract_tiles(region, self.grid, r0, r1, c0, c1)[self._kept(block, codes)]
        spec = ctx.bundle.config.input
        if self.backend == "onnxruntime" and tuple(tiles.shape[1:3]) == tuple(spec.input_size):
            return np.ascontiguousarray(tiles_to_array(tiles, spec).transpose(0, 3, 1, 2)), codes
        x = tiles_to_tensor(tiles, spec, "cpu", channels_last=self.channels_last and self.backend == "torch")
        if str(ctx.device).startswith("cuda"):
            x = x.pin_memory()
        return x, codes

    def _kept(self, block: Block, codes: np.ndarray | None) -> np.ndarray:
        """Cells of the block to predict: kept by the masks, with no problem pixel."""
        r0, r1, c0, c1 = block.cells
        kb = self.keep[r0:r1, c0:c1]
        return kb if codes is None else kb & (codes == 0)

    def fail(self, block: Block, arrays: Any) -> None:
        r0, r1, c0, c1 = block.cells
        arrays[4][r0:r1, c0:c1] = np.where(self.keep[r0:r1, c0:c1], FAILED_BLOCK, 0).astype(np.uint8)

    def process(self, ctx: Context, block: Block, prepared: Any, arrays: Any) -> dict[int, int]:
        larr, parr, oarr, rarr, uarr = arrays
        bundle, device = ctx.bundle, ctx.device
        r0, r1, c0, c1 = block.cells
        prepared, codes = prepared
        kb = self._kept(block, codes)
        probs = np.full((r1 - r0, c1 - c0, bundle.config.num_outputs), np.nan, np.float32)
        ratio = np.full((r1 - r0, c1 - c0), np.nan, np.float32)
        if self.dense:
            from ncm_core.inference.dense import dense_block_probs

            p, o, n_rechecked = dense_block_probs(
                bundle,
                prepared,
                self.grid,
                block.cells,
                device,
                self.dense,
                channels_last=self.channels_last,
                ood=self.ood,
                keep=kb,
                batch_size=self.batch_size,
                backend=self.backend,
                cancel=ctx.cancel,
            )
            probs[kb] = p[kb]
            if self.ood:
                ratio[kb] = o[kb]
            if rarr is not None:
                rarr[block.index] = n_rechecked
        elif self.ood:
            probs[kb], ratio[kb] = classify_tensor(
                bundle,
                prepared,
                device,
                self.batch_size,
                self.channels_last,
                ood=True,
                backend=self.backend,
                cancel=ctx.cancel,
            )
        else:
            probs[kb] = classify_tensor(
                bundle, prepared, device, self.batch_size, self.channels_last, backend=self.backend, cancel=ctx.cancel
            )
        larr[r0:r1, c0:c1] = np.where(kb, np.nan_to_num(probs, nan=-1).argmax(-1) + 1, 0).astype(larr.dtype)
        parr[:, r0:r1, c0:c1] = np.moveaxis(probs, -1, 0)
        if oarr is not None:
            oarr[r0:r1, c0:c1] = ratio
        uarr[r0:r1, c0:c1] = np.zeros(kb.shape, np.uint8) if codes is None else codes
        return counts(codes)
