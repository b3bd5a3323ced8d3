"""Degradation of high-resolution images into low-resolution ones: the training pairs of super-resolution.

``degrade(hr, factor, blur, noise)``: a Gaussian blur of ``blur`` x ``factor`` high-resolution pixels
(sigma; the optics and the larger spot of a cheaper scan), an average over ``factor`` x ``factor``
blocks (the larger pixels), then Gaussian noise of standard deviation ``noise`` (in units of the
normalised intensity range 0..1). The same function makes training pairs, held-out pairs and the
benchmark's low-resolution inputs, so what a model is trained for is what it is tested on.
"""

from __future__ import annotations

import numpy as np


def degrade(
    hr: np.ndarray, factor: int, blur: float = 0.5, noise: float = 0.01, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``hr`` (2D float, cropped to a multiple of ``factor``) -> the low-resolution image (float32)."""
    from scipy.ndimage import gaussian_filter

    H, W = (hr.shape[0] // factor) * factor, (hr.shape[1] // factor) * factor
    x = np.asarray(hr[:H, :W], np.float32)
    if blur > 0:
        x = gaussian_filter(x, blur * factor, mode="reflect")
    lr = x.reshape(H // factor, factor, W // factor, factor).mean(axis=(1, 3))
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        lr = lr + rng.normal(0.0, noise, lr.shape).astype(np.float32)
    return lr.astype(np.float32)
