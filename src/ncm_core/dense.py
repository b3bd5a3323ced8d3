"""Dense overlapping prediction: features computed once per block, pooled per tile.

When tiles overlap (stride < tile), evaluating each tile on its own repeats
most of the convolutions. Here a block of tiles is run through the network's
convolutional trunk once (timm's ``forward_features``), and each tile's class
comes from its own window of the feature map through the network's head
(``forward_head``: global pooling and classifier). The window of tile (i, j)
starts ``i * stride`` pixels down, i.e. ``i * stride * (input / tile) / R``
feature cells, where R is the trunk's total stride (32 for ResNets and
EfficientNets), so the stride must map to a whole number of feature cells.

It is an approximation: a tile's features now see the neighbouring pixels
instead of the zero padding at the tile's border. The benchmark reports its
agreement with exact per-tile evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import NcmError
from .tiling import TileGrid


def feature_stride(model: Any, in_chans: int, size: int) -> int:
    """Total downsampling of ``model.forward_features`` at input ``size``."""
    import torch

    with torch.inference_mode():
        f = model.forward_features(torch.zeros(1, in_chans, size, size, device=next(model.parameters()).device))
    if f.ndim != 4 or size % f.shape[-1]:
        raise NcmError(f"dense mode needs a convolutional trunk with a spatial output; got shape {tuple(f.shape)}")
    return size // f.shape[-1]


def check_dense(bundle: Any, grid: TileGrid) -> tuple[float, int]:
    """``(scale, R)`` for dense mode, or a clear error when the grid does not fit the feature map."""
    spec = bundle.config.input
    if spec.input_size[0] != spec.input_size[1]:
        raise NcmError("dense mode needs a square model input")
    scale = spec.input_size[0] / grid.tile
    r = feature_stride(bundle.model, spec.in_chans, spec.input_size[0])
    step = grid.stride * scale / r
    if grid.stride >= grid.tile:
        raise NcmError("dense mode is for overlapping tiles: use a stride smaller than the tile")
    if abs(step - round(step)) > 1e-6 or round(step) < 1:
        raise NcmError(f"dense mode needs a stride that is a whole number of feature cells: the model downsamples "
                       f"by {r} at {spec.input_size[0]} px input, so the stride must be a multiple of "
                       f"{r / scale:g} px (got {grid.stride})")
    return scale, r


def dense_block_probs(bundle: Any, region: np.ndarray, grid: TileGrid, cells: tuple[int, int, int, int],
                      device: Any, scale: float, r: int, channels_last: bool = False,
                      ood: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities ``(rows, cols, classes)`` for the cells of a block from one trunk pass,
    and (with ``ood``) their out-of-distribution ratios ``(rows, cols)``.

    ``region`` is the block's padded pixel region (``TileGrid.region`` of the cells).
    """
    import torch
    import torch.nn.functional as F

    from .preprocess import tiles_to_tensor

    r0, r1, c0, c1 = cells
    spec = bundle.config.input
    h, w = region.shape[:2]
    full = type(spec)(spec.in_chans, (round(h * scale), round(w * scale)), spec.mean, spec.std)
    x = tiles_to_tensor(region[None], full, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model = bundle.model
    k = round(spec.input_size[0] / r)  # feature cells per tile
    step = round(grid.stride * scale / r)
    dev = torch.device(device)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        feats = model.forward_features(x)
        wins = feats.unfold(2, k, step).unfold(3, k, step)  # (1, C, rows, cols, k, k)
        wins = wins[:, :, : r1 - r0, : c1 - c0]
        n_r, n_c = wins.shape[2], wins.shape[3]
        wins = wins.permute(0, 2, 3, 1, 4, 5).reshape(n_r * n_c, feats.shape[1], k, k)
        logits = model.forward_head(wins).float()
        ratio = None
        if ood:
            from .ood import ood_ratio

            ratio = ood_ratio(bundle, model.forward_head(wins, pre_logits=True)).reshape(n_r, n_c).cpu().numpy()
    return F.softmax(logits, dim=1).reshape(n_r, n_c, -1).cpu().numpy(), ratio
