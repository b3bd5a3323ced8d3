"""Inpainting: fill masked regions of an image with microstructure that matches their surroundings.

Patch-based texture synthesis (Efros & Leung 1999; Efros & Freeman 2001, "image quilting"), which needs
no training and works on grey-level images and phase maps alike. The masked region is covered by
``patch``-sized windows on a grid of half a patch, each filling its middle half. The window with the
largest known share is filled first (the region fills from its boundary inwards, like peeling an
onion), from a source patch of the unmasked image whose pixels best match the window's known pixels
(sum of squared differences on grey levels, of phase mismatches on a phase map; one of the ``choices``
best at random, so that structure is not copied verbatim). Only masked pixels change.

What it is not: the lost ground truth. Filled regions are statistically like the image around them
(``benchmarks/generate.py`` compares their statistics with those of unmasked regions of the same size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ncm_core.data.phase_images import MAX_PHASES
from ncm_core.errors import NcmError
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output, software_tag
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

Kind = Literal["auto", "grey", "labels"]


@dataclass(frozen=True)
class InpaintOptions:
    """Options of :func:`inpaint`: the one home of their defaults."""

    patch: int = 16  # pixels a side of the copied patches (larger than the structure's features)
    candidates: int = 4000  # source patches compared per window (drawn from the unmasked image)
    choices: int = 3  # one of the best few source patches, at random
    refine: int = 1  # passes that re-fill the seams between patches with patches matched on all sides
    kind: Kind = "auto"  # "labels": a phase map; "grey": grey levels; auto: labels for <= 8 integer values
    seed: int = 0
    overwrite: bool = False


def _box(a: np.ndarray, p: int) -> np.ndarray:
    """Sums of ``a`` over every ``p`` x ``p`` window (top-left indexed)."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int64)
    s[1:, 1:] = np.cumsum(np.cumsum(a, 0), 1)
    return s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]


def _features(win: np.ndarray, phases: np.ndarray | None) -> np.ndarray:
    """Windows ``(n, p, p)`` as vectors compared by squared distance (one-hot for a phase map)."""
    if phases is None:
        return win.reshape(len(win), -1).astype(np.float32)
    return np.concatenate([(win == v).reshape(len(win), -1) for v in phases], axis=1).astype(np.float32)


