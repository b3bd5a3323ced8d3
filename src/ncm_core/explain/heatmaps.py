"""Explanation heatmaps over whole mosaics, streamed to an OME-Zarr group.

:func:`explain_mosaic` cuts the mosaic into overlapping tiles (``overlap``
pixels, a quarter tile by default), explains each tile with
:func:`ncm_core.explain.methods.explain_tensor`, and blends the tiles' maps with a
smooth weight (a cosine ramp over the overlap, 1 in the middle), so seams
vanish and a pixel covered by one tile keeps that tile's value. The heatmap
is written block by block: a block is a rectangle of output chunks; the tiles
that touch it are read (the mosaic is never loaded whole), explained and
blended into the block, and the block is written. Tiles on a block border are
explained for both blocks, which costs a few per cent at the default block
size. Peak memory depends on the block, tile and batch size only.

The heatmap has one value per ``factor`` x ``factor`` mosaic pixels (4 for
CAM methods and occlusion, whose maps are coarse anyway; 1 for guided
backpropagation, which is pixel-sharp).

Output layout (``out``, a zarr v3 group)::

    out/            attrs["ncm"]: method, layer, map names, signed, factor, limits, bundle, complete flag
    out/maps/0..L   float32 (maps, y, x): NGFF 0.5 multiscale image, one channel per class/target map,
                    NaN where no tile was explained; coarser levels for display
    out/blocks      uint8 per block: 1 = done (resume)

The heatmap is a pixel-level task (:class:`HeatmapTask`) on the streaming engine
(:mod:`ncm_core.inference.engine`, :mod:`ncm_core.inference.windows`), like
:func:`ncm_core.inference.predict.predict_mosaic`: blocks are read ahead in a thread, unreadable
blocks retried and recorded, the group is written under ``<out>.partial`` and renamed when
complete, running the same command again after an interruption computes only the missing blocks,
and ``scheduler`` runs the blocks on dask.distributed.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.explain.options import ExplainOptions
from ncm_core.inference import engine
from ncm_core.inference.engine import Context
from ncm_core.inference.reading import NONFINITE, REASONS
from ncm_core.inference.windows import WindowGeometry, WindowTask, blend_weight
from ncm_core.io.mosaic import Mosaic, open_mosaic
from ncm_core.io.ngff import ngff_multiscales
from ncm_core.models.bundle import ModelBundle, load_bundle
from ncm_core.options import merge_options
from ncm_core.outputs import check_output, check_space
from ncm_core.progress import CancelFlag, ProgressFn, run_steps

HEATMAP_KIND = "ncm-explanation"
__all__ = [
    "Heatmap",
    "HeatmapTask",
    "ExplainOptions",
    "explain_mosaic",
    "explain_mosaic_steps",
    "open_heatmap",
    "is_heatmap",
    "blend_weight",
    "tile_at",
]
#: options that change how a run goes, not what it writes: left out of the run fingerprint
RUN_ONLY = (*engine.RUN_ONLY, "check_images", "block_pixels")


@dataclass
class Heatmap:
    """A finished mosaic heatmap on disk, opened lazily."""

    path: Path
    names: list[str]
    method: str
    signed: bool
    factor: int
    limits: list[tuple[float, float]]
    attrs: dict[str, Any]

    @property
    def levels(self) -> list[Any]:
        """Dask arrays ``(maps, y, x)``, finest first."""
        import dask.array as da
        import zarr

        g = zarr.open_group(str(self.path / "maps"), mode="r")
        n = len(g.attrs["ome"]["multiscales"][0]["datasets"])
        return [da.from_zarr(g[str(k)]) for k in range(n)]

    @property
    def data(self) -> Any:
        return self.levels[0]

    def world_transform(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` of level 0 that overlays it on the mosaic (pixel centres)."""
        w = self.attrs["world_transform"]
        return tuple(w["scale"]), tuple(w["translate"])  # type: ignore[return-value]


def is_heatmap(path: str | Path) -> bool:
    try:
        import zarr

        return dict(zarr.open_group(str(path), mode="r").attrs).get("ncm", {}).get("kind") == HEATMAP_KIND
    except Exception:
        return False


def open_heatmap(path: str | Path) -> Heatmap:
    import zarr

    path = Path(path)
    try:
        a = dict(zarr.open_group(str(path), mode="r").attrs).get("ncm", {})
    except Exception as exc:
        raise NcmError(f"not a zarr group ({type(exc).__name__})", path) from None
    if a.get("kind") != HEATMAP_KIND:
        raise NcmError("not a napari-ncm explanation heatmap", path)
    if not a.get("complete"):
        raise NcmError("the heatmap is incomplete (an interrupted run); run the same command again", path)
    return Heatmap(
        path, list(a["names"]), a["method"], bool(a["signed"]), int(a["factor"]), [tuple(v) for v in a["limits"]], a
    )


