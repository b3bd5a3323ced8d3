"""Tiled prediction of whole mosaics, streamed to an OME-Zarr group.

:func:`predict_mosaic` walks a :class:`~ncm_core.data.tiling.TileGrid` block by
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
    out/ood/0              float32 (rows, cols): out-of-distribution score / threshold (> 1 = unlike
                           the training tiles; see ncm_core.models.ood), when the bundle has a detector

Both sub-groups are NGFF 0.5 images (``labels`` an ``image-label`` with class
colours and names) whose coordinate transformations overlay them on the mosaic.
The output is written under ``<out>.partial`` and renamed when complete, so an
interrupted run never leaves an output that looks finished. ``partial/blocks``
records which blocks are done; running the same prediction again (same bundle
weights, mosaic, grid, masks and batch size: a fingerprint in the attributes)
resumes there and computes only what is missing. A block whose pixels cannot
be read is retried, then recorded as failed while the run continues; the run
ends with :class:`PredictionIncomplete` naming the failed regions, and a re-run
retries only those.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ncm_core.models.bundle import ModelBundle, load_bundle
from ncm_core.io.colors import class_colors
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import Mosaic, ngff_multiscales, open_mosaic, write_label_group
from ncm_core.models.preprocess import tiles_to_tensor
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, run_steps
from ncm_core.data.tiling import TileGrid, band_mask, extract_tiles, foreground_mask, pad_region, pixel_mask_to_cells

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
    def ood(self):
        """Dask array (rows, cols) of out-of-distribution ratios (> 1 = flagged), or None."""
        import dask.array as da

        if not self.attrs.get("ood"):
            return None
        return da.from_zarr(str(self.path), component="ood/0")

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


def _use_channels_last(model: Any) -> None:
    import torch

    if not getattr(model, "_ncm_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model._ncm_channels_last = True


def classify_tensor(bundle: ModelBundle, x: Any, device: Any = "cpu", batch_size: int = 64,
                    channels_last: bool = False, ood: bool = False, backend: str = "torch") -> Any:
    """Class probabilities ``(N, classes)`` for a prepared input tensor ``(N, C, H, W)`` (on any device;
    batches are moved to ``device`` asynchronously when ``x`` is in pinned memory).

    With ``ood`` (the bundle must have a detector), returns ``(probabilities, ood_ratio)``.
    ``backend="onnxruntime"`` runs the batches with ONNX Runtime (:mod:`ncm_core.inference.runtime`, CPU only).
    """
    import torch

    from ncm_core.models.ood import forward_with_features, ood_ratio

    model = bundle.model
    dev = torch.device(device)
    if channels_last and backend == "torch":
        _use_channels_last(model)
    runner = None
    if backend == "onnxruntime":
        from ncm_core.inference.runtime import onnx_runner

        runner = onnx_runner(bundle, "features" if ood else "model")
    out, scores = [], []
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        for k in range(0, len(x), batch_size):
            if runner is not None:
                logits, feats = (torch.from_numpy(a) if a is not None else None for a in runner(x[k:k + batch_size]))
            else:
                xb = x[k:k + batch_size].to(dev, non_blocking=True)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                if ood:
                    logits, feats = forward_with_features(model, xb)
                else:
                    logits = model(xb)
            if ood:
                scores.append(ood_ratio(bundle, feats).cpu().numpy())
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)
    if ood:
        return probs, (np.concatenate(scores) if scores else np.zeros(0, np.float32))
    return probs


def classify_tiles(bundle: ModelBundle, tiles: np.ndarray, device: Any = "cpu", batch_size: int = 64,
                   channels_last: bool = False) -> np.ndarray:
    """Class probabilities ``(N, classes)`` for tiles ``(N, h, w[, C])``."""
    return classify_tensor(bundle, tiles_to_tensor(tiles, bundle.config.input, "cpu", channels_last), device,
                           batch_size, channels_last)


def time_once(runs: dict[str, Any], cuda: bool = False) -> dict[str, float]:
    """Seconds of one call of each function, after an untimed call that sets up kernels."""
    import torch

    times = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times[name] = time.perf_counter() - t
    return times


_LAYOUTS: dict[tuple, str] = {}  # measured choices, per process (the widget predicts many times)


def choose_memory_format(bundle: ModelBundle, batch_size: int, device: Any, n_tiles: int,
                         requested: str = "auto", dense: bool = False) -> str:
    """``"channels_last"`` or ``"contiguous"``: the faster one by a short measurement.

    Only runs of at least 4 batches (and 256 tiles) are measured; smaller ones keep the
    default layout. The measurement times one pass per layout (after an
    untimed one that sets up kernels) on a batch of up to 16 tiles (dense mode:
    the trunk on a region of 2 x 2 tiles), a fraction of a second; layouts that
    matter differ by 30 % or more. The choice is remembered for the rest of
    the process.
    """
    import copy

    import torch

    if requested in ("channels_last", "contiguous"):
        return requested
    if requested != "auto":
        raise NcmError(f"memory format must be 'auto', 'channels_last' or 'contiguous', got {requested!r}")
    if n_tiles < max(4 * batch_size, 256):
        return "contiguous"
    spec = bundle.config.input
    key = (bundle.config.architecture, json.dumps(spec.to_dict(), sort_keys=True), min(batch_size, 16), str(device),
           torch.get_num_threads(), dense)
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    if dense:
        x = torch.rand(1, spec.in_chans, 2 * spec.input_size[0], 2 * spec.input_size[1], device=device)
    else:
        x = torch.rand(min(batch_size, 16), spec.in_chans, *spec.input_size, device=device)
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        m = bundle.model if fmt == "contiguous" else copy.deepcopy(bundle.model).to(memory_format=torch.channels_last)
        xi = x if fmt == "contiguous" else x.contiguous(memory_format=torch.channels_last)
        runs[fmt] = (lambda m=m, xi=xi: m.forward_features(xi)) if dense else (lambda m=m, xi=xi: m(xi))
    times = time_once(runs, cuda=x.is_cuda)
    _LAYOUTS[key] = min(times, key=times.get)
    return _LAYOUTS[key]


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


class PredictionIncomplete(NcmError):
    """Some blocks could not be read; the rest is kept in ``<out>.partial`` for a re-run."""

    def __init__(self, message: str, path: str | Path, failed: list[dict[str, Any]]) -> None:
        super().__init__(message, path)
        self.failed = failed


def hash_weights(bundle: ModelBundle, h: Any) -> None:
    """Feed the bundle's weights (the safetensors file, or the in-memory state) into hash ``h``."""
    if bundle.path is not None and (bundle.path / "model.safetensors").is_file():
        h.update((bundle.path / "model.safetensors").read_bytes())
    else:
        for k, v in bundle.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())


