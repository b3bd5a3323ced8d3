"""Training augmentations: one vocabulary per task, one parser, and the regression batch transform.

* classification (tiles): ``flip`` (left-right mirror) and ``rot90`` (quarter turns), applied to
  each tile by :func:`ncm_core.data.datasets.augment_tiles`;
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
AUGMENTATIONS: dict[str, tuple[str, ...]] = {"classify": ("flip", "rot90"), "regress": ("shift", "rotate", "hflip")}


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
