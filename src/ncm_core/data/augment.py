"""Training augmentations: one vocabulary per task, one parser, and the regression batch transform.

* classification (tiles): ``flip`` (left-right mirror) and ``rot90`` (quarter turns); ``scale`` (zoom by
  up to 1.25x either way); the looks of a microscope session: ``intensity`` (brightness, contrast,
  gamma), ``blur`` (focus), ``noise`` and ``jpeg`` (compression quality), applied to each tile by
  :func:`augment_tiles` (and ``ncm_core.data.datasets.random_crops``), all
  drawn from the generator given, so the same seed gives the same tiles;
* regression (cross-section crops): ``shift``, ``rotate`` (small angles) and ``hflip``, applied to
  a batch tensor by :func:`augment_batch`, with mirror fill at the edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from ncm_core.errors import NcmError

AugmentTask = Literal["classify", "regress"]

#: The augmentations each task knows, in the order they are applied and recorded.
AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    "classify": ("flip", "rot90", "scale", "intensity", "blur", "noise", "jpeg"),
    "regress": ("shift", "rotate", "hflip"),
}
#: the classification augmentations that change a tile's look, not its geometry
LOOKS: tuple[str, ...] = ("intensity", "blur", "noise", "jpeg")

#: the ranges the random look and scale changes are drawn from (uniformly; factors log-uniformly)
SCALE_RANGE = 1.25  # zoom factor in [1/1.25, 1.25]
BRIGHTNESS = 0.1  # offset in [-0.1, 0.1] of the intensity range
CONTRAST = 1.4  # factor about the tile's mean in [1/1.4, 1.4]
GAMMA = 1.5  # exponent in [1/1.5, 1.5]
BLUR_SIGMA = 1.2  # Gaussian sigma in [0, 1.2] px
NOISE_STD = 0.04  # Gaussian noise, standard deviation in [0, 0.04] of the intensity range
JPEG_QUALITY = (30, 95)  # quality in this range, for half of the tiles (the others are left uncompressed)


def parse_augment(value: bool | str | Iterable[str] | None, task: AugmentTask = "classify") -> tuple[str, ...]:
    """Augmentations as a tuple of names of ``task``'s vocabulary.

    ``True`` is all of them, ``False``/``None``/``"none"`` none, ``"flip,rot90"`` or ``("hflip",)`` a selection.
    """
    vocab = AUGMENTATIONS[task]
    if value is True:
        return vocab
    if value is False or value is None or value in ("", "none"):
        return ()
    items = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    unknown = [v for v in items if v not in vocab]
    if unknown:
        raise NcmError(f"unknown augmentation {unknown[0]!r}; choose some of {', '.join(vocab)} or none")
    return tuple(a for a in vocab if a in items)


def augment_batch(
    x: Any, rng: np.random.Generator, ops: Sequence[str], max_shift: float = 0.1, max_rotate: float = 10.0
) -> Any:
    """Random shifts (up to ``max_shift`` of the size), rotations (up to ``max_rotate`` degrees) and
    left-right mirror images of a batch ``(N, C, H, W)``, with mirror fill at the edges."""
    import torch
    import torch.nn.functional as F

    if not ops:
        return x
    n, _, h, w = x.shape
    ang = np.radians(rng.uniform(-max_rotate, max_rotate, n)) if "rotate" in ops else np.zeros(n)
    sh = rng.uniform(-max_shift, max_shift, (n, 2)) * 2 if "shift" in ops else np.zeros((n, 2))  # normalised units
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0) if "hflip" in ops else np.ones(n)
    c, s = np.cos(ang), np.sin(ang)
    # rotation in pixel space, expressed in grid_sample's normalised coordinates (x: w/2, y: h/2 per unit)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = c * flip, -s * h / w
    theta[:, 1, 0], theta[:, 1, 1] = s * w / h * flip, c
    theta[:, :, 2] = sh
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _log_uniform(rng: np.random.Generator, limit: float) -> float:
    return float(np.exp(rng.uniform(-np.log(limit), np.log(limit))))


def _range(dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


def resize_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` float32 copy of a tile ``(h, w[, C])`` (bilinear with antialiasing, PIL)."""
    from PIL import Image

    t = tile.astype(np.float32)
    if t.shape[0] == size and t.shape[1] == size:
        return t
    chans = [t] if t.ndim == 2 else [t[..., k] for k in range(t.shape[2])]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((size, size), Image.BILINEAR)) for c in chans]
    return out[0] if t.ndim == 2 else np.stack(out, -1)