def open_partial(out: Path, fingerprint: str, resume: bool) -> tuple[Path, Any]:
    """``(<out>.partial, its zarr group)`` when it holds an interrupted run with this ``fingerprint`` (and
    ``resume``), else ``(<out>.partial, None)`` with any other ``.partial`` removed."""
    import zarr

    partial = out.with_name(out.name + ".partial")
    if partial.exists() and resume:
        try:
            old = zarr.open_group(str(partial), mode="r+")
            if dict(old.attrs).get("ncm", {}).get("fingerprint") == fingerprint:
                return partial, old
        except Exception:
            pass
    if partial.exists():
        shutil.rmtree(partial)
    return partial, None


def _fingerprint(bundle: ModelBundle, mosaic: Mosaic, grid: TileGrid, keep: np.ndarray, block: tuple[int, int],
                 batch_size: int, dense: bool | float, ood: bool = False) -> str:
    """Hash of everything that determines the output, so a re-run only resumes the same prediction."""
    import hashlib

    h = hashlib.sha256()
    hash_weights(bundle, h)
    h.update(json.dumps({"grid": grid.to_dict(), "block": list(block), "batch": batch_size, "dense": dense,
                         "ood": bundle.config.ood if ood else None,
                         "source": mosaic.source,
                         "shape": list(mosaic.data.shape), "dtype": str(mosaic.dtype),
                         "input": bundle.config.input.to_dict()}, sort_keys=True).encode())
    h.update(np.packbits(keep).tobytes())
    return h.hexdigest()


