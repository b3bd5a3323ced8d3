"""Checks of pixels read whole (frames, tiles, crops): a float image with NaN or inf pixels would turn a
training loss, a probability or a heatmap into NaN without a word.

Mosaics are checked block by block as they are read (:mod:`ncm_core.inference.reading`), where only the
tiles that hold such pixels are left out; a frame or tile read whole is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncm_core.errors import NcmError


def check_finite(image: np.ndarray, where: str | Path | None) -> np.ndarray:
    """``image`` unchanged, or an :class:`NcmError` naming ``where`` when it has NaN or inf pixels."""
    if np.issubdtype(image.dtype, np.floating):
        bad = ~np.isfinite(image)
        if bad.any():
            n = int(bad.any(axis=-1).sum()) if image.ndim == 3 else int(bad.sum())
            raise NcmError(f"{n} of the image's pixels are not finite (NaN or inf)", where)
    return image
