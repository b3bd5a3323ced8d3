"""Tiled prediction of whole mosaics, streamed to an OME-Zarr group.

:func:`predict_mosaic` runs the tile-classification task (:mod:`ncm_core.inference.tiles`) on the
streaming engine (:mod:`ncm_core.inference.engine`): blocks of grid cells whose pixel footprint
follows the mosaic's chunks and whose results fill whole output chunks; the next block is read in a
background thread while the model runs on the current one. Peak memory therefore depends on the
block (tile, stride, chunk size) and batch size, never on the mosaic's size. The output format is
described in :mod:`ncm_core.inference.prediction`.

The output is written under ``<out>.partial`` and renamed when complete, so an interrupted run never
leaves an output that looks finished. Running the same prediction again (same bundle weights,
mosaic, grid, masks and options: a fingerprint in the attributes) resumes there and computes only
what is missing. A block whose pixels cannot be read is retried, then recorded as failed while the
run continues; the run ends with :class:`PredictionIncomplete` naming the failed regions, and a
re-run retries only those.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.infobar import band_text
from ncm_core.errors import NcmError
from ncm_core.inference import engine
from ncm_core.inference.classify import classify_tensor, classify_tiles
from ncm_core.inference.engine import hash_weights, open_partial
from ncm_core.inference.layout import choose_memory_format, time_once
from ncm_core.inference.light import cache_for_next_run, can_run_light, needs_resize, resumed_backend
from ncm_core.inference.options import RUN_ONLY, PredictOptions
from ncm_core.inference.prediction import (
    PREDICTION_KIND,
    Prediction,
    PredictionIncomplete,
    is_prediction,
    open_prediction,
)
from ncm_core.inference.reading import NONFINITE, REASONS
from ncm_core.inference.tiles import TileClassTask, keep_cells, mosaic_band, plan_grid, tile_size_for
from ncm_core.io.mosaic import open_mosaic
from ncm_core.models.bundle import ModelBundle, config_bundle, load_bundle
from ncm_core.models.ood import has_ood
from ncm_core.options import merge_options
from ncm_core.outputs import check_output, check_space
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, run_steps

__all__ = [
    "predict_mosaic",
    "predict_mosaic_steps",
    "PredictOptions",
    "Prediction",
    "PredictionIncomplete",
    "open_prediction",
    "is_prediction",
    "classify_tensor",
    "classify_tiles",
    "hash_weights",
    "open_partial",
    "tile_size_for",
    "plan_grid",
    "choose_memory_format",
    "time_once",
    "PREDICTION_KIND",
]


def predict_mosaic_steps(
    bundle: str | Path | ModelBundle,
    mosaic: Any,
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    scheduler: Any = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Generator[tuple[int, int], None, Prediction]:
    """Generator form of :func:`predict_mosaic`: yields ``(blocks done, blocks total)``, returns the
    :class:`Prediction`. The napari widget runs it in a thread worker."""
    o = merge_options(PredictOptions, options, overrides)
    t_start = time.monotonic()
    if not isinstance(bundle, ModelBundle):
        bundle = config_bundle(bundle)  # the model only when needed: a light run never imports PyTorch
    if bundle.config.task != "classify":
        raise NcmError("predict_mosaic needs a classification bundle; this one is for regression", bundle.path)
    mosaic = open_mosaic(mosaic, pixel_size=o.pixel_size)
    if o.missing_chunks == "fill":  # the store leaves out empty chunks on purpose: read them as the fill value
        mosaic = replace(mosaic, missing=None)
    grid = plan_grid(bundle, mosaic, tile=o.tile, stride=o.stride, offset=o.offset, edge=o.edge)
    band = mosaic_band(o.exclude_rows, mosaic)  # "auto": the information bar, found once on the mosaic's edges
    keep = keep_cells(grid, mosaic, band, o.mask, o.foreground, o.min_fraction)
    out = check_output(out, o.overwrite, (bundle, mosaic, o.mask))
    n_pred = int(keep.sum())
    ood = o.ood and has_ood(bundle)
    # probabilities, labels, reasons and OOD scores, uncompressed: a plausible upper bound
    check_space(out, grid.size * (4 * len(bundle.class_names) + 2 + 4 * ood), "the prediction")
    max_block_pixels = o.max_block_pixels
    if o.dense:
        max_block_pixels = min(max_block_pixels, 1024 * 1024)  # one trunk pass per block: keep activations small
    block = grid.block_shape_for(tuple(mosaic.data.chunksize[:2]), max_block_pixels)
    settings = {
        **engine.options_dict(o, RUN_ONLY),
        "grid": grid.to_dict(),
        "block": list(block),
        "ood": bundle.config.ood if ood else None,
    }
    fp = engine.fingerprint(bundle, mosaic, settings, np.packbits(keep).tobytes())
    light = can_run_light(bundle, o, grid, n_pred, ood, scheduler, resumed_backend(out, fp, o.resume))
    if light:
        dev: Any = "cpu"
    else:
        from ncm_core.devices import resolve_device

        bundle = load_bundle(bundle)
        check_cancel(cancel)  # loading the model takes seconds: a Cancel meanwhile acts here
        dev = resolve_device(o.device)
        bundle.model.to(dev).eval()
    dense_geometry = None
    if o.dense:
        from ncm_core.inference.dense import check_dense

        if o.tta:
            raise NcmError("test-time augmentation (--tta) is not available in dense mode; use one or the other")
        dense_geometry = check_dense(bundle, grid, o.dense_recheck)
    scale, trans = grid.world_transform(mosaic.pixel_size or 1.0, mosaic.translate)
    unit = mosaic.unit if mosaic.pixel_size else None
    attrs: dict[str, Any] = {
        "kind": PREDICTION_KIND,
        "format_version": 1,
        "complete": False,
        "fingerprint": fp,
        "class_names": bundle.class_names,
        "grid": grid.to_dict(),
        "block_shape": list(block),
        "batch_size": o.batch_size,
        "pixel_size": mosaic.pixel_size,
        "unit": mosaic.unit,
        "translate": list(mosaic.translate),
        "source": mosaic.source,
        "bundle": {
            "path": str(bundle.path) if bundle.path else None,
            "architecture": bundle.config.architecture,
            "tile_size": bundle.config.tile_size,
            "pixel_size": bundle.config.pixel_size,
        },
        "world_transform": {"scale": list(scale), "translate": list(trans)},
        "label_values": "0 = not predicted (masked, or see unpredicted), k + 1 = class_names[k]",
        "exclude_rows": None if band is None else list(band),
        "info_bar": band_text(band) if isinstance(o.exclude_rows, str) and band is not None else None,
        "foreground": o.foreground,
        "dense": o.dense,
        "dense_recheck": o.dense_recheck if o.dense else None,
        "ood": dict(bundle.config.ood) if ood else None,
        "options": o.attrs(),
    }
    if scheduler is not None:
        from ncm_core.inference.distributed import check_distributable

        check_distributable(bundle, mosaic)
    task = TileClassTask(
        grid,
        keep,
        block,
        o.batch_size,
        dense=dense_geometry,
        ood=ood,
        names=tuple(bundle.class_names),
        world=(scale, trans, unit),
        tta=o.tta,
    )

    def choose(a: dict[str, Any]) -> None:  # measured for a new run only; a resumed run keeps the first choice
        if light:  # nothing to measure in a short run
            a["memory_format"], a["backend"] = "contiguous", "onnxruntime"
            return
        from ncm_core.inference.runtime import choose_backend

        a["memory_format"] = choose_memory_format(bundle, o.batch_size, dev, n_pred, o.memory_format, dense=o.dense)
        check_cancel(cancel)  # each measurement takes a second or more
        a["backend"] = choose_backend(
            bundle,
            o.batch_size,
            dev,
            n_pred,
            o.backend,
            a["memory_format"] == "channels_last",
            o.dense,
            ood,
            resize=needs_resize(bundle, grid),
        )
        check_cancel(cancel)

    partial, root, first = engine.start(out, fp, attrs, task, overwrite=o.overwrite, resume=o.resume, on_new=choose)
    if first is not None:  # a resumed run computes the rest exactly as the first part was computed
        attrs["memory_format"] = first.get("memory_format", "contiguous")
        attrs["backend"] = first.get("backend", "torch")
    task.channels_last, task.backend = attrs["memory_format"] == "channels_last", attrs["backend"]
    ctx = engine.Context(bundle, mosaic, dev, cancel, requested_device=str(o.device), strict=o.strict)
    failed = yield from engine.execute(
        task, ctx, retries=o.retries, retry_delay=o.retry_delay, scheduler=scheduler, cancel=cancel
    )
    torch = sys.modules.get("torch")  # None on the light path: PyTorch was not used
    engine.settle(failed, o.allow_incomplete, attrs, root, task, mosaic.source or out, PredictionIncomplete)
    unpredicted = unpredicted_counts(root)
    attrs.update(
        n_tiles=int(grid.size),
        n_predicted=n_pred - sum(unpredicted.values()),
        n_masked=int(grid.size - n_pred),
        not_predicted=unpredicted,
        seconds=round(time.monotonic() - t_start, 3),
        device=str(dev),
        torch=None if light or torch is None else torch.__version__,
    )
    if unpredicted.get(REASONS[NONFINITE]):  # unreadable regions: settle raised or warned already
        n = unpredicted[REASONS[NONFINITE]]
        tiles = "tile" if n == 1 else "tiles"
        warnings.warn(f"{mosaic.source or 'mosaic'}: {n} {tiles} not predicted: {REASONS[NONFINITE]}", stacklevel=2)
    if task.rechecked:
        attrs["n_rechecked"] = int(np.asarray(root["rechecked"][:]).sum())
    if ood:
        ratio = np.asarray(root["ood/0"][:])
        attrs["n_ood"] = int(np.nansum(ratio > 1))
        attrs["ood_fraction"] = attrs["n_ood"] / max(attrs["n_predicted"], 1)
    done = engine.complete(root, attrs, partial, out)
    # the next short run can be light; not after a resumed run, so that a fresh run just after it computes the
    # same way (as a resume does) and matches it byte for byte
    if first is None and attrs["backend"] == "torch" and scheduler is None:
        cache_for_next_run(bundle, o, grid, n_pred, ood, dev)
    return open_prediction(done)


def unpredicted_counts(root: Any) -> dict[str, int]:
    """``{reason: tiles}`` of the tiles the masks kept that were not predicted (the grid is small)."""
    codes = np.asarray(root["unpredicted"][...])
    values, n = np.unique(codes[codes > 0], return_counts=True)
    return {REASONS[int(v)]: int(k) for v, k in zip(values, n)}


def predict_mosaic(
    bundle: str | Path | ModelBundle,
    mosaic: Any,
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    scheduler: Any = None,
    **overrides: Any,
) -> Prediction:
    """Classify every tile of ``mosaic`` with ``bundle`` and write the results to ``out``.

    ``options`` (a :class:`PredictOptions`) and/or its field names as keywords set how; the keywords
    win. The main ones:

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
        force one. Short runs (fewer than 16 batches) are not measured: they use
        ONNX Runtime when the bundle's exported graph is cached
        (:mod:`ncm_core.inference.onnx_cache`), and then, for a bundle given as a
        folder, never import PyTorch (:mod:`ncm_core.inference.light`); a short CPU
        run on PyTorch caches the graph for the next one.
    scheduler
        Run the blocks on dask.distributed: a ``distributed.Client``, a
        scheduler address (``"tcp://host:8786"``) or ``"local:N"`` for a
        LocalCluster of N worker processes. The model is loaded once per
        worker; the result is identical to a single-process run.
    """
    steps = predict_mosaic_steps(bundle, mosaic, out, options, scheduler=scheduler, cancel=cancel, **overrides)
    return run_steps(steps, progress, "blocks")