def _new_output(partial: Path, grid: TileGrid, block: tuple[int, int], names: list[str], scale: Any, trans: Any,
                unit: str | None, attrs: dict[str, Any], ood: bool = False, rechecked: bool = False) -> Any:
    """Create the (empty) output group in ``partial``."""
    import dask.array as da
    import zarr

    n_cls, (rows, cols) = len(names), grid.shape
    colors = class_colors(n_cls)
    root = zarr.open_group(str(partial), mode="w", zarr_format=3)
    lab_dtype = np.uint8 if n_cls < 255 else np.uint16
    write_label_group(
        root, "labels", da.zeros((rows, cols), dtype=lab_dtype, chunks=block), scale=scale, translate=trans,
        unit=unit, chunks=block, colors={k + 1: colors[k] for k in range(n_cls)},
        properties={0: {"class": "not predicted"}, **{k + 1: {"class": names[k]} for k in range(n_cls)}},
        source="../",
    )
    pg = root.create_group("probabilities")
    pg.create_array("0", shape=(n_cls, rows, cols), dtype=np.float32, chunks=(n_cls, *block), fill_value=np.nan,
                    dimension_names=["c", "y", "x"])
    pg.attrs["ome"] = {"version": "0.5", "multiscales": [ngff_multiscales(1, scale, trans, leading=("c",), unit=unit,
                                                                           name="probabilities")],
                       "omero": {"channels": [{"label": n, "color": "%02x%02x%02x" % tuple(int(c * 255) for c in colors[k][:3]),
                                               "window": {"start": 0, "end": 1, "min": 0, "max": 1}}
                                              for k, n in enumerate(names)]}}
    if ood:
        og = root.create_group("ood")
        og.create_array("0", shape=(rows, cols), dtype=np.float32, chunks=block, fill_value=np.nan,
                        dimension_names=["y", "x"])
        og.attrs["ome"] = {"version": "0.5", "multiscales": [ngff_multiscales(1, scale, trans, unit=unit, name="ood")]}
    # one status byte per block, one chunk per block, so parallel writers never share a chunk:
    # 0 = to do, 1 = done, 2 = failed (retried on the next run)
    nb = (-(-rows // block[0]), -(-cols // block[1]))
    root.create_array("blocks", shape=nb, dtype=np.uint8, chunks=(1, 1), fill_value=0, dimension_names=["y", "x"])
    if rechecked:  # dense mode: tiles per block that were evaluated exactly
        root.create_array("rechecked", shape=nb, dtype=np.int32, chunks=(1, 1), fill_value=0,
                          dimension_names=["y", "x"])
    root.attrs["ncm"] = attrs
    return root


@dataclass
class _BlockPlan:
    """What one block of tiles needs, picklable so dask workers can run blocks too."""

    partial: Path
    grid: TileGrid
    keep: np.ndarray
    block: tuple[int, int]
    batch_size: int
    retries: int = 2
    retry_delay: float = 0.5
    channels_last: bool = False
    dense: Any = None  # a dense.DenseGeometry in dense mode
    backend: str = "torch"  # or "onnxruntime" (runtime.choose_backend)
    ood: bool = False  # also write out-of-distribution ratios

    def read(self, mosaic: Mosaic, b: tuple[int, int, int, int]) -> np.ndarray | None:
        """The block's pixels (clipped to the image), or None when all its tiles are masked."""
        r0, r1, c0, c1 = b
        if not self.keep[r0:r1, c0:c1].any():
            return None
        H, W = mosaic.shape
        y0, y1, x0, x1 = self.grid.region(r0, r1, c0, c1)
        try:
            return np.asarray(mosaic.data[y0:min(y1, H), x0:min(x1, W)].compute(scheduler="synchronous"))
        except Exception as exc:  # a damaged chunk, a vanished file, a codec error
            raise NcmError(f"cannot read pixels y {y0}:{min(y1, H)}, x {x0}:{min(x1, W)} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})",
                           mosaic.source) from None

    def read_with_retries(self, mosaic: Mosaic, b: tuple[int, int, int, int]) -> np.ndarray | NcmError | None:
        for attempt in range(self.retries + 1):
            try:
                return self.read(mosaic, b)
            except NcmError as exc:
                if attempt == self.retries:
                    return exc
                time.sleep(self.retry_delay * (attempt + 1))
        return None  # unreachable

    def status_index(self, b: tuple[int, int, int, int]) -> tuple[int, int]:
        """Position of block ``b`` in the ``blocks`` status array."""
        return b[0] // self.block[0], b[2] // self.block[1]

    def open_arrays(self) -> tuple[Any, Any, Any, Any, Any]:
        import zarr

        names = ("labels/0", "probabilities/0", "blocks", "ood/0" if self.ood else None,
                 "rechecked" if self.dense is not None and self.dense.recheck > 0 else None)
        return tuple(zarr.open_array(str(self.partial / n), mode="r+") if n else None  # type: ignore[return-value]
                     for n in names)

    def prepare(self, bundle: ModelBundle, mosaic: Mosaic, b: tuple[int, int, int, int], device: Any) -> Any:
        """Everything before the model, for a background thread: read (with retries), cut and convert.

        Returns None (all masked), an :class:`NcmError` (unreadable), the padded
        region (dense mode) or the block's input tensor (pinned for a GPU).
        """
        import torch

        region = self.read_with_retries(mosaic, b)
        if region is None or isinstance(region, NcmError):
            return region
        r0, r1, c0, c1 = b
        if self.dense:
            return pad_region(region, self.grid, r0, r1, c0, c1)
        tiles = extract_tiles(region, self.grid, r0, r1, c0, c1)[self.keep[r0:r1, c0:c1]]
        x = tiles_to_tensor(tiles, bundle.config.input, "cpu",
                            channels_last=self.channels_last and self.backend == "torch")
        if torch.device(device).type == "cuda":
            x = x.pin_memory()
        return x

    def finish(self, bundle: ModelBundle, device: Any, b: tuple[int, int, int, int], prepared: Any,
               arrays: tuple[Any, Any, Any, Any, Any]) -> dict[str, Any] | None:
        """Run the model on a prepared block and write its chunks, then its status; returns a failure
        record or None.

        Each block owns whole output chunks (and its own status chunk), so blocks
        may be written by independent processes.
        """
        larr, parr, status, oarr, rarr = arrays
        r0, r1, c0, c1 = b
        bi = self.status_index(b)
        if isinstance(prepared, NcmError):
            H, W = self.grid.image_shape
            y0, y1, x0, x1 = self.grid.region(r0, r1, c0, c1)
            status[bi] = 2
            return {"cells": [r0, r1, c0, c1], "pixels": [y0, min(y1, H), x0, min(x1, W)], "error": str(prepared)}
        if prepared is not None:
            kb = self.keep[r0:r1, c0:c1]
            probs = np.full((r1 - r0, c1 - c0, bundle.config.num_outputs), np.nan, np.float32)
            ratio = np.full((r1 - r0, c1 - c0), np.nan, np.float32)
            if self.dense:
                from ncm_core.inference.dense import dense_block_probs

                p, o, n_rechecked = dense_block_probs(bundle, prepared, self.grid, b, device, self.dense,
                                                      channels_last=self.channels_last, ood=self.ood, keep=kb,
                                                      batch_size=self.batch_size, backend=self.backend)
                probs[kb] = p[kb]
                if self.ood:
                    ratio[kb] = o[kb]
                if rarr is not None:
                    rarr[bi] = n_rechecked
            elif self.ood:
                probs[kb], ratio[kb] = classify_tensor(bundle, prepared, device, self.batch_size,
                                                       self.channels_last, ood=True, backend=self.backend)
            else:
                probs[kb] = classify_tensor(bundle, prepared, device, self.batch_size, self.channels_last,
                                            backend=self.backend)
            larr[r0:r1, c0:c1] = np.where(kb, np.nan_to_num(probs, nan=-1).argmax(-1) + 1, 0).astype(larr.dtype)
            parr[:, r0:r1, c0:c1] = np.moveaxis(probs, -1, 0)
            if oarr is not None:
                oarr[r0:r1, c0:c1] = ratio
        status[bi] = 1  # after the data: a crash in between only repeats this block
        return None


def predict_mosaic_steps(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, *, tile: int | None = None,
    stride: int | None = None, offset: tuple[int, int] = (0, 0), edge: str = "pad", batch_size: int = 64,
    exclude_rows: tuple[int | None, int | None] | None = None, mask: Any = None, foreground: bool = False,
    min_fraction: float = 0.5, max_block_pixels: int = 2048 * 2048, device: str = "auto", overwrite: bool = False,
    resume: bool = True, retries: int = 2, retry_delay: float = 0.5, scheduler: Any = None,
    memory_format: str = "auto", backend: str = "auto", dense: bool = False, dense_recheck: float = 0.3,
    ood: bool = True, cancel: CancelFlag = None,
) -> Generator[tuple[int, int], None, Prediction]:
    """Generator form of :func:`predict_mosaic`: yields ``(blocks done, blocks total)``, returns the
    :class:`Prediction`. The napari widget runs it in a thread worker."""
    import torch

    from ncm_core.devices import resolve_device

    t_start = time.monotonic()
    bundle = load_bundle(bundle)
    if bundle.config.task != "classify":
        raise NcmError("predict_mosaic needs a classification bundle; this one is for regression", bundle.path)
    mosaic = open_mosaic(mosaic)
    if batch_size < 1:
        raise NcmError(f"batch size must be positive, got {batch_size}")
    from ncm_core.inference.runtime import BACKENDS

    if backend not in BACKENDS:
        raise NcmError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    grid = plan_grid(bundle, mosaic, tile=tile, stride=stride, offset=offset, edge=edge)
    keep = _keep_cells(grid, mosaic, exclude_rows, mask, foreground, min_fraction)
    out = Path(out)
    if out.exists() and not overwrite:
        raise NcmError("output exists; pass overwrite=True (CLI: --overwrite) to replace it", out)
    dev = resolve_device(device)
    bundle.model.to(dev).eval()
    from ncm_core.models.ood import has_ood

    ood = ood and has_ood(bundle)
    names = bundle.class_names
    dense_geometry = None
    if dense:
        from ncm_core.inference.dense import check_dense

        dense_geometry = check_dense(bundle, grid, dense_recheck)
        max_block_pixels = min(max_block_pixels, 1024 * 1024)  # one trunk pass per block: keep activations small
    block = grid.block_shape_for(tuple(mosaic.data.chunksize[:2]), max_block_pixels)
    scale, trans = grid.world_transform(mosaic.pixel_size or 1.0, mosaic.translate)
    unit = mosaic.unit if mosaic.pixel_size else None
    fp = _fingerprint(bundle, mosaic, grid, keep, block, batch_size, dense_recheck if dense else False, ood)
    attrs: dict[str, Any] = {
        "kind": PREDICTION_KIND, "format_version": 1, "complete": False, "fingerprint": fp, "class_names": names,
        "grid": grid.to_dict(), "block_shape": list(block), "batch_size": batch_size,
        "pixel_size": mosaic.pixel_size, "unit": mosaic.unit, "translate": list(mosaic.translate),
        "source": mosaic.source,
        "bundle": {"path": str(bundle.path) if bundle.path else None, "architecture": bundle.config.architecture,
                   "tile_size": bundle.config.tile_size, "pixel_size": bundle.config.pixel_size},
        "world_transform": {"scale": list(scale), "translate": list(trans)},
        "label_values": "0 = not predicted (masked), k + 1 = class_names[k]",
        "exclude_rows": None if exclude_rows is None else list(exclude_rows), "foreground": foreground,
        "dense": dense, "dense_recheck": dense_recheck if dense else None,
        "ood": dict(bundle.config.ood) if ood else None,
    }
    if scheduler is not None:
        from ncm_core.inference.distributed import check_distributable

        check_distributable(bundle, mosaic)

    # A '.partial' group from an interrupted run of the same prediction is resumed; anything else is replaced.
    partial, root = open_partial(out, fp, resume)
    if root is None:
        attrs["memory_format"] = choose_memory_format(bundle, batch_size, dev, int(keep.sum()), memory_format,
                                                      dense=dense)
        from ncm_core.inference.runtime import choose_backend

        attrs["backend"] = choose_backend(bundle, batch_size, dev, int(keep.sum()), backend,
                                          attrs["memory_format"] == "channels_last", dense, ood)
        root = _new_output(partial, grid, block, names, scale, trans, unit, attrs, ood,
                           rechecked=bool(dense and dense_recheck > 0))
    else:  # a resumed run computes the rest exactly as the first part was computed
        first = dict(root.attrs)["ncm"]
        attrs["memory_format"] = first.get("memory_format", "contiguous")
        attrs["backend"] = first.get("backend", "torch")
    plan = _BlockPlan(partial, grid, keep, block, batch_size, retries, retry_delay,
                      channels_last=attrs["memory_format"] == "channels_last", dense=dense_geometry, ood=ood,
                      backend=attrs["backend"])
    status = np.asarray(root["blocks"][:])
    blocks = list(grid.blocks(block))
    todo = [b for b in blocks if status[plan.status_index(b)] != 1]
    n_done = len(blocks) - len(todo)
    failed: list[dict[str, Any]] = []
    yield n_done, len(blocks)
    if scheduler is not None:
        from ncm_core.inference.distributed import run_blocks

        for result in run_blocks(scheduler, plan, bundle, mosaic, todo, device, cancel):
            if result:
                failed.append(result)
            n_done += 1
            yield n_done, len(blocks)
    else:
        arrays = plan.open_arrays()
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ncm-read") as pool:
            futures = [pool.submit(plan.prepare, bundle, mosaic, b, dev) for b in todo[:2]]
            for k, b in enumerate(todo):
                check_cancel(cancel)
                prepared = futures[k].result()
                if k + 2 < len(todo):
                    futures.append(pool.submit(plan.prepare, bundle, mosaic, todo[k + 2], dev))
                futures[k] = None  # type: ignore[call-overload]  # free the block once used
                result = plan.finish(bundle, dev, b, prepared, arrays)
                if result:
                    failed.append(result)
                n_done += 1
                yield n_done, len(blocks)
    n_pred = int(keep.sum())
    attrs.update(n_tiles=int(grid.size), n_predicted=n_pred, n_masked=int(grid.size - n_pred),
                 seconds=round(time.monotonic() - t_start, 3), device=str(dev), torch=torch.__version__)
    if failed:
        attrs["failed_blocks"] = failed
        root.attrs["ncm"] = attrs
        where = "; ".join(f"y {f['pixels'][0]}:{f['pixels'][1]}, x {f['pixels'][2]}:{f['pixels'][3]}" for f in failed[:5])
        raise PredictionIncomplete(
            f"{len(failed)} of {len(blocks)} blocks could not be read ({where}{', ...' if len(failed) > 5 else ''}): "
            f"{failed[0]['error']}. The rest is kept in {partial.name}; run again to retry only the failed blocks",
            mosaic.source or out, failed)
    if dense and dense_recheck > 0:
        attrs["n_rechecked"] = int(np.asarray(root["rechecked"][:]).sum())
    if ood:
        ratio = np.asarray(root["ood/0"][:])
        attrs["n_ood"] = int(np.nansum(ratio > 1))
        attrs["ood_fraction"] = attrs["n_ood"] / max(n_pred, 1)
    attrs["complete"] = True
    root.attrs["ncm"] = attrs
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return open_prediction(out)


def predict_mosaic(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, *, progress: ProgressFn | None = None,
    cancel: CancelFlag = None, **kwargs: Any,
) -> Prediction:
    """Classify every tile of ``mosaic`` with ``bundle`` and write the results to ``out``.

    Parameters
    ----------
    bundle
        A bundle directory or a loaded :class:`~ncm_core.models.bundle.ModelBundle`.
    mosaic
        Anything :func:`~ncm_core.io.mosaic.open_mosaic` accepts.
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
    resume
        Continue an interrupted run of the same prediction from ``<out>.partial``.
    dense, dense_recheck
        With overlapping tiles (stride < tile): run the network's trunk once
        per block and pool each tile's window of the feature map
        (:mod:`ncm_core.inference.dense`); much faster, slightly different near tile
        borders. The stride must map to whole feature cells. Tiles whose two
        most probable classes are closer than ``dense_recheck`` are evaluated
        exactly (0 = never); ``attrs["n_rechecked"]`` counts them.
    memory_format
        ``"auto"`` (default) measures whether the model runs faster in
        channels-last layout and uses the faster one (kept on resume);
        ``"channels_last"`` or ``"contiguous"`` force one.
    backend
        ``"auto"`` (default): ONNX Runtime where it is installed, the run is on
        the CPU and a short measurement finds it faster, else PyTorch (kept on
        resume; :mod:`ncm_core.inference.runtime`); ``"torch"`` or ``"onnxruntime"``
        force one.
    scheduler
        Run the blocks on dask.distributed: a ``distributed.Client``, a
        scheduler address (``"tcp://host:8786"``) or ``"local:N"`` for a
        LocalCluster of N worker processes. The model is loaded once per
        worker; the result is identical to a single-process run.
    """
    return run_steps(predict_mosaic_steps(bundle, mosaic, out, cancel=cancel, **kwargs), progress, "blocks")
