"""Tiled prediction of whole mosaics, streamed to an OME-Zarr group.

:func:`predict_mosaic` walks a :class:`~ncm_core.tiling.TileGrid` block by
block. A block is a rectangle of grid cells whose pixel footprint follows the
mosaic's chunks and whose results fill whole output chunks; the next block is
read in a background thread while the model runs on the current one, and each
block's results are written as soon as they exist. Peak memory therefore
depends on the block (tile, stride, chunk size) and batch size, never on the
mosaic's size.

Output layout (``out``, a zarr v3 group)::

    out/                   attrs["ncm"]: grid geometry, classes, bundle, counts, complete flag
    out/labels/0           uint8/uint16 (rows, cols): 0 = not predicted (masked), k + 1 = class k
    out/probabilities/0    float32 (classes, rows, cols): NaN where not predicted

Both sub-groups are NGFF 0.5 images (``labels`` an ``image-label`` with class
colours and names) whose coordinate transformations overlay them on the mosaic.
The output is written under ``<out>.partial`` and renamed when complete, so an
interrupted run never leaves an output that looks finished.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np

from .bundle import ModelBundle, load_bundle
from .colors import class_colors
from .errors import NcmError
from .mosaic import Mosaic, ngff_multiscales, open_mosaic, write_label_group
from .preprocess import tiles_to_tensor
from .progress import CancelFlag, ProgressFn, check_cancel
from .tiling import TileGrid, band_mask, extract_tiles, foreground_mask, pixel_mask_to_cells

PREDICTION_KIND = "ncm-prediction"


@dataclass
class Prediction:
    """A finished prediction on disk, opened lazily."""

    path: Path
    grid: TileGrid
    class_names: list[str]
    pixel_size: float | None
    translate: tuple[float, float]
    attrs: dict[str, Any]

    @property
    def labels(self):
        """Dask array (rows, cols): 0 where not predicted, class index + 1 elsewhere."""
        import dask.array as da

        return da.from_zarr(str(self.path), component="labels/0")

    @property
    def probabilities(self):
        """Dask array (classes, rows, cols) of class probabilities (NaN where not predicted)."""
        import dask.array as da

        return da.from_zarr(str(self.path), component="probabilities/0")

    @property
    def classes(self) -> np.ndarray:
        """Class index per cell (-1 where not predicted), in memory (the grid is small)."""
        return np.asarray(self.labels).astype(np.int32) - 1

    def world_transform(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` that overlays the grid arrays on the mosaic."""
        return self.grid.world_transform(self.pixel_size or 1.0, self.translate)

    @property
    def colors(self) -> list[tuple[float, float, float, float]]:
        return class_colors(len(self.class_names))


