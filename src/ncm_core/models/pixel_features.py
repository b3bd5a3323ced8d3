"""Multiscale pixel features for the forest segmenter: Gaussian derivatives of each channel at several scales.

For each channel and each ``sigma`` (px): the smoothed intensity (``intensity``), the gradient magnitude
(``edges``), the two eigenvalues of the Hessian (``texture``: ridges, blobs, corners), and the difference of
Gaussians to the next finer scale (``dog``; the raw image is the finest, so a local contrast at every scale);
plus the raw intensity. All are computed from ``gaussian_filter1d`` along rows then columns, with
``mode="mirror"`` and ``truncate`` standard deviations, so a pixel's features depend only on the pixels
within :func:`feature_halo` of it: a window cut with that halo gives its core the same features, bit for
bit, as the whole image. At the image's own borders scipy's ``"mirror"`` is numpy's ``"reflect"``, the
padding of the streaming engine (:func:`ncm_core.inference.windows.pad_to`), so a window padded there by
the engine, a window clipped at the border (live mode) and the whole image agree too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROUPS: tuple[str, ...] = ("intensity", "edges", "texture", "dog")
TRUNCATE = 4.0
_PER_GROUP = {"intensity": 1, "edges": 1, "texture": 2, "dog": 1}


def feature_halo(sigmas: Sequence[float], truncate: float = TRUNCATE) -> int:
    """Pixels of context on each side that a pixel's features depend on (the largest filter's radius)."""
    return int(truncate * max(sigmas) + 0.5)


def feature_names(channels: int, sigmas: Sequence[float], groups: Sequence[str] = GROUPS) -> list[str]:
    """Names of the features :func:`pixel_features` returns, in order."""
    names = []
    for c in range(channels):
        names.append(f"c{c}_raw")
        for s in sigmas:
            for g in GROUPS:
                if g not in groups:
                    continue
                if g == "texture":
                    names += [f"c{c}_hessian1_s{s:g}", f"c{c}_hessian2_s{s:g}"]
                else:
                    names.append(f"c{c}_{g}_s{s:g}")
    return names


def _derivatives(img: np.ndarray, sigma: float, orders: set[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """Gaussian derivatives of order (rows, columns) of one 2D image, sharing the row passes."""
    from scipy.ndimage import gaussian_filter1d

    out = {}
    for oy in sorted({o[0] for o in orders}):
        rows = gaussian_filter1d(img, sigma, axis=0, order=oy, mode="mirror", truncate=TRUNCATE)
        for ox in sorted(o[1] for o in orders if o[0] == oy):
            out[(oy, ox)] = gaussian_filter1d(rows, sigma, axis=1, order=ox, mode="mirror", truncate=TRUNCATE)
    return out


def pixel_features(
    image: np.ndarray, sigmas: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0), groups: Sequence[str] = GROUPS
) -> np.ndarray:
    """``(C, H, W)`` normalised image -> ``(F, H, W)`` float32 features (:func:`feature_names` order)."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    orders = {(0, 0)}
    if "edges" in groups:
        orders |= {(1, 0), (0, 1)}
    if "texture" in groups:
        orders |= {(2, 0), (0, 2), (1, 1)}
    n = len(feature_names(1, sigmas, groups))
    out = np.empty((image.shape[0] * n, *image.shape[1:]), np.float32)
    k = 0
    for ch in image:
        out[k] = ch
        k += 1
        finer = ch
        for s in sigmas:
            d = _derivatives(ch, float(s), orders)
            g = d[(0, 0)]
            if "intensity" in groups:
                out[k] = g
                k += 1
            if "edges" in groups:
                out[k] = np.hypot(d[(1, 0)], d[(0, 1)]) * s  # scale-normalised
                k += 1
            if "texture" in groups:
                a, b, c = d[(2, 0)], d[(0, 2)], d[(1, 1)]
                mean, root = (a + b) / 2, np.sqrt(((a - b) / 2) ** 2 + c * c)
                out[k] = (mean + root) * s * s
                out[k + 1] = (mean - root) * s * s
                k += 2
            if "dog" in groups:
                out[k] = finer - g
                k += 1
            finer = g
    return out