def tile_at(bundle: ModelBundle, mosaic: Mosaic, y: float, x: float) -> tuple[int, int, int] | None:
    """``(y0, x0, T)`` of the bundle-sized tile (on the non-overlapping grid from the origin, the last row and
    column moved inside the image) that holds pixel (y, x); None outside the image."""
    from ncm_core.inference.tiles import tile_size_for

    T = tile_size_for(bundle, mosaic)
    H, W = mosaic.shape
    if H < T or W < T:
        raise NcmError(f"the image ({H} x {W} px) is smaller than one tile ({T} px)", mosaic.source)
    if not (0 <= y < H and 0 <= x < W):
        return None
    return min(int(y // T) * T, H - T), min(int(x // T) * T, W - T), T


def _dynamic(target: Any) -> bool:
    specs = target if isinstance(target, (list, tuple)) else [target]
    return any(isinstance(s, str) and s.strip().lower().startswith(("predicted", "top")) for s in specs)


def _map_names(bundle: ModelBundle, target: Any) -> list[str]:
    """Names of the heatmap's channels: output names, or 'predicted' / 'top-k' for per-tile targets."""
    from ncm_core.explain.methods import resolve_targets

    c = bundle.config
    if target is None:
        target = "predicted" if c.task == "classify" else "all"
    n = c.num_outputs
    if _dynamic(target):
        k = resolve_targets(bundle, target, np.tile(np.arange(n, 0, -1, dtype=np.float32), (1, 1))).shape[1]
        specs = target if isinstance(target, (list, tuple)) else [target]
        if len(specs) == 1 and str(specs[0]).strip().lower() == "predicted":
            return ["predicted class"]
        return [f"top-{i + 1} class" for i in range(k)]
    idx = resolve_targets(bundle, target, np.zeros((1, n), np.float32))[0]
    names = c.class_names if c.task == "classify" else c.target_names
    return [names[i] for i in idx]


@dataclass
class HeatmapTask(WindowTask):
    """Explanation maps of overlapping tiles as a pixel-level engine task (picklable for dask)."""

    method: str = "gradcam"
    target: Any = None
    layer: str | None = None
    occlusion: tuple[Any, Any, Any] = ((7, 7), None, "mean")  # window, stride, fill

    def to_input(self, ctx: Context, windows: np.ndarray) -> Any:
        from ncm_core.models.preprocess import tiles_to_tensor

        return tiles_to_tensor(windows, ctx.bundle.config.input, "cpu")

    def run_windows(self, ctx: Context, x: Any) -> np.ndarray:
        from ncm_core.explain.methods import explain_tensor

        tf = self.geometry.window // self.geometry.factor
        window, stride, fill = self.occlusion
        return explain_tensor(
            ctx.bundle,
            x.to(ctx.device),
            self.method,
            self.target,
            self.layer,
            size=(tf, tf),
            batch_size=self.batch_size,
            window=window,
            stride=stride,
            fill=fill,
            cancel=ctx.cancel,
        ).maps


def _merge(
    method: Any, target: Any, layer: Any, options: ExplainOptions | None, overrides: dict[str, Any]
) -> ExplainOptions:
    """The options of a call: ``method`` may be an :class:`ExplainOptions` (the options-first call shape)."""
    if isinstance(method, ExplainOptions):
        options, method = method, None
    return merge_options(ExplainOptions, options, {"method": method, "target": target, "layer": layer, **overrides})


def explain_mosaic_steps(
    bundle: str | Path | ModelBundle,
    mosaic: Any,
    out: str | Path,
    method: str | ExplainOptions | None = None,
    target: Any = None,
    layer: str | None = None,
    *,
    options: ExplainOptions | None = None,
    scheduler: Any = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Generator[tuple[int, int], None, Heatmap]:
    """Generator form of :func:`explain_mosaic`: yields ``(blocks done, blocks total)``, returns the
    :class:`Heatmap`."""
    import torch

    from ncm_core.data.tiling import TileGrid
    from ncm_core.devices import resolve_device
    from ncm_core.explain.methods import LAYERED, SIGNED, resolve_layer
    from ncm_core.inference.tiles import tile_size_for

    t_start = time.monotonic()
    o = _merge(method, target, layer, options, overrides)
    method = o.method
    bundle = load_bundle(bundle)
    mosaic = open_mosaic(mosaic)
    if o.missing_chunks == "fill":
        mosaic = replace(mosaic, missing=None)
    c = bundle.config
    if c.input.input_size[0] != c.input.input_size[1]:
        raise NcmError(
            f"explain_mosaic tiles the mosaic in squares, but this model takes {c.input.input_size[0]} x "
            f"{c.input.input_size[1]} inputs; explain its crops instead (ncm explain BUNDLE CROPS_DIR OUT)",
            bundle.path,
        )
    T = tile_size_for(bundle, mosaic)
    TileGrid(mosaic.shape, T)  # one clear error when the image is smaller than a tile
    overlap = T // 4 if o.overlap is None else int(o.overlap)
    if not 0 <= overlap < T:
        raise NcmError(f"overlap must be between 0 and the tile size ({T} px), got {overlap}")
    f = (1 if method in ("guided-backprop", "guided-gradcam") else 4) if o.factor is None else int(o.factor)
    S = T - overlap
    if f < 1 or T % f or S % f:
        raise NcmError(f"factor {f} must divide the tile ({T} px) and the stride ({S} px = tile - overlap)")
    out = check_output(out, o.overwrite, (bundle, mosaic))
    dev = resolve_device(o.device)
    bundle.model.to(dev).eval()
    spec = (c.input.in_chans, *c.input.input_size)
    layer = resolve_layer(bundle.model, o.layer, spec) if method in LAYERED else o.layer
    names = _map_names(bundle, o.target)
    H, W = mosaic.shape
    chunk = max(64, o.block_pixels // f)
    geometry = WindowGeometry((H, W), T, 0, overlap, f, chunk, "cosine")
    hh, hw = geometry.out_shape
    check_space(out, len(names) * hh * hw * 4 * 4 // 3, "the heatmap")  # float32 maps and their pyramid
    window, stride = o.window, o.stride or o.window
    if method == "occlusion" and (window[0] > c.input.input_size[0] or window[1] > c.input.input_size[1]):
        raise NcmError(
            f"the tile ({c.input.input_size[0]} px at the model's input size) is smaller than the "
            f"occlusion window ({window[0]} x {window[1]} px); use a smaller window"
        )
    s_px = mosaic.pixel_size or 1.0
    scale = (s_px * f, s_px * f)
    trans = (mosaic.translate[0] + s_px * (f - 1) / 2, mosaic.translate[1] + s_px * (f - 1) / 2)
    unit = mosaic.unit if mosaic.pixel_size else None
    resolved = replace(o, layer=layer, overlap=overlap, factor=f, stride=stride)
    settings = {**engine.options_dict(resolved, RUN_ONLY), "tile": T, "chunk": chunk}
    fp = engine.fingerprint(bundle, mosaic, settings)
    if scheduler is not None:
        from ncm_core.inference.distributed import check_distributable

        check_distributable(bundle, mosaic)
    target = o.target if isinstance(o.target, (str, type(None))) else list(o.target)
    attrs: dict[str, Any] = {
        "kind": HEATMAP_KIND,
        "format_version": 1,
        "complete": False,
        "fingerprint": fp,
        "method": method,
        "layer": layer,
        "names": names,
        "signed": method in SIGNED,
        "factor": f,
        "tile": T,
        "overlap": overlap,
        "target": target,
        "task": c.task,
        "pixel_size": mosaic.pixel_size,
        "unit": mosaic.unit,
        "source": mosaic.source,
        "image_shape": [H, W],
        "bundle": {"path": str(bundle.path) if bundle.path else None, "architecture": c.architecture},
        "world_transform": {"scale": list(scale), "translate": list(trans)},
        "occlusion": {"window": list(window), "stride": list(stride)} if method == "occlusion" else None,
        "options": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in {**engine.options_dict(resolved), "target": target}.items()
        },
    }
    task = HeatmapTask(geometry, len(names), o.batch_size, "maps/0", method, o.target, layer, (window, stride, o.fill))
    partial, root, _ = engine.start(out, fp, attrs, task, overwrite=o.overwrite, resume=o.resume)
    failed = yield from engine.execute(
        task,
        Context(bundle, mosaic, dev, cancel, requested_device=str(o.device), strict=o.strict),
        retries=o.retries,
        retry_delay=o.retry_delay,
        scheduler=scheduler,
        cancel=cancel,
    )
    engine.settle(failed, o.allow_incomplete, attrs, root, task, mosaic.source or out)
    attrs["not_computed"] = skipped = engine.skipped_counts(root)  # tiles left out, by reason
    if skipped.get(REASONS[NONFINITE]):
        n = skipped[REASONS[NONFINITE]]
        warnings.warn(
            f"{mosaic.source}: {n} tile{'s' if n > 1 else ''} not explained: {REASONS[NONFINITE]}", stacklevel=2
        )
    import zarr

    maps = zarr.open_array(str(partial / "maps" / "0"), mode="r")
    K = len(names)
    attrs["limits"] = _limits(maps, method in SIGNED)
    n_levels = _write_levels(partial / "maps", (K, hh, hw), chunk)
    mg = zarr.open_group(str(partial / "maps"), mode="r+")
    mg.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [ngff_multiscales(n_levels, scale, trans, leading=("c",), unit=unit, name=f"{method} heatmap")],
        "omero": {
            "channels": [
                {"label": n, "window": {"start": lo, "end": hi, "min": lo, "max": hi}}
                for n, (lo, hi) in zip(names, attrs["limits"])
            ]
        },
    }
    attrs.update(
        seconds=round(time.monotonic() - t_start, 3),
        device=str(dev),
        torch=torch.__version__,
        n_tiles=int(np.prod(geometry.grid_shape)),
    )
    return open_heatmap(engine.complete(root, attrs, partial, out))


def _limits(maps: Any, signed: bool, max_samples: int = 2_000_000) -> list[tuple[float, float]]:
    """Display limits per map from a strided sample: [-a, a] with a the 99.5th percentile of |value| (signed),
    else [0, 99.5th percentile]."""
    K, hh, hw = maps.shape
    step = max(1, int(np.sqrt(hh * hw / max_samples)))
    out = []
    for k in range(K):
        v = np.asarray(maps[k, ::step, ::step]).ravel()  # zarr reads the strided selection chunk by chunk
        v = v[np.isfinite(v)]
        a = float(np.percentile(np.abs(v), 99.5)) if v.size else 1.0
        a = a if a > 0 else 1.0
        out.append((-a, a) if signed else (0.0, a))
    return out


def _write_levels(group: Path, shape: tuple[int, int, int], chunk: int, min_side: int = 512) -> int:
    """Add 2x-downsampled levels (NaN-aware means) until the larger side is at most ``min_side``."""
    import warnings

    import dask.array as da
    import zarr

    n = 1
    prev = da.from_zarr(str(group / "0"))
    while max(prev.shape[1:]) > min_side and min(prev.shape[1:]) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
            nxt = da.coarsen(np.nanmean, prev, {1: 2, 2: 2}, trim_excess=True).astype(np.float32)
            z = zarr.open_group(str(group), mode="r+").create_array(
                str(n),
                shape=nxt.shape,
                dtype=np.float32,
                chunks=(shape[0], chunk, chunk),
                fill_value=np.nan,
                dimension_names=["c", "y", "x"],
                overwrite=True,
            )
            da.store(nxt.rechunk((shape[0], chunk, chunk)), z, lock=False, compute=True)
        prev = da.from_zarr(str(group / str(n)))
        n += 1
    return n


def explain_mosaic(
    bundle: str | Path | ModelBundle,
    mosaic: Any,
    out: str | Path,
    method: str | ExplainOptions | None = None,
    target: Any = None,
    layer: str | None = None,
    *,
    options: ExplainOptions | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    scheduler: Any = None,
    **overrides: Any,
) -> Heatmap:
    """Explain every part of ``mosaic`` with ``bundle`` and write the heatmaps to ``out`` (zarr).

    ``options`` (an :class:`~ncm_core.explain.options.ExplainOptions`, also accepted in ``method``'s
    place) and/or its field names as keywords (they win) set how:

    method, target, layer
        As for :func:`ncm_core.explain.methods.explain`. ``target="predicted"`` (classifiers' default) gives one
        map of each tile's own predicted class; ``"top-2"`` two (first and second most probable); a
        class, a list of classes or ``"all"`` one map per class (regression: per target).
    overlap
        Pixels shared by neighbouring tiles (default: a quarter tile); their maps are blended smoothly.
    factor
        Mosaic pixels per heatmap pixel along each axis (default 4; 1 for guided backpropagation).
    window, stride, fill
        Occlusion settings, in model-input pixels.
    batch_size, device, overwrite, resume, retries, retry_delay
        As for :func:`ncm_core.inference.predict.predict_mosaic`.
    scheduler
        Run the blocks on dask.distributed (as for ``predict_mosaic``).
    """
    steps = explain_mosaic_steps(
        bundle, mosaic, out, method, target, layer, options=options, scheduler=scheduler, cancel=cancel, **overrides
    )
    return run_steps(steps, progress, "blocks")
