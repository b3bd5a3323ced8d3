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
instead of the zero padding at the tile's border. Where that matters most -
tiles the model is unsure about - ``recheck`` evaluates the tile exactly: a
tile whose two most probable classes are closer than ``recheck`` (in
probability) is cut out and run through the whole network on its own, so
its result is the exact one. The benchmark reports the agreement with exact
per-tile evaluation and the share of tiles rechecked.

The trunk must be local: a global operation inside it (squeeze-and-excitation
in EfficientNet, attention) would pool over the whole block instead of the
tile. :func:`check_local` changes one corner of a probe input and checks that
the feature cell in the opposite corner stays exactly the same, and refuses
other networks with a clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ncm_core.data.tiling import TileGrid, extract_tiles
from ncm_core.errors import NcmError


@dataclass(frozen=True)
class DenseGeometry:
    """How tiles map onto the trunk's feature map in dense mode (picklable for dask workers)."""

    scale: float  # model input pixels per mosaic pixel
    stride: int  # the trunk's total downsampling R (model input pixels per feature cell)
    recheck: float = 0.0  # evaluate tiles exactly whose top-2 probability margin is below this


def feature_stride(model: Any, in_chans: int, size: int) -> int:
    """Total downsampling of ``model.forward_features`` at input ``size``."""
    import torch

    with torch.inference_mode():
        f = model.forward_features(torch.zeros(1, in_chans, size, size, device=next(model.parameters()).device))
    if f.ndim != 4 or size % f.shape[-1]:
        raise NcmError(f"dense mode needs a convolutional trunk with a spatial output; got shape {tuple(f.shape)}")
    return size // f.shape[-1]


def check_local(model: Any, in_chans: int, input_size: int) -> None:
    """A clear error when the trunk is not local: on a probe of 4 x 4 tiles (at least 512 px), changing
    the top-left quarter must leave the bottom-right feature cell exactly as it was."""
    import torch

    probe = min(1024, max(512, 4 * input_size))
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, in_chans, probe, probe, generator=g)
    y = x.clone()
    y[..., : probe // 4, : probe // 4] = torch.rand(1, in_chans, probe // 4, probe // 4, generator=g)
    with torch.inference_mode():
        a = model.forward_features(x.to(dev))[..., -1, -1]
        b = model.forward_features(y.to(dev))[..., -1, -1]
    if not torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(a.abs().max()) + 1e-12):
        raise NcmError(
            f"dense mode needs a local convolutional trunk, but this model's features depend on pixels "
            f"{probe // 2} px away or more (a global operation such as squeeze-and-excitation in "
            f"EfficientNet, or attention): predict without dense mode"
        )


