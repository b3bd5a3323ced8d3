"""Turning image tiles into model input, the same way in training and prediction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """How tiles become tensors.

    Intensities are scaled to [0, 1] by the pixel type's range (uint8 / 255,
    uint16 / 65535; floats unchanged), channels converted to ``in_chans``
    (gray is repeated to RGB; RGB is averaged to gray), resized to
    ``input_size`` when the tile differs, then normalised by ``mean``/``std``
    only when given (the SEM study found normalisation hurt; it is off by default).

    ``standardize`` (low, high percentiles, e.g. ``(1, 99)``): each tile on its own is mapped so that its
    low percentile becomes 0 and its high one 1, before ``mean``/``std``. The brightness and contrast of
    a microscope session then no longer tell the classes apart (:mod:`ncm_core.training.recipe`).
    """

    in_chans: int = 1
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    standardize: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "in_chans": self.in_chans,
            "input_size": list(self.input_size),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "standardize": None if self.standardize is None else list(self.standardize),
        }

    def channel_note(self, channels: int) -> str | None:
        """What happens to an image of ``channels`` channels (1 = gray) given to this model, in words;
        None when it needs no conversion. Shown to the user, so that no conversion is silent."""
        if channels == self.in_chans or channels not in (1, 3, 4):
            return None
        if self.in_chans == 1:
            return "the colour image is averaged to gray: this model was trained on grayscale images"
        return f"the gray image is repeated to {self.in_chans} channels: this model was trained on colour images"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        return cls(
            int(d["in_chans"]),
            tuple(d["input_size"]),
            None if d.get("mean") is None else tuple(d["mean"]),
            None if d.get("std") is None else tuple(d["std"]),
            None if d.get("standardize") is None else tuple(float(v) for v in d["standardize"]),
        )


def intensity_scale(dtype: np.dtype) -> float:
    """Divisor that maps the pixel type's range to [0, 1]."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


#: the percentiles of per-tile standardisation (InputSpec.standardize) the training recipe uses
STANDARD_PERCENTILES: tuple[float, float] = (1.0, 99.0)


def standardize_tiles(x: np.ndarray, percentiles: tuple[float, float] = STANDARD_PERCENTILES) -> np.ndarray:
    """Float tiles ``(N, h, w, C)`` each mapped so that its ``percentiles`` (over all its pixels and
    channels) become 0 and 1; a flat tile becomes 0."""
    n = len(x)
    if n == 0:
        return x
    lo, hi = np.percentile(x.reshape(n, -1), list(percentiles), axis=1).astype(np.float32)
    span = hi - lo
    scale = np.where(span > 1e-6, 1.0 / np.maximum(span, 1e-6), 0.0).astype(np.float32)
    return (x - lo[:, None, None, None]) * scale[:, None, None, None]


def tiles_to_array(tiles: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Tiles ``(N, h, w[, C])`` -> float32 ``(N, h, w, in_chans)``: intensity scaling, channel
    conversion and normalisation, at the tiles' own size.

    Plain numpy keeps background threads off torch's thread pool, which the
    model uses at the same time.
    """
    x = tiles.astype(np.float32)
    x *= np.float32(1.0 / intensity_scale(tiles.dtype))
    if x.ndim == 3:
        x = x[..., None]
    elif x.shape[-1] == 4:  # drop alpha
        x = x[..., :3]
    c = x.shape[-1]
    if c != spec.in_chans:
        x = x.mean(axis=-1, keepdims=True) if spec.in_chans == 1 else np.repeat(x, 3, axis=-1) if c == 1 else x[..., :3]
    if spec.standardize is not None:
        x = standardize_tiles(x, spec.standardize)
    if spec.mean is not None and spec.std is not None:
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def tiles_to_tensor(tiles: np.ndarray, spec: InputSpec, device: Any = "cpu", channels_last: bool = False):
    """``(N, h, w)`` or ``(N, h, w, C)`` tiles -> float tensor ``(N, in_chans, H, W)`` at ``spec.input_size``.

    Everything but the resize is done by :func:`tiles_to_array` (normalising
    and resizing commute: both are linear per channel); the NHWC array is
    channels-last memory as it stands.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(tiles_to_array(tiles, spec)).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(spec.input_size):
        x = F.interpolate(x, size=tuple(spec.input_size), mode="bilinear", align_corners=False, antialias=True)
    x = x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return x.to(device, non_blocking=True)