def open_prediction(path: str | Path) -> Prediction:
    """Open a prediction written by :func:`predict_mosaic`."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise NcmError("prediction not found", path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs).get("ncm")
    except Exception as exc:
        raise NcmError(f"not a readable zarr group ({type(exc).__name__})", path) from None
    if not attrs or attrs.get("kind") != PREDICTION_KIND:
        raise NcmError("not a napari-ncm prediction (no 'ncm' metadata)", path)
    if not attrs.get("complete"):
        raise NcmError("prediction is incomplete (the run that wrote it did not finish)", path)
    return Prediction(path, TileGrid.from_dict(attrs["grid"]), list(attrs["class_names"]), attrs.get("pixel_size"),
                      tuple(attrs.get("translate", (0.0, 0.0))), attrs)


def is_prediction(path: str | Path) -> bool:
    """True if ``path`` is a zarr group written by :func:`predict_mosaic`."""
    p = Path(path)
    for meta in (p / "zarr.json", p / ".zattrs"):
        if meta.is_file():
            try:
                return PREDICTION_KIND in meta.read_text()
            except OSError:
                return False
    return False


def classify_tiles(bundle: ModelBundle, tiles: np.ndarray, device: Any = "cpu", batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(N, classes)`` for tiles ``(N, h, w[, C])``."""
    import torch

    out = []
    model = bundle.model
    dev = torch.device(device)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        for k in range(0, len(tiles), batch_size):
            x = tiles_to_tensor(tiles[k:k + batch_size], bundle.config.input, dev)
            out.append(torch.softmax(model(x).float(), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)


def tile_size_for(bundle: ModelBundle, mosaic: Mosaic) -> int:
    """The bundle's tile size in mosaic pixels, rescaled when both pixel sizes are known."""
    t = bundle.config.tile_size
    if bundle.config.pixel_size and mosaic.pixel_size:
        ratio = bundle.config.pixel_size / mosaic.pixel_size
        if abs(ratio - 1) > 0.01:
            t = max(1, round(t * ratio))
    return t


def plan_grid(
    bundle: ModelBundle, mosaic: Mosaic, *, tile: int | None = None, stride: int | None = None,
    offset: tuple[int, int] = (0, 0), edge: str = "pad",
) -> TileGrid:
    """The tile grid a prediction of ``mosaic`` with ``bundle`` will use."""
    t = tile_size_for(bundle, mosaic) if tile is None else tile
    return TileGrid(mosaic.shape, t, stride if stride is not None else t, offset, edge)  # type: ignore[arg-type]


def _keep_cells(grid: TileGrid, mosaic: Mosaic, exclude_rows: Any, mask: Any, foreground: bool,
                min_fraction: float) -> np.ndarray:
    keep = np.ones(grid.shape, bool)
    if exclude_rows is not None:
        keep &= band_mask(grid, tuple(exclude_rows))
    if mask is not None:
        keep &= pixel_mask_to_cells(grid, mask, min_fraction)
    if foreground:
        keep &= pixel_mask_to_cells(grid, foreground_mask(mosaic), min_fraction)
    return keep


def predict_mosaic_steps(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, *, tile: int | None = None,
    stride: int | None = None, offset: tuple[int, int] = (0, 0), edge: str = "pad", batch_size: int = 64,
    exclude_rows: tuple[int | None, int | None] | None = None, mask: Any = None, foreground: bool = False,
    min_fraction: float = 0.5, max_block_pixels: int = 2048 * 2048, device: str = "auto", overwrite: bool = False,
    cancel: CancelFlag = None,
) -> Generator[tuple[int, int], None, Prediction]:
    """Generator form of :func:`predict_mosaic`: yields ``(blocks done, blocks total)``, returns the
    :class:`Prediction`. The napari widget runs it in a thread worker."""
    import torch
    import zarr

    from .train import resolve_device

    t_start = time.monotonic()
    bundle = load_bundle(bundle)
    if bundle.config.task != "classify":
        raise NcmError("predict_mosaic needs a classification bundle; this one is for regression", bundle.path)
    mosaic = open_mosaic(mosaic)
    if batch_size < 1:
        raise NcmError(f"batch size must be positive, got {batch_size}")
    grid = plan_grid(bundle, mosaic, tile=tile, stride=stride, offset=offset, edge=edge)
    keep = _keep_cells(grid, mosaic, exclude_rows, mask, foreground, min_fraction)
    out = Path(out)
    if out.exists() and not overwrite:
        raise NcmError("output exists; pass overwrite=True (CLI: --overwrite) to replace it", out)
    dev = resolve_device(device)
    bundle.model.to(dev).eval()
    names = bundle.class_names
    n_cls = len(names)
    block = grid.block_shape_for(tuple(mosaic.data.chunksize[:2]), max_block_pixels)
    rows, cols = grid.shape
    colors = class_colors(n_cls)
    scale, trans = grid.world_transform(mosaic.pixel_size or 1.0, mosaic.translate)
    unit = mosaic.unit if mosaic.pixel_size else None

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    ok = False
    try:
        root = zarr.open_group(str(partial), mode="w", zarr_format=3)
        lab_dtype = np.uint8 if n_cls < 255 else np.uint16
        import dask.array as da

        write_label_group(
            root, "labels", da.zeros((rows, cols), dtype=lab_dtype, chunks=block), scale=scale, translate=trans,
            unit=unit, chunks=block, colors={k + 1: colors[k] for k in range(n_cls)},
            properties={0: {"class": "not predicted"}, **{k + 1: {"class": names[k]} for k in range(n_cls)}},
            source="../",
        )
        pg = root.create_group("probabilities")
        parr = pg.create_array("0", shape=(n_cls, rows, cols), dtype=np.float32, chunks=(n_cls, *block),
                               fill_value=np.nan, dimension_names=["c", "y", "x"])
        pg.attrs["ome"] = {"version": "0.5", "multiscales": [ngff_multiscales(1, scale, trans, leading=("c",), unit=unit,
                                                                               name="probabilities")],
                           "omero": {"channels": [{"label": n, "color": "%02x%02x%02x" % tuple(int(c * 255) for c in colors[k][:3]),
                                                   "window": {"start": 0, "end": 1, "min": 0, "max": 1}}
                                                  for k, n in enumerate(names)]}}
        larr = root["labels/0"]
        attrs: dict[str, Any] = {
            "kind": PREDICTION_KIND, "format_version": 1, "complete": False, "class_names": names,
            "grid": grid.to_dict(), "pixel_size": mosaic.pixel_size, "unit": mosaic.unit,
            "translate": list(mosaic.translate), "source": mosaic.source,
            "bundle": {"path": str(bundle.path) if bundle.path else None, "architecture": bundle.config.architecture,
                       "tile_size": bundle.config.tile_size, "pixel_size": bundle.config.pixel_size},
            "world_transform": {"scale": list(scale), "translate": list(trans)},
            "label_values": "0 = not predicted (masked), k + 1 = class_names[k]",
            "exclude_rows": None if exclude_rows is None else list(exclude_rows), "foreground": foreground,
        }
        root.attrs["ncm"] = attrs
        blocks = list(grid.blocks(block))
        H, W = mosaic.shape

        def read(b: tuple[int, int, int, int]) -> np.ndarray | None:
            r0, r1, c0, c1 = b
            if not keep[r0:r1, c0:c1].any():
                return None
            y0, y1, x0, x1 = grid.region(r0, r1, c0, c1)
            try:
                return np.asarray(mosaic.data[y0:min(y1, H), x0:min(x1, W)].compute(scheduler="synchronous"))
            except Exception as exc:  # a damaged chunk, a vanished file, a codec error
                raise NcmError(f"cannot read pixels y {y0}:{min(y1, H)}, x {x0}:{min(x1, W)} "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                               mosaic.source) from None

        n_pred = 0
        yield 0, len(blocks)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ncm-read") as pool:
            futures = [pool.submit(read, b) for b in blocks[:2]]
            for k, b in enumerate(blocks):
                check_cancel(cancel)
                region = futures[k].result()
                if k + 2 < len(blocks):
                    futures.append(pool.submit(read, blocks[k + 2]))
                futures[k] = None  # type: ignore[call-overload]  # free the block once used
                r0, r1, c0, c1 = b
                kb = keep[r0:r1, c0:c1]
                if region is not None:
                    tiles = extract_tiles(region, grid, r0, r1, c0, c1)[kb]
                    probs = np.full((r1 - r0, c1 - c0, n_cls), np.nan, np.float32)
                    probs[kb] = classify_tiles(bundle, tiles, dev, batch_size)
                    lab = np.where(kb, np.nan_to_num(probs, nan=-1).argmax(-1) + 1, 0).astype(lab_dtype)
                    larr[r0:r1, c0:c1] = lab
                    parr[:, r0:r1, c0:c1] = np.moveaxis(probs, -1, 0)
                    n_pred += int(kb.sum())
                yield k + 1, len(blocks)
        attrs.update(complete=True, n_tiles=int(grid.size), n_predicted=n_pred, n_masked=int(grid.size - n_pred),
                     seconds=round(time.monotonic() - t_start, 3), device=str(dev), torch=torch.__version__)
        root.attrs["ncm"] = attrs
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
        ok = True
    finally:
        if not ok and partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return open_prediction(out)


def predict_mosaic(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, *, progress: ProgressFn | None = None,
    cancel: CancelFlag = None, **kwargs: Any,
) -> Prediction:
    """Classify every tile of ``mosaic`` with ``bundle`` and write the results to ``out``.

    Parameters
    ----------
    bundle
        A bundle directory or a loaded :class:`~ncm_core.bundle.ModelBundle`.
    mosaic
        Anything :func:`~ncm_core.mosaic.open_mosaic` accepts.
    out
        Output zarr group (a directory, e.g. ``prediction.zarr``).
    tile, stride, offset, edge
        Tile grid (pixels); ``tile`` defaults to the bundle's tile size,
        rescaled when bundle and mosaic pixel sizes differ; ``stride`` to ``tile``.
    exclude_rows, mask, foreground, min_fraction
        Tiles to skip: a band of rows (``(-32, None)`` for an SEM info bar), a
        pixel mask (True = predict; full size or downsampled), and/or automatic
        foreground detection; a tile is kept when at least ``min_fraction`` of
        it is foreground. Skipped tiles get label 0 and NaN probabilities.
    batch_size
        Tiles per forward pass.
    """
    gen = predict_mosaic_steps(bundle, mosaic, out, cancel=cancel, **kwargs)
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total, "blocks")