def _core(y: int, n: int, p: int) -> slice:
    """The part of a window at ``y`` (of ``n`` px) that it fills: its middle half, to the image's edge at the ends."""
    step = max(1, p // 2)
    return slice(0 if y == 0 else p // 4, p if y == n - p else p // 4 + step)


def _grid(n: int, p: int) -> list[int]:
    step = max(1, p // 2)
    pos = list(range(0, n - p + 1, step))
    if pos[-1] != n - p:
        pos.append(n - p)
    return pos


def inpaint_array(
    image: np.ndarray,
    mask: np.ndarray,
    options: InpaintOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> np.ndarray:
    """``image`` with the pixels where ``mask`` is true filled; every other pixel unchanged."""
    o = merge_options(InpaintOptions, options, overrides)
    image, mask = np.asarray(image), np.asarray(mask).astype(bool)
    p = int(o.patch)
    if image.ndim != 2:
        raise NcmError(f"inpainting takes a 2D grey-level image or phase map, got shape {image.shape}")
    if mask.shape != image.shape:
        raise NcmError(f"the mask ({mask.shape[0]} x {mask.shape[1]}) differs in size from the image {image.shape}")
    if mask.all():
        raise NcmError("the mask covers the whole image: nothing is left to match the filled region to")
    if p < 3 or p > min(image.shape):
        raise NcmError(f"patch must be between 3 px and the image's smaller side ({min(image.shape)}), got {p}")
    if o.kind not in ("auto", "grey", "labels"):
        raise NcmError(f"kind must be auto, grey or labels, got {o.kind!r}")
    values = np.unique(image) if o.kind != "grey" else None
    integer = np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.bool_)
    labels = o.kind == "labels" or (o.kind == "auto" and integer and values is not None and len(values) <= MAX_PHASES)
    phases = values if labels else None
    out = image.copy()
    if not mask.any():
        return out
    H, W = image.shape
    clean = _box(mask.astype(np.int64), p) == 0  # windows with no masked pixel: the sources
    ys, xs = np.nonzero(clean)
    if len(ys) == 0:
        raise NcmError(
            f"no {p} x {p} px patch of the image is free of the mask: use a smaller patch (--patch) or a smaller mask"
        )
    rng = np.random.default_rng(o.seed)
    pick = rng.choice(len(ys), min(len(ys), o.candidates), replace=False)
    src = np.stack([image[y : y + p, x : x + p] for y, x in zip(ys[pick], xs[pick])])
    feats = _features(src, phases)
    sq = feats**2 if phases is None else None

    def best(t: np.ndarray, m: np.ndarray) -> np.ndarray:
        """A source patch matching window ``t`` on its pixels where ``m`` (one of the best ``choices``)."""
        w = m.reshape(-1).astype(np.float32)
        if phases is None:
            d = sq @ w - 2 * feats @ (w * t.reshape(-1).astype(np.float32))  # sum of (s - t)^2 on m, less a constant
        else:
            d = -feats @ (np.tile(w, len(phases)) * _features(t[None], phases)[0])  # fewer matching phases: larger
        return src[rng.choice(np.argsort(d)[: max(1, o.choices)])]

    known = ~mask
    cores = [(y, x, _core(y, H, p), _core(x, W, p)) for y in _grid(H, p) for x in _grid(W, p)]
    todo = [c for c in cores if mask[c[0] + c[2].start : c[0] + c[2].stop, c[1] + c[3].start : c[1] + c[3].stop].any()]
    total = int(mask.sum())
    while todo:
        check_cancel(cancel)
        k = int(np.argmax([known[y : y + p, x : x + p].mean() for y, x, _, _ in todo]))
        y, x, cy, cx = todo.pop(k)
        m, t = known[y : y + p, x : x + p], out[y : y + p, x : x + p]
        fill = np.zeros((p, p), bool)
        fill[cy, cx] = True
        fill &= ~m
        t[fill] = best(t, m)[fill]
        m[fill] = True
        report(progress, total - int((~known).sum()), total, "inpainting")
    q, h = p // 4, p // 2  # refinement: windows shifted by a quarter patch, so their middles cover the seams
    for _ in range(o.refine):
        for y in sorted({min(max(g + q, 0), H - p) for g in _grid(H, p)}):
            for x in sorted({min(max(g + q, 0), W - p) for g in _grid(W, p)}):
                fill = np.zeros((p, p), bool)
                fill[q : q + h, q : q + h] = True
                fill &= mask[y : y + p, x : x + p]
                if fill.any():
                    check_cancel(cancel)
                    t = out[y : y + p, x : x + p]
                    t[fill] = best(t, np.ones((p, p), bool))[fill]
    return out


def inpaint(
    image: str | Path,
    mask: str | Path,
    out: str | Path,
    options: InpaintOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Path:
    """Fill the pixels of ``image`` where ``mask`` is non-zero; write a TIFF (or PNG) ``out``."""
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.io.pixels import check_finite, read_pixels

    o = merge_options(InpaintOptions, options, overrides)
    suffix = Path(out).suffix.lower()
    if suffix not in (".tif", ".tiff", ".png"):
        raise NcmError("the output must be a .tif, .tiff or .png file", out)
    img = check_finite(read_pixels(open_mosaic(image)), image)
    m = read_pixels(open_mosaic(mask))
    if m.ndim == 3:
        m = m.any(axis=-1)
    if m.shape != img.shape[:2]:
        raise NcmError(f"the mask ({m.shape[0]} x {m.shape[1]}) differs in size from the image {img.shape[:2]}", mask)
    if img.ndim == 3:
        raise NcmError("inpainting takes a grey-level image or a phase map, not a colour image", image)
    try:
        filled = inpaint_array(img, m > 0, o, progress=progress, cancel=cancel)
    except NcmError as exc:
        if exc.path is None:  # a problem of the mask (it covers everything, it leaves no free patch)
            raise NcmError(str(exc), mask) from None
        raise
    with atomic_output(out, o.overwrite, folder=False, inputs=[image, mask]) as tmp:
        if suffix == ".png":
            from PIL import Image

            Image.fromarray(filled).save(tmp, format="PNG", **software_tag(suffix))
        else:
            import tifffile

            tifffile.imwrite(tmp, filled, **software_tag(suffix))
    return Path(out)