def zoom_tile(tile: np.ndarray, rng: np.random.Generator, limit: float = SCALE_RANGE) -> np.ndarray:
    """A random zoom of a square tile by a factor in ``[1/limit, limit]``, same size: zooming in enlarges
    a random part of it, zooming out shrinks it with mirrored edges around it (float32)."""
    t = tile.shape[0]
    f = _log_uniform(rng, limit)
    side = max(2, round(t / f))
    if side <= t:
        y0, x0 = rng.integers(0, t - side + 1, 2)
        part = tile[y0 : y0 + side, x0 : x0 + side]
    else:
        pad = [((side - t) // 2, side - t - (side - t) // 2)] * 2 + [(0, 0)] * (tile.ndim - 2)
        part = np.pad(tile, pad, mode="symmetric")
    return resize_tile(part, t)


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """``x`` in [0, 1] (``(h, w)`` or ``(h, w, 3)``) through JPEG at ``quality`` (PIL), back in [0, 1]."""
    import io

    from PIL import Image

    img = np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] not in (3,):
        return np.stack([_jpeg(x[..., k], quality) for k in range(x.shape[2])], -1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf), dtype=np.float32) / 255.0


def change_looks(tiles: np.ndarray, rng: np.random.Generator, ops: Sequence[str]) -> np.ndarray:
    """Tiles ``(N, h, w[, C])`` each with a random session look: the ``ops`` of :data:`LOOKS` that are
    selected, in that order (brightness/contrast/gamma, focus blur, noise, JPEG), on intensities scaled
    to [0, 1]; returned in the tiles' own pixel type. The parameters are drawn for all tiles at once."""
    from scipy.ndimage import gaussian_filter

    n = len(tiles)
    if n == 0 or not any(o in ops for o in LOOKS):
        return tiles
    dtype = tiles.dtype
    scale = _range(dtype)
    x = tiles.astype(np.float32) / np.float32(scale)
    per_tile = (n,) + (1,) * (x.ndim - 1)
    if "intensity" in ops:
        gamma = np.exp(rng.uniform(-np.log(GAMMA), np.log(GAMMA), n)).astype(np.float32).reshape(per_tile)
        contrast = np.exp(rng.uniform(-np.log(CONTRAST), np.log(CONTRAST), n)).astype(np.float32).reshape(per_tile)
        offset = rng.uniform(-BRIGHTNESS, BRIGHTNESS, n).astype(np.float32).reshape(per_tile)
        x = np.clip(x, 0, 1) ** gamma
        m = x.reshape(n, -1).mean(1).reshape(per_tile)
        x = (x - m) * contrast + m + offset
    if "blur" in ops:
        sigma = rng.uniform(0, BLUR_SIGMA, n)
        x = np.stack([gaussian_filter(t, sigma=(s, s) + (0,) * (t.ndim - 2)) for t, s in zip(x, sigma)])
    if "noise" in ops:
        std = rng.uniform(0, NOISE_STD, n).astype(np.float32).reshape(per_tile)
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * std
    if "jpeg" in ops:
        quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, n)
        chosen = rng.random(n) < 0.5
        x = np.stack([_jpeg(t, int(q)) if c else t for t, q, c in zip(x, quality, chosen)])
    if np.issubdtype(dtype, np.integer):
        return np.round(np.clip(x, 0, 1) * scale).astype(dtype)
    return (x * np.float32(scale)).astype(dtype)


def turn_and_zoom(tile: np.ndarray, rng: np.random.Generator, ops: Sequence[str]) -> np.ndarray:
    """One square tile with the selected geometric augmentations: quarter turn, mirror, zoom."""
    if "rot90" in ops:
        tile = np.rot90(tile, rng.integers(4))
    if "flip" in ops and rng.random() < 0.5:
        tile = tile[:, ::-1]
    if "scale" in ops:
        z = zoom_tile(tile, rng)
        tile = np.round(z).astype(tile.dtype) if np.issubdtype(tile.dtype, np.integer) else z.astype(tile.dtype)
    return np.ascontiguousarray(tile)


def augment_tiles(tiles: np.ndarray, rng: np.random.Generator, ops: Sequence[str]) -> np.ndarray:
    """Square tiles ``(N, t, t[, C])`` with the selected classification augmentations (``ops`` of
    ``AUGMENTATIONS["classify"]``): quarter turn, mirror and zoom of each tile, then the session looks."""
    if not ops:
        return tiles
    out = np.stack([turn_and_zoom(t, rng, ops) for t in tiles])
    return change_looks(out, rng, ops)
