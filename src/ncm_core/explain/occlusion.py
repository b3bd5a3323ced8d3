"""Occlusion maps, batched, and computed locally where the network allows it.

The map is captum's :class:`~captum.attr.Occlusion`, to the same definition:
a window of ``window`` pixels (all channels) slides over the input with
``stride`` (positions ``0, s, 2s, ...`` and one more, the last clipped at the
border), is filled with ``fill``, and every pixel gets the mean, over the
windows that cover it, of ``score(original) - score(occluded)``: positive
where hiding the pixels lowers the score. Here one forward pass scores every
requested target at once, and the occluded inputs are evaluated in batches.

On a CPU, batching full inputs gains little; the large saving comes from
locality. In a network whose convolutional trunk (timm's ``forward_features``)
has a bounded receptive field, a window changes only the feature cells whose
receptive field it touches. The trunk is then run once on the whole input,
and per window only on a crop that covers those cells' receptive fields (the
crop starts on the trunk's stride, so pooling phases match); the changed
cells are pasted into the full feature map, which goes through the head
(``forward_head``: pooling and dense layers). The result is exact, not an
approximation: cells outside the crop are unchanged by construction, and the
crop's own border padding only reaches cells that are not pasted. The plan
is checked against full evaluation on a few windows before it is used, and
networks with global operations inside the trunk (squeeze-and-excitation in
EfficientNet) fall back to batched full evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

__all__ = ["occlusion_maps", "window_positions", "LocalPlan", "local_plan"]


def window_positions(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis, as captum's Occlusion places them."""
    if window > size:
        raise NcmError(f"the occlusion window ({window} px) is larger than the input ({size} px)")
    if stride < 1 or (stride > window and size > window):
        raise NcmError(f"the occlusion stride must be between 1 and the window ({window} px), got {stride}")
    n = math.ceil((size - window) / stride) + 1
    return [k * stride for k in range(n)]


