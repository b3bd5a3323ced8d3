"""Pixels read into memory whole (frames, tiles, crops, section overviews): one line naming the file when
they cannot be decoded, or when a float image holds NaN or inf pixels (which would turn a training loss, a
probability or a heatmap into NaN without a word).

Mosaics are checked block by block as they are read (:mod:`ncm_core.inference.reading`), where only the
tiles that hold such pixels are left out; a frame or tile read whole is refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError


def read_pixels(mosaic: Any, key: Any = Ellipsis) -> np.ndarray:
    """``mosaic.data[key]`` as a numpy array; a damaged file (a truncated TIFF, a codec error) raises one
    :class:`NcmError` naming the mosaic's source instead of the decoder's exception."""
    try:
        from dask.threaded import get

        # the scheduler as a function: by name or by default, dask imports dask.distributed to look for a
        # client (half a second, and a short prediction must import nothing heavy: tests/test_light_predict)
        return np.asarray(mosaic.data[key].compute(scheduler=get))
    except NcmError:
        raise
    except Exception as exc:  # the decoder's error, whatever its type: the file is damaged
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise NcmError(f"cannot read pixels ({type(exc).__name__}: {first})", mosaic.source) from None


def check_finite(image: np.ndarray, where: str | Path | None) -> np.ndarray:
    """``image`` unchanged, or an :class:`NcmError` naming ``where`` when it has NaN or inf pixels."""
    if np.issubdtype(image.dtype, np.floating):
        bad = ~np.isfinite(image)
        if bad.any():
            n = int(bad.any(axis=-1).sum()) if image.ndim == 3 else int(bad.sum())
            raise NcmError(f"{n} of the image's pixels are not finite (NaN or inf)", where)
    return image