def check_dense(bundle: Any, grid: TileGrid, recheck: float = 0.0) -> DenseGeometry:
    """The :class:`DenseGeometry` for ``bundle`` on ``grid``, or a clear error when the grid does not fit
    the feature map or the network is not local."""
    spec = bundle.config.input
    if spec.input_size[0] != spec.input_size[1]:
        raise NcmError("dense mode needs a square model input")
    if spec.standardize is not None:
        raise NcmError(
            "dense mode shares pixels between tiles, but this model standardises each tile on its own "
            "(trained with the 'generalise' recipe): predict without dense mode",
            bundle.path,
        )
    if not (hasattr(bundle.model, "forward_features") and hasattr(bundle.model, "forward_head")):
        raise NcmError("dense mode needs a network with forward_features and forward_head (timm's interface)")
    if grid.stride >= grid.tile:
        raise NcmError("dense mode is for overlapping tiles: use a stride smaller than the tile")
    if not 0 <= recheck <= 1:
        raise NcmError(f"the dense recheck margin is a probability difference in [0, 1], got {recheck}")
    scale = spec.input_size[0] / grid.tile
    r = feature_stride(bundle.model, spec.in_chans, spec.input_size[0])
    step = grid.stride * scale / r
    if abs(step - round(step)) > 1e-6 or round(step) < 1:
        raise NcmError(
            f"dense mode needs a stride that is a whole number of feature cells: the model downsamples "
            f"by {r} at {spec.input_size[0]} px input, so the stride must be a multiple of "
            f"{r / scale:g} px (got {grid.stride})"
        )
    check_local(bundle.model, spec.in_chans, spec.input_size[0])
    return DenseGeometry(scale, r, recheck)


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Difference between the two largest probabilities along the last axis."""
    top = np.partition(probs, -2, axis=-1)[..., -2:]
    return top[..., 1] - top[..., 0]


def dense_block_probs(
    bundle: Any,
    region: np.ndarray,
    grid: TileGrid,
    cells: tuple[int, int, int, int],
    device: Any,
    geometry: DenseGeometry,
    channels_last: bool = False,
    ood: bool = False,
    keep: np.ndarray | None = None,
    batch_size: int = 64,
    backend: str = "torch",
    cancel: Any = None,
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Class probabilities ``(rows, cols, classes)`` for the cells of a block from one trunk pass, their
    out-of-distribution ratios ``(rows, cols)`` (with ``ood``, else None), and how many tiles were
    rechecked exactly.

    ``region`` is the block's padded pixel region (``TileGrid.region`` of the cells); ``keep`` the
    cells to predict (all by default), the only ones rechecked. ``cancel`` is checked before the trunk
    pass and between batches of rechecked tiles.
    """
    import torch

    from ncm_core.inference.layout import use_channels_last
    from ncm_core.models.preprocess import tiles_to_tensor
    from ncm_core.progress import check_cancel

    r0, r1, c0, c1 = cells
    spec = bundle.config.input
    h, w = region.shape[:2]
    scale, r = geometry.scale, geometry.stride
    full = type(spec)(spec.in_chans, (round(h * scale), round(w * scale)), spec.mean, spec.std)
    onnx = backend == "onnxruntime"
    cl = channels_last and not onnx
    model = bundle.model
    if cl:
        use_channels_last(model)
    dev = torch.device(device)
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def trunk(x: Any) -> Any:
        if onnx:  # the trunk in ONNX Runtime (runtime.py), the small head in PyTorch
            from ncm_core.inference.runtime import onnx_runner

            return torch.from_numpy(onnx_runner(bundle, "trunk")(x)[0])
        return model.forward_features(x)

    def head(f: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if cl:
            f = f.contiguous(memory_format=torch.channels_last)
        p = torch.softmax(model.forward_head(f).float(), dim=1).cpu().numpy()
        if not ood:
            return p, None
        from ncm_core.models.ood import ood_ratio

        return p, ood_ratio(bundle, model.forward_head(f, pre_logits=True)).cpu().numpy()

    k = round(spec.input_size[0] / r)  # feature cells per tile
    step = round(grid.stride * scale / r)
    check_cancel(cancel)
    with torch.inference_mode(), torch.autocast(**amp):
        feats = trunk(tiles_to_tensor(region[None], full, "cpu" if onnx else device, channels_last=cl))
        wins = feats.unfold(2, k, step).unfold(3, k, step)  # (1, C, rows, cols, k, k)
        wins = wins[:, :, : r1 - r0, : c1 - c0]
        n_r, n_c = wins.shape[2], wins.shape[3]
        probs, ratio = head(wins.permute(0, 2, 3, 1, 4, 5).reshape(n_r * n_c, feats.shape[1], k, k))
        probs = probs.reshape(n_r, n_c, -1)
        ratio = None if ratio is None else ratio.reshape(n_r, n_c)
        n_rechecked = 0
        if geometry.recheck > 0:
            sel = top2_margin(probs) < geometry.recheck
            if keep is not None:
                sel &= keep
            n_rechecked = int(sel.sum())
            # the undecided tiles, each on its own: per-tile evaluation is forward_head(forward_features(tile))
            tiles = np.asarray(extract_tiles(region, grid, r0, r1, c0, c1))[sel]
            for j in range(0, n_rechecked, batch_size):
                check_cancel(cancel)
                xt = tiles_to_tensor(tiles[j : j + batch_size], spec, "cpu" if onnx else device, channels_last=cl)
                pt, rt = head(trunk(xt))
                idx = tuple(a[j : j + batch_size] for a in np.nonzero(sel))
                probs[idx] = pt
                if ood:
                    ratio[idx] = rt
    return probs, ratio, n_rechecked