@dataclass(frozen=True)
class LocalPlan:
    """How to recompute only part of the trunk for one window: feature stride and receptive-field margin (px)."""

    stride: int
    margin: int

    def cells(self, start: int, window: int, n_cells: int) -> tuple[int, int]:
        """Feature cells ``[a, b)`` along one axis that a window at ``start`` can change."""
        a = max(0, (start - self.margin) // self.stride)
        b = min(n_cells, (start + window - 1 + self.margin) // self.stride + 1)
        return a, b

    def crop_size(self, window: int, size: int) -> int:
        m = -(-self.margin // self.stride) * self.stride
        return min(size, (-(-(window + 2 * self.margin) // self.stride) + 2) * self.stride + 2 * m)

    def crop_start(self, a: int, crop: int, size: int) -> int:
        m = -(-self.margin // self.stride) * self.stride
        return int(min(max(0, a * self.stride - m), size - crop))


def _receptive_margin(trunk: Callable, x: Any, stride: int) -> int | None:
    """Receptive-field half-width (px) of the trunk's centre cell, from the gradient's support on two
    random inputs; None when the centre cell sees the whole input (a global operation)."""
    import torch

    H, W = x.shape[-2:]
    margin = 0
    for k in range(2):
        g = torch.Generator().manual_seed(k)
        xi = torch.rand(x.shape[1:], generator=g) if k == 0 else torch.randn(x.shape[1:], generator=g)
        xi = xi[None].to(x.device, x.dtype).requires_grad_(True)
        with torch.enable_grad():
            f = trunk(xi)
            ci, cj = f.shape[-2] // 2, f.shape[-1] // 2
            (g_in,) = torch.autograd.grad(f[0, :, ci, cj].sum(), xi)
        support = g_in[0].abs().sum(0) > 0
        rows, cols = np.nonzero(support.any(1).cpu().numpy())[0], np.nonzero(support.any(0).cpu().numpy())[0]
        if not len(rows):
            continue
        if rows[0] == 0 and rows[-1] == H - 1 and cols[0] == 0 and cols[-1] == W - 1:
            return None
        margin = max(
            margin,
            ci * stride - rows[0],
            rows[-1] - ((ci + 1) * stride - 1),
            cj * stride - cols[0],
            cols[-1] - ((cj + 1) * stride - 1),
        )
    return int(margin) + stride  # one cell of slack


def local_plan(model: Any, x: Any) -> LocalPlan | None:
    """A :class:`LocalPlan` for ``model`` at the input shape of ``x``, or None when the trunk is not local
    (no ``forward_features``/``forward_head``, a global operation inside, or a size the stride does not divide)."""
    import torch

    if not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return None
    H, W = x.shape[-2:]
    with torch.inference_mode():
        f = model.forward_features(x[:1])
    if f.ndim != 4 or H % f.shape[-2] or W % f.shape[-1] or H // f.shape[-2] != W // f.shape[-1]:
        return None
    stride = H // f.shape[-2]
    params = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        margin = _receptive_margin(model.forward_features, x[:1], stride)
    finally:
        for p, r in zip(model.parameters(), params):
            p.requires_grad_(r)
    return None if margin is None else LocalPlan(stride, margin)


def occlusion_maps(
    model: Any,
    x: Any,
    targets: np.ndarray,
    *,
    window: tuple[int, int] = (7, 7),
    stride: tuple[int, int] = (7, 7),
    fill: Any = 0.0,
    score: Callable[[Any], Any] | None = None,
    batch_size: int = 16,
    local: bool | None = None,
    check: bool = True,
    cancel: Any = None,
) -> np.ndarray:
    """Occlusion maps ``(N, K, H, W)`` for inputs ``x`` ``(N, C, H, W)`` and output indices ``targets`` ``(N, K)``.

    ``score`` maps the model's output to the scores that are compared (default: the output itself;
    :func:`ncm_core.explain.methods.explain` passes softmax for classifiers). ``fill`` is a scalar or one value
    per channel, in model-input units. ``local`` = None uses local recomputation when the network
    allows it (see the module docstring), True insists on it, False never uses it; ``check`` verifies
    the local plan against full evaluation on a few windows first.
    """
    import torch

    from ncm_core.progress import check_cancel

    score = score or (lambda z: z)
    N, C, H, W = x.shape
    wy, wx = window
    ys, xs = window_positions(H, wy, stride[0]), window_positions(W, wx, stride[1])
    wins = [(y, xx) for y in ys for xx in xs]
    fill_t = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    if fill_t.shape[0] not in (1, C):
        raise NcmError(f"occlusion fill needs 1 or {C} values, got {fill_t.shape[0]}")
    targets = np.asarray(targets, dtype=np.int64).reshape(N, -1)
    tgt = torch.as_tensor(targets, device=x.device)
    plan = None
    if local is not False:
        plan = local_plan(model, x)
        if plan is not None and plan.crop_size(wy, H) * plan.crop_size(wx, W) > 0.4 * H * W:
            plan = None  # the crop is most of the input: nothing to gain
        if plan is None and local:
            raise NcmError(
                "this network has no local trunk (timm forward_features/forward_head without global "
                "operations), so occlusion cannot be computed locally"
            )
    out = np.zeros((N, targets.shape[1], H, W), np.float64)
    count = np.zeros((H, W), np.float64)
    for y, xx in wins:
        count[y : y + wy, xx : xx + wx] += 1

    def occlude(img: Any, y: int, xx: int) -> Any:
        img = img.clone()
        img[:, y : y + wy, xx : xx + wx] = fill_t
        return img

    with torch.inference_mode():
        for n in range(N):
            xn = x[n]
            full_score = score(model(xn[None]))[0]
            base = full_score[tgt[n]]
            feats = model.forward_features(xn[None]) if plan is not None else None
            if plan is not None and check:
                probe = _probe_windows(ys, xs)
                exact = torch.stack([score(model(occlude(xn, y, xx)[None]))[0] for y, xx in probe])
                fast = _local_scores(model, xn, feats, probe, plan, fill_t, wy, wx, score)
                if not torch.allclose(exact, fast, rtol=1e-4, atol=1e-5):
                    if local:
                        raise NcmError("local occlusion does not reproduce full evaluation for this network")
                    plan, feats = None, None
            # full inputs on a CPU: large batches are slower per image than small ones (measured), so keep
            # each batch near 2**18 pixels
            step = batch_size
            if plan is None and x.device.type == "cpu":
                step = max(1, min(batch_size, 2**18 // (H * W)))
            for k0 in range(0, len(wins), step):
                check_cancel(cancel)
                chunk = wins[k0 : k0 + step]
                if plan is not None:
                    s = _local_scores(model, xn, feats, chunk, plan, fill_t, wy, wx, score)
                else:
                    s = score(model(torch.stack([occlude(xn, y, xx) for y, xx in chunk])))
                diff = (base[None] - s[:, tgt[n]]).double().cpu().numpy()  # (B, K)
                for (y, xx), d in zip(chunk, diff):
                    out[n, :, y : y + wy, xx : xx + wx] += d[:, None, None]
    return (out / count).astype(np.float32)


def _probe_windows(ys: list[int], xs: list[int], n_random: int = 3) -> list[tuple[int, int]]:
    """Windows on which the local plan is checked: the four corners, the centre and a few at random."""
    rng = np.random.default_rng(0)
    picks = {(ys[0], xs[0]), (ys[0], xs[-1]), (ys[-1], xs[0]), (ys[-1], xs[-1]), (ys[len(ys) // 2], xs[len(xs) // 2])}
    picks |= {(ys[rng.integers(len(ys))], xs[rng.integers(len(xs))]) for _ in range(n_random)}
    return sorted(picks)


def _local_scores(
    model: Any,
    xn: Any,
    feats: Any,
    chunk: list[tuple[int, int]],
    plan: LocalPlan,
    fill: Any,
    wy: int,
    wx: int,
    score: Callable,
) -> Any:
    """Scores of the occluded inputs in ``chunk``, recomputing the trunk on crops only."""
    import torch

    _, H, W = xn.shape
    fh, fw = feats.shape[-2:]
    ch, cw = plan.crop_size(wy, H), plan.crop_size(wx, W)
    crops, spans = [], []
    for y, xx in chunk:
        (a, b), (c, d) = plan.cells(y, wy, fh), plan.cells(xx, wx, fw)
        y0, x0 = plan.crop_start(a, ch, H), plan.crop_start(c, cw, W)
        crop = xn[:, y0 : y0 + ch, x0 : x0 + cw].clone()
        crop[:, y - y0 : y - y0 + wy, xx - x0 : xx - x0 + wx] = fill
        crops.append(crop)
        spans.append((a, b, c, d, y0 // plan.stride, x0 // plan.stride))
    part = model.forward_features(torch.stack(crops))
    full = feats.expand(len(chunk), -1, -1, -1).clone()
    for k, (a, b, c, d, oy, ox) in enumerate(spans):
        full[k, :, a:b, c:d] = part[k, :, a - oy : b - oy, c - ox : d - ox]
    return score(model.forward_head(full))
