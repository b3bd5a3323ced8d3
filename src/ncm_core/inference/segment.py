"""Segmenting whole mosaics on the streaming engine: a class per pixel, streamed to an OME-Zarr group.

:func:`segment_mosaic` runs a segmentation bundle (:mod:`ncm_core.models.segmenter`: the forest or the
U-Net) over a mosaic of any size as a pixel-level task (:class:`SegmentTask`, a
:class:`~ncm_core.inference.windows.WindowTask`): overlapping windows whose halo (at least the bundle's
reach) is dropped, cores blended where they overlap, blocks read ahead in a thread, unreadable blocks
retried and recorded, the output written under ``<out>.partial`` and renamed when complete, an
interrupted run resumed where it stopped, and ``scheduler`` running the blocks on dask.distributed:
exactly as :func:`~ncm_core.inference.predict.predict_mosaic` and mosaic heatmaps. Peak memory depends on
the window, block and batch size, never on the mosaic's size.

A block's blended class probabilities never reach the disk at pixel resolution: the block writes its
class map (``argmax + 1``, 0 where no window was computed) and, with ``probabilities``, their means over
``probability_factor`` x ``probability_factor`` pixels. The format is in
:mod:`ncm_core.inference.segmentation`.

Windows stay on the network's grid (window, stride and halo multiples of ``config.multiple``, or half of
it for the halo), and the bundle's fixed normalisation is applied to every window alike, so a pixel's
result does not depend on which block or window it fell in: with a halo at least the segmenter's reach,
the stitched class map equals :func:`predict_image` on the whole image.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.inference import engine
from ncm_core.inference.engine import Block, Context
from ncm_core.inference.options import SegmentOptions
from ncm_core.inference.reading import NONFINITE, REASONS
from ncm_core.inference.segmentation import (
    PROBABILITIES,
    SEGMENTATION_KIND,
    Segmentation,
    is_segmentation,
    open_segmentation,
    rgba,
    write_label_levels,
    write_probability_levels,
)
from ncm_core.inference.windows import WindowGeometry, WindowTask, pad_to
from ncm_core.io.mosaic import open_mosaic
from ncm_core.models.segmenter import CONFIG, Segmenter, load_segmenter
from ncm_core.options import merge_options
from ncm_core.outputs import check_output, check_space
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, run_steps

__all__ = [
    "SegmentOptions",
    "SegmentTask",
    "Segmentation",
    "segment_mosaic",
    "segment_mosaic_steps",
    "predict_image",
    "plan_windows",
    "is_segmentation",
    "open_segmentation",
]
#: options that change how a run goes, not what it writes: left out of the run fingerprint
RUN_ONLY = engine.RUN_ONLY
BLOCK_SIDE = 1024  # default block side (output chunk), rounded to whole strides
FOREST_STRIP_ROWS = 128  # rows of a window a forest predicts between two checks of Cancel


class _Capture:
    """Stands in for the output array of :meth:`WindowTask.process`: keeps the block it is given."""

    value: np.ndarray

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.value = value


@dataclass
class SegmentTask(WindowTask):
    """Class maps of overlapping windows as a pixel-level engine task (picklable for dask)."""

    labels_path: str = "labels/segmentation/0"
    probabilities_path: str | None = None  # None: no probabilities written
    factor: int = 4  # mosaic pixels per probability pixel
    norm: tuple[float, float] | None = None  # the mosaic's own range (per-image normalisation), else the bundle's

    def to_input(self, ctx: Context, windows: np.ndarray) -> np.ndarray:
        """Raw windows ``(n, t, t[, C])`` -> normalised ``(n, C, t, t)`` float32, all scaled alike (the
        bundle's fixed range, or the mosaic's own measured once before the run)."""
        x = windows[:, None] if windows.ndim == 3 else np.moveaxis(windows, -1, 1)
        return ctx.bundle.config.normalize(x, self.norm)

    def run_windows(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        if ctx.bundle.config.engine != "forest" or ctx.cancel is None:
            return ctx.bundle.predict_proba(x)
        seg = ctx.bundle
        if not (hasattr(seg, "features") and hasattr(seg, "predict_features")):
            out = []  # a forest works window by window anyway: a Cancel waits for one window, not a batch
            for k in range(len(x)):
                check_cancel(ctx.cancel)
                out.append(seg.predict_proba(x[k : k + 1]))
            return np.concatenate(out)
        # a 1024 px window takes ~10 s on two cores: its pixels are predicted in strips of rows (a forest is
        # per pixel, so the result is the same), and a Cancel is acted on between strips
        out = []
        for w in np.asarray(x, np.float32):
            check_cancel(ctx.cancel)
            features = seg.features(w)
            strips = []
            for r in range(0, features.shape[1], FOREST_STRIP_ROWS):
                check_cancel(ctx.cancel)
                strips.append(seg.predict_features(features[:, r : r + FOREST_STRIP_ROWS]))
            out.append(np.concatenate(strips, axis=1))
        return np.stack(out)

    def create(self, root: Any) -> None:
        g, c = self.geometry, self.geometry.chunk
        parent, _, name = self.labels_path.rpartition("/")
        root.require_group(parent).create_array(
            name,
            shape=g.out_shape,
            dtype=np.uint8 if self.channels < 255 else np.uint16,
            chunks=(c, c),
            fill_value=0,
            dimension_names=["y", "x"],
            config={"write_empty_chunks": True},  # every chunk stored: an absent one reads as lost
        )
        if self.probabilities_path:
            f = self.factor
            root.require_group(PROBABILITIES).create_array(
                "0",
                shape=(self.channels, -(-g.out_shape[0] // f), -(-g.out_shape[1] // f)),
                dtype=np.float32,
                chunks=(self.channels, c // f, c // f),
                fill_value=np.nan,
                dimension_names=["c", "y", "x"],
            )

    def open_arrays(self) -> Any:
        import zarr

        labels = zarr.open_array(str(self.partial / self.labels_path), mode="r+")
        probs = (
            zarr.open_array(str(self.partial / self.probabilities_path), mode="r+") if self.probabilities_path else None
        )
        return labels, probs

    def process(self, ctx: Context, block: Block, prepared: Any, arrays: Any) -> dict[int, int]:
        capture = _Capture()
        counts = super().process(ctx, block, prepared, capture)
        p = capture.value  # (K, h, w) blended probabilities, NaN where no window was computed
        labels, probs = arrays
        y0, y1, x0, x1 = block.cells
        computed = np.isfinite(p[0])
        labels[y0:y1, x0:x1] = np.where(computed, np.nan_to_num(p).argmax(0) + 1, 0).astype(labels.dtype)
        if probs is not None:
            f = self.factor
            h, w = -(-(y1 - y0) // f), -(-(x1 - x0) // f)
            q = np.full((p.shape[0], h * f, w * f), np.nan, np.float32)
            q[:, : y1 - y0, : x1 - x0] = p
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
                q = np.nanmean(q.reshape(p.shape[0], h, f, w, f), axis=(2, 4))
            probs[:, y0 // f : y0 // f + h, x0 // f : x0 // f + w] = q.astype(np.float32)
        return counts


def plan_windows(config: Any, options: SegmentOptions, shape: tuple[int, int]) -> WindowGeometry:
    """The window geometry of a run: the halo at least the bundle's, everything on the network's grid
    (window and overlap multiples of ``config.multiple``, the halo of half of it), the window no larger than
    the image needs, blocks of whole strides."""
    m = max(1, int(config.multiple))
    halo = int(config.halo if options.halo is None else options.halo)
    if halo < config.halo:
        raise NcmError(
            f"a halo of {halo} px is less than the segmenter's reach ({config.halo} px): the result would "
            "depend on where windows start; give a larger halo or leave it out (the bundle's)"
        )
    half = max(1, m // 2)
    halo = -(-halo // half) * half
    overlap = -(-int(options.overlap) // m) * m
    need = -(-(max(shape) + 2 * halo) // m) * m  # a window that covers the whole image with its halo
    window = min(-(-int(options.window) // m) * m, max(need, m))
    if window - 2 * halo - overlap < m:
        raise NcmError(
            f"windows of {window} px leave no core with a halo of {halo} px and an overlap of {overlap} px: "
            f"give --window {2 * halo + overlap + max(m, 32)} or more"
        )
    stride = window - 2 * halo - overlap
    f = int(options.probability_factor) if options.probabilities else 1
    chunk = int(options.chunk) if options.chunk else stride * max(1, round(BLOCK_SIDE / stride))
    if options.chunk and chunk % f:
        raise NcmError(f"chunk ({chunk} px) must be a multiple of the probability factor ({f})")
    chunk = -(-chunk // f) * f
    return WindowGeometry(tuple(shape), window, halo, overlap, 1, chunk, options.blend)  # type: ignore[arg-type]


def predict_image(
    segmenter: Segmenter, image: np.ndarray, halo: int | None = None, norm: tuple[float, float] | None = None
) -> np.ndarray:
    """Class probabilities ``(K, H, W)`` of a whole image in one pass: ``image`` raw, ``(H, W)`` or
    ``(C, H, W)``, padded by reflection by ``halo`` (default: the segmenter's) on each side and to the
    network's multiple, as the streaming engine pads windows at the mosaic's border. ``norm``: the range to
    scale by (default: the bundle's, or with per-image normalisation the image's own)."""
    c = segmenter.config
    img = np.asarray(image)
    img = img if img.ndim == 3 else img[None]
    norm = c.input_range(img) if norm is None else norm
    H, W = img.shape[1:]
    h = c.halo if halo is None else int(halo)
    m = max(1, int(c.multiple))
    half = max(1, m // 2)
    h = -(-h // half) * half
    ph, pw = -(H + 2 * h) % m, -(W + 2 * h) % m
    big = pad_to(np.moveaxis(img, 0, -1), (-h, H + h + ph, -h, W + h + pw), (H, W))
    x = c.normalize(np.moveaxis(big, -1, 0)[None], norm)
    return segmenter.predict_proba(x)[0][:, h : h + H, h : h + W]


def _load(bundle: Any, device: str) -> tuple[Any, Path | None]:
    """The segmenter and the bundle's folder (None for one in memory)."""
    if isinstance(bundle, (str, Path)):
        seg = load_segmenter(bundle, device="cpu")
        if getattr(seg, "path", None) is None:
            seg.path = Path(bundle)  # type: ignore[attr-defined]
        return seg, Path(bundle)
    path = getattr(bundle, "path", None)
    return bundle, Path(path) if path else None


def fingerprint(seg: Any, path: Path | None, mosaic: Any, settings: dict[str, Any]) -> str:
    """Hash of everything that determines a run's output (weights files, config, options, mosaic)."""
    h = hashlib.sha256()
    if path is not None and path.is_dir():
        for f in sorted(p for p in path.iterdir() if p.is_file() and p.name != CONFIG):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for piece in iter(lambda: fh.read(1 << 20), b""):
                    h.update(piece)
    elif hasattr(getattr(seg, "model", None), "state_dict"):
        for k, v in seg.model.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    blob = {
        **settings,
        "segmenter": type(seg).__qualname__,
        "config": seg.config.to_dict(),
        "source": mosaic.source,
        "shape": list(mosaic.data.shape),
        "dtype": str(mosaic.dtype),
        "engine": engine.ENGINE_FORMAT,
    }
    h.update(json.dumps(blob, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _check(seg: Any, mosaic: Any) -> None:
    c = seg.config
    if mosaic.channels != c.channels:
        raise NcmError(
            f"the mosaic has {mosaic.channels} channel(s) but the segmentation bundle was trained on {c.channels}",
            mosaic.source,
        )
    H, W = mosaic.shape
    if min(H, W) < c.min_size:
        raise NcmError(
            f"the image ({H} x {W} px) is smaller than the segmenter's minimum input ({c.min_size} px a side)",
            mosaic.source,
        )


def segment_mosaic_steps(
    bundle: str | Path | Segmenter,
    mosaic: Any,
    out: str | Path,
    options: SegmentOptions | None = None,
    *,
    scheduler: Any = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Generator[tuple[int, int], None, Path]:
    """Generator form of :func:`segment_mosaic`: yields ``(blocks done, blocks total)``, returns the output path."""
    from ncm_core.devices import resolve_device

    t_start = time.monotonic()
    o = merge_options(SegmentOptions, options, overrides)
    seg, bundle_path = _load(bundle, o.device)
    c = seg.config
    mosaic = open_mosaic(mosaic, pixel_size=o.pixel_size)
    if o.missing_chunks == "fill":
        mosaic = replace(mosaic, missing=None)
    _check(seg, mosaic)
    geometry = plan_windows(c, o, mosaic.shape)
    out = check_output(out, o.overwrite, (bundle_path, mosaic))
    K, (H, W) = len(c.classes), mosaic.shape
    f = o.probability_factor
    check_space(out, int(H * W * (1 + (4 * K / f**2 if o.probabilities else 0)) * 4 / 3), "the segmentation")
    dev = resolve_device(o.device)
    if hasattr(seg, "to"):
        seg.to(dev)
    if scheduler is not None:
        from ncm_core.inference.distributed import check_distributable

        check_distributable(seg, mosaic)
    g = geometry
    data = mosaic.data
    norm = c.input_range(data[None] if data.ndim == 2 else data.transpose(2, 0, 1))  # read once: a sample
    resolved = {"window": g.window, "halo": g.halo, "overlap": g.overlap, "chunk": g.chunk}
    settings = {**engine.options_dict(o, RUN_ONLY), **resolved}
    fp = fingerprint(seg, bundle_path, mosaic, settings)
    s = mosaic.pixel_size or 1.0
    colors = rgba(list(c.colors), list(c.classes))
    world = {"scale": [s, s], "translate": list(mosaic.translate), "unit": mosaic.unit if mosaic.pixel_size else None}
    attrs: dict[str, Any] = {
        "kind": SEGMENTATION_KIND,
        "format_version": 1,
        "complete": False,
        "fingerprint": fp,
        "name": o.name,
        "classes": list(c.classes),
        "colors": [list(v) for v in colors],
        "engine": c.engine,
        **resolved,
        "stride": g.stride,
        "probability_factor": f if o.probabilities else None,
        "pixel_size": mosaic.pixel_size,
        "unit": mosaic.unit,
        "source": mosaic.source,
        "image_shape": [H, W],
        "bundle": {"path": str(bundle_path) if bundle_path else None, "engine": c.engine, "halo": c.halo},
        "normalization": {"mode": c.normalization, "range": list(norm or (c.norm_low, c.norm_high))},
        "world_transform": world,
        "options": engine.options_dict(o),
    }
    labels_path = f"labels/{o.name}/0"
    task = SegmentTask(
        g, K, o.batch_size, labels_path, labels_path, f"{PROBABILITIES}/0" if o.probabilities else None, f, norm
    )
    partial, root, _ = engine.start(out, fp, attrs, task, overwrite=o.overwrite, resume=o.resume)
    failed = yield from engine.execute(
        task,
        Context(seg, mosaic, dev, cancel, requested_device=str(o.device), strict=o.strict),
        retries=o.retries,
        retry_delay=o.retry_delay,
        scheduler=scheduler,
        cancel=cancel,
    )
    engine.settle(failed, o.allow_incomplete, attrs, root, task, mosaic.source or out)
    attrs["not_computed"] = skipped = engine.skipped_counts(root)  # windows left out, by reason
    if skipped.get(REASONS[NONFINITE]):
        n = skipped[REASONS[NONFINITE]]
        warnings.warn(f"{mosaic.source}: {n} window{'s' if n > 1 else ''} left out: {REASONS[NONFINITE]}", stacklevel=2)
    attrs["label_levels"] = write_label_levels(partial, o.name, list(c.classes), colors, world)
    if o.probabilities:
        attrs["probability_levels"] = write_probability_levels(partial, list(c.classes), world, f)
    attrs.update(
        seconds=round(time.monotonic() - t_start, 3),
        device=str(dev),
        n_windows=int(math.prod(g.grid_shape)),
    )
    return engine.complete(root, attrs, partial, out)


def segment_mosaic(
    bundle: str | Path | Segmenter,
    mosaic: Any,
    out: str | Path,
    options: SegmentOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    scheduler: Any = None,
    **overrides: Any,
) -> Path:
    """Segment every pixel of ``mosaic`` with the segmentation bundle ``bundle`` into the OME-Zarr ``out``.

    ``options`` (a :class:`~ncm_core.inference.options.SegmentOptions`) and/or its field names as keywords
    (they win) set how:

    window, halo, overlap, blend
        Window side (mosaic px, rounded up to the network's multiple); context dropped at each side
        (default and minimum: the bundle's reach); pixels shared by neighbouring cores, blended.
    batch_size, chunk, device
        Windows per forward pass; block and output chunk side (default: whole strides near 1024 px).
    probabilities, probability_factor
        Also write the class probabilities, one value per ``probability_factor``\\ :sup:`2` pixels.
    overwrite, resume, retries, retry_delay, strict, allow_incomplete, missing_chunks
        As for :func:`ncm_core.inference.predict.predict_mosaic`.
    scheduler
        Run the blocks on dask.distributed (``"local:N"``, an address or a ``distributed.Client``).

    Returns the output path; :func:`open_segmentation` opens it.
    """
    steps = segment_mosaic_steps(bundle, mosaic, out, options, scheduler=scheduler, cancel=cancel, **overrides)
    return run_steps(steps, progress, "blocks")
