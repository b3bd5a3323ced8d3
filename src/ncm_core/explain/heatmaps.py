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

Like :func:`ncm_core.inference.predict.predict_mosaic`, the group is written under
``<out>.partial`` and renamed when complete, and running the same command
again after an interruption computes only the missing blocks.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator

import numpy as np

from ncm_core.models.bundle import ModelBundle, load_bundle
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import Mosaic, ngff_multiscales, open_mosaic
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, run_steps
from ncm_core.data.tiling import TileGrid, extract_tiles

HEATMAP_KIND = "ncm-explanation"
__all__ = ["Heatmap", "explain_mosaic", "explain_mosaic_steps", "open_heatmap", "is_heatmap", "blend_weight",
           "tile_at"]


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
    return Heatmap(path, list(a["names"]), a["method"], bool(a["signed"]), int(a["factor"]),
                   [tuple(v) for v in a["limits"]], a)


def tile_at(bundle: ModelBundle, mosaic: Mosaic, y: float, x: float) -> tuple[int, int, int] | None:
    """``(y0, x0, T)`` of the bundle-sized tile (on the non-overlapping grid from the origin, the last row and
    column moved inside the image) that holds pixel (y, x); None outside the image."""
    from ncm_core.inference.predict import tile_size_for

    T = tile_size_for(bundle, mosaic)
    H, W = mosaic.shape
    if H < T or W < T:
        raise NcmError(f"the image ({H} x {W} px) is smaller than one tile ({T} px)", mosaic.source)
    if not (0 <= y < H and 0 <= x < W):
        return None
    return min(int(y // T) * T, H - T), min(int(x // T) * T, W - T), T


def blend_weight(n: int, ramp: int) -> np.ndarray:
    """1-D blending weight: a raised-cosine ramp of ``ramp`` samples at both ends, 1 in between (never 0)."""
    w = np.ones(n, np.float32)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        r = 0.5 * (1 - np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp))
        w[:ramp], w[n - ramp:] = r, r[::-1]
    return w


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


def _fingerprint(bundle: ModelBundle, mosaic: Mosaic, settings: dict[str, Any]) -> str:
    import hashlib
    import json

    from ncm_core.inference.predict import hash_weights

    h = hashlib.sha256()
    hash_weights(bundle, h)
    h.update(json.dumps({**settings, "source": mosaic.source, "shape": list(mosaic.data.shape),
                         "dtype": str(mosaic.dtype)}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def explain_mosaic_steps(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, method: str = "gradcam", target: Any = None,
    layer: str | None = None, *, overlap: int | None = None, factor: int | None = None, batch_size: int = 16,
    window: tuple[int, int] = (7, 7), stride: tuple[int, int] | None = None, fill: Any = "mean",
    block_pixels: int = 2048, device: str = "auto", overwrite: bool = False, resume: bool = True,
    cancel: CancelFlag = None,
) -> Generator[tuple[int, int], None, Heatmap]:
    """Generator form of :func:`explain_mosaic`: yields ``(blocks done, blocks total)``, returns the :class:`Heatmap`."""
    import torch
    import zarr

    from ncm_core.explain.methods import LAYERED, SIGNED, check_method, explain_tensor, resolve_layer
    from ncm_core.inference.predict import open_partial, tile_size_for
    from ncm_core.models.preprocess import tiles_to_tensor
    from ncm_core.devices import resolve_device

    t_start = time.monotonic()
    method = check_method(method)
    bundle = load_bundle(bundle)
    mosaic = open_mosaic(mosaic)
    c = bundle.config
    if c.input.input_size[0] != c.input.input_size[1]:
        raise NcmError(f"explain_mosaic tiles the mosaic in squares, but this model takes {c.input.input_size[0]} x "
                       f"{c.input.input_size[1]} inputs; explain its crops instead (ncm explain BUNDLE CROPS_DIR OUT)",
                       bundle.path)
    T = tile_size_for(bundle, mosaic)
    overlap = T // 4 if overlap is None else int(overlap)
    if not 0 <= overlap < T:
        raise NcmError(f"overlap must be between 0 and the tile size ({T} px), got {overlap}")
    f = (1 if method in ("guided-backprop", "guided-gradcam") else 4) if factor is None else int(factor)
    S = T - overlap
    if f < 1 or T % f or S % f:
        raise NcmError(f"factor {f} must divide the tile ({T} px) and the stride ({S} px = tile - overlap)")
    grid = TileGrid(mosaic.shape, T, S, (0, 0), "pad")
    out = Path(out)
    if out.exists() and not overwrite:
        raise NcmError("output exists; pass overwrite=True (CLI: --overwrite) to replace it", out)
    dev = resolve_device(device)
    bundle.model.to(dev).eval()
    spec = (c.input.in_chans, *c.input.input_size)
    if method in LAYERED:
        layer = resolve_layer(bundle.model, layer, spec)
    names = _map_names(bundle, target)
    K = len(names)
    H, W = mosaic.shape
    hh, hw = -(-H // f), -(-W // f)
    chunk = max(64, block_pixels // f)
    nb = (-(-hh // chunk), -(-hw // chunk))
    if method == "occlusion" and (window[0] > c.input.input_size[0] or window[1] > c.input.input_size[1]):
        raise NcmError(f"the tile ({c.input.input_size[0]} px at the model's input size) is smaller than the "
                       f"occlusion window ({window[0]} x {window[1]} px); use a smaller window")
    s_px = mosaic.pixel_size or 1.0
    scale = (s_px * f, s_px * f)
    trans = (mosaic.translate[0] + s_px * (f - 1) / 2, mosaic.translate[1] + s_px * (f - 1) / 2)
    unit = mosaic.unit if mosaic.pixel_size else None
    settings = {"method": method, "target": target, "layer": layer, "tile": T, "overlap": overlap, "factor": f,
                "window": list(window), "stride": list(stride or window), "fill": fill, "chunk": chunk,
                "input": c.input.to_dict(), "batch": batch_size}
    fp = _fingerprint(bundle, mosaic, settings)
    attrs: dict[str, Any] = {
        "kind": HEATMAP_KIND, "format_version": 1, "complete": False, "fingerprint": fp, "method": method,
        "layer": layer, "names": names, "signed": method in SIGNED, "factor": f, "tile": T, "overlap": overlap,
        "target": target if isinstance(target, (str, type(None))) else list(target), "task": c.task,
        "pixel_size": mosaic.pixel_size, "unit": mosaic.unit, "source": mosaic.source, "image_shape": [H, W],
        "bundle": {"path": str(bundle.path) if bundle.path else None, "architecture": c.architecture},
        "world_transform": {"scale": list(scale), "translate": list(trans)},
        "occlusion": {"window": list(window), "stride": list(stride or window)} if method == "occlusion" else None,
    }
    partial, root = open_partial(out, fp, resume)
    if root is None:
        root = zarr.open_group(str(partial), mode="w", zarr_format=3)
        mg = root.create_group("maps")
        mg.create_array("0", shape=(K, hh, hw), dtype=np.float32, chunks=(K, chunk, chunk), fill_value=np.nan,
                        dimension_names=["c", "y", "x"])
        root.create_array("blocks", shape=nb, dtype=np.uint8, chunks=(1, 1), fill_value=0,
                          dimension_names=["y", "x"])
        root.attrs["ncm"] = attrs
    maps = zarr.open_array(str(partial / "maps" / "0"), mode="r+")
    status = zarr.open_array(str(partial / "blocks"), mode="r+")
    done = np.asarray(status[:])
    todo = [(i, j) for i in range(nb[0]) for j in range(nb[1]) if done[i, j] != 1]
    n_done = nb[0] * nb[1] - len(todo)
    tf = T // f
    wt = np.outer(blend_weight(tf, overlap // f), blend_weight(tf, overlap // f))
    rows, cols = grid.shape
    yield n_done, nb[0] * nb[1]
    for bi, bj in todo:
        check_cancel(cancel)
        y0, y1 = bi * chunk, min(hh, (bi + 1) * chunk)  # heatmap pixels
        x0, x1 = bj * chunk, min(hw, (bj + 1) * chunk)
        # tiles whose footprint [i*S, i*S+T) meets mosaic rows [y0*f, y1*f)
        r0, r1 = max(0, -(-(y0 * f - T + 1) // S)), min(rows, (y1 * f - 1) // S + 1)
        c0, c1 = max(0, -(-(x0 * f - T + 1) // S)), min(cols, (x1 * f - 1) // S + 1)
        py0, py1, px0, px1 = grid.region(r0, r1, c0, c1)
        try:
            region = np.asarray(mosaic.data[py0:min(py1, H), px0:min(px1, W)].compute(scheduler="synchronous"))
        except Exception as exc:
            raise NcmError(f"cannot read pixels y {py0}:{min(py1, H)}, x {px0}:{min(px1, W)} "
                           f"({type(exc).__name__}: {str(exc)[:200]})", mosaic.source) from None
        tiles = extract_tiles(region, grid, r0, r1, c0, c1)
        nr, nc = tiles.shape[:2]
        tiles = tiles.reshape(nr * nc, *tiles.shape[2:])
        acc = np.zeros((K, y1 - y0, x1 - x0), np.float64)
        wsum = np.zeros((y1 - y0, x1 - x0), np.float64)
        for k0 in range(0, len(tiles), batch_size):
            check_cancel(cancel)
            x = tiles_to_tensor(np.ascontiguousarray(tiles[k0:k0 + batch_size]), c.input, dev)
            ex = explain_tensor(bundle, x, method, target, layer, size=(tf, tf), batch_size=batch_size,
                                window=window, stride=stride, fill=fill, cancel=cancel)
            for n in range(len(x)):
                i, j = divmod(k0 + n, nc)
                ty, tx = (r0 + i) * S // f - y0, (c0 + j) * S // f - x0  # tile origin in block coordinates
                sy0, sy1 = max(0, -ty), min(tf, y1 - y0 - ty)
                sx0, sx1 = max(0, -tx), min(tf, x1 - x0 - tx)
                if sy1 <= sy0 or sx1 <= sx0:
                    continue
                w = wt[sy0:sy1, sx0:sx1]
                acc[:, ty + sy0:ty + sy1, tx + sx0:tx + sx1] += ex.maps[n][:, sy0:sy1, sx0:sx1] * w
                wsum[ty + sy0:ty + sy1, tx + sx0:tx + sx1] += w
        with np.errstate(invalid="ignore", divide="ignore"):
            maps[:, y0:y1, x0:x1] = np.where(wsum > 0, acc / wsum, np.nan).astype(np.float32)
        status[bi, bj] = 1  # after the data: a crash in between only repeats this block
        n_done += 1
        yield n_done, nb[0] * nb[1]
    attrs["limits"] = _limits(maps, method in SIGNED)
    n_levels = _write_levels(partial / "maps", (K, hh, hw), chunk)
    mg = zarr.open_group(str(partial / "maps"), mode="r+")
    mg.attrs["ome"] = {"version": "0.5", "multiscales": [
        ngff_multiscales(n_levels, scale, trans, leading=("c",), unit=unit, name=f"{method} heatmap")],
        "omero": {"channels": [{"label": n, "window": {"start": lo, "end": hi, "min": lo, "max": hi}}
                               for n, (lo, hi) in zip(names, attrs["limits"])]}}
    attrs.update(complete=True, seconds=round(time.monotonic() - t_start, 3), device=str(dev),
                 torch=torch.__version__, n_tiles=int(grid.size))
    root.attrs["ncm"] = attrs
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    return open_heatmap(out)


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
                str(n), shape=nxt.shape, dtype=np.float32, chunks=(shape[0], chunk, chunk), fill_value=np.nan,
                dimension_names=["c", "y", "x"], overwrite=True)
            da.store(nxt.rechunk((shape[0], chunk, chunk)), z, lock=False, compute=True)
        prev = da.from_zarr(str(group / str(n)))
        n += 1
    return n


def explain_mosaic(
    bundle: str | Path | ModelBundle, mosaic: Any, out: str | Path, method: str = "gradcam", target: Any = None,
    layer: str | None = None, *, progress: ProgressFn | None = None, cancel: CancelFlag = None, **kwargs: Any,
) -> Heatmap:
    """Explain every part of ``mosaic`` with ``bundle`` and write the heatmaps to ``out`` (zarr).

    Parameters
    ----------
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
    batch_size, device, overwrite, resume
        As for :func:`ncm_core.inference.predict.predict_mosaic`.
    """
    return run_steps(explain_mosaic_steps(bundle, mosaic, out, method, target, layer, cancel=cancel, **kwargs),
                     progress, "blocks")
