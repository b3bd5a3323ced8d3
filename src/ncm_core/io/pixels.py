"""Reading a mosaic's pixels into memory, with one line naming the file when they cannot be decoded."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncm_core.errors import NcmError


def read_pixels(mosaic: Any, key: Any = Ellipsis) -> np.ndarray:
    """``mosaic.data[key]`` as a numpy array; a damaged file (a truncated TIFF, a codec error) raises one
    :class:`NcmError` naming the mosaic's source instead of the decoder's exception."""
    try:
        return np.asarray(mosaic.data[key].compute())
    except NcmError:
        raise
    except Exception as exc:  # the decoder's error, whatever its type: the file is damaged
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise NcmError(f"cannot read pixels ({type(exc).__name__}: {first})", mosaic.source) from None
