"""Checks that explanation maps mean something.

- :func:`randomisation_check`: the model-parameter randomisation test of
  Adebayo et al. (2018). Maps from the trained model are compared with maps
  from the same architecture with re-initialised weights (all layers, or
  cascading from the output down), as a Spearman rank correlation per tile.
  A method whose maps barely change (high correlation) shows the image, not
  the model; a method passes when the correlation falls below ``threshold``.
- :func:`attribution_in_mask`: the share of positive attribution that lies
  inside a mask (e.g. particle boundaries from :func:`particle_boundaries`,
  or a user's Labels layer) against the mask's share of the area. Their ratio
  (the enrichment) turns "the model looks at particle boundaries" into a
  number; 1 means no preference. (Quantus calls the first number 'relevance
  mass accuracy'.)
- :func:`deletion_insertion`: faithfulness curves (Petsiuk et al. 2018).
  Pixels are removed (set to the occlusion fill) or inserted (into a blurred
  copy) in order of attribution, and the target's score is followed. A
  faithful map makes the deletion curve fall fast (low area) and the
  insertion curve rise fast (high area); a random order is the reference.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.bundle import ModelBundle, load_bundle

__all__ = ["randomised", "randomisation_check", "attribution_in_mask", "particle_boundaries", "deletion_insertion"]


def _stages(model: Any) -> list[str]:
    """Top-level children that hold parameters, output side first (the cascade order)."""
    return [n for n, m in reversed(list(model.named_children())) if any(True for _ in m.parameters())]


def randomised(bundle: ModelBundle, seed: int = 0, upto: int | None = None) -> ModelBundle:
    """A copy of ``bundle`` with re-initialised weights: every layer, or (``upto`` = k) the k top-level stages
    nearest the output (cascading randomisation)."""
    import torch

    model = copy.deepcopy(bundle.model)
    names = _stages(model)
    chosen = names if upto is None else names[:upto]
    torch.manual_seed(seed)
    for name in chosen:
        for m in dict(model.named_children())[name].modules():
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    model.eval()
    return ModelBundle(model=model, config=bundle.config, path=None, extra={})


def _spearman(a: np.ndarray, b: np.ndarray, max_n: int = 20000) -> float:
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if a.size > max_n:
        idx = np.random.default_rng(0).choice(a.size, max_n, replace=False)
        a, b = a[idx], b[idx]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def randomisation_check(
    bundle: str | Any,
    images: Any,
    methods: Sequence[str] = ("gradcam", "gradram", "guided-backprop", "occlusion"),
    target: Any = None,
    *,
    layer: str | None = None,
    seed: int = 0,
    threshold: float = 0.5,
    cascade: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Rank correlation of each method's maps between the trained and randomised models.

    Returns ``{method: {"spearman", "spearman_abs", "passes", "cascade": [(stage, spearman_abs), ...]}}``;
    ``spearman_abs`` compares absolute values (Adebayo et al. report both), ``passes`` is
    ``spearman_abs < threshold`` for the fully randomised model.
    """
    from ncm_core.explain.methods import explain

    bundle = load_bundle(bundle)
    stages = _stages(bundle.model)
    report: dict[str, Any] = {}
    for method in methods:
        base = explain(bundle, images, method, target, layer, **kwargs)
        targets = base.targets

        def corr(
            other: ModelBundle, method: str = method, targets: np.ndarray = targets, base: Any = base
        ) -> tuple[float, float]:
            e = explain(other, images, method, targets, layer, **kwargs)
            s = [_spearman(a, b) for a, b in zip(base.maps, e.maps)]
            sa = [_spearman(np.abs(a), np.abs(b)) for a, b in zip(base.maps, e.maps)]
            return float(np.mean(s)), float(np.mean(sa))

        s, sa = corr(randomised(bundle, seed))
        steps = (
            [(stages[k - 1], corr(randomised(bundle, seed, k))[1]) for k in range(1, len(stages) + 1)]
            if cascade
            else []
        )
        report[base.method] = {
            "spearman": s,
            "spearman_abs": sa,
            "passes": sa < threshold,
            "threshold": threshold,
            "cascade": steps,
        }
    return report


def particle_boundaries(image: np.ndarray, width: int = 2, min_size: int = 16) -> np.ndarray:
    """Boolean mask of particle boundaries: Otsu threshold (scikit-image), small specks removed, boundaries
    ``width`` pixels thick on both sides."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import dilation, disk, remove_small_objects
    from skimage.segmentation import find_boundaries

    g = np.asarray(image, np.float32)
    if g.ndim == 3:
        g = g.mean(-1)
    if np.ptp(g) == 0:
        return np.zeros(g.shape, bool)
    solid = remove_small_objects(g > threshold_otsu(g), max_size=min_size)
    edges = find_boundaries(solid, mode="inner")
    return dilation(edges, disk(max(0, width - 1))) if width > 1 else edges


def attribution_in_mask(maps: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Share of positive attribution inside ``mask`` vs. the mask's area share, pooled over maps.

    ``maps`` ``(..., h, w)`` and ``mask`` ``(h, w)`` or the same shape as ``maps``; NaNs are ignored.
    """
    maps = np.asarray(maps, np.float64)
    mask = np.broadcast_to(np.asarray(mask, bool), maps.shape)
    ok = np.isfinite(maps)
    pos = np.where(ok, np.clip(maps, 0, None), 0.0)
    total = pos.sum()
    if not ok.any():
        raise NcmError("the maps hold no finite values")
    area = float(mask[ok].mean())
    share = float(pos[mask].sum() / total) if total > 0 else float("nan")
    return {
        "positive_share_in_mask": share,
        "area_share": area,
        "enrichment": share / area if area > 0 and total > 0 else float("nan"),
    }


def deletion_insertion(
    bundle: str | Any,
    images: Any,
    explanation: Any,
    *,
    steps: int = 20,
    blur_sigma: float = 5.0,
    fill: Any = "mean",
    batch_size: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion curves for each map of ``explanation`` (computed on ``images``).

    Returns ``fractions`` ``(steps + 1,)``, ``deletion`` and ``insertion`` ``(N, K, steps + 1)`` (the target's
    class probability, or its predicted value relative to the unchanged tile's for regression), their
    mean areas under the curve (``deletion_auc``, ``insertion_auc``) and the same for a random pixel
    order (``random_deletion_auc``, ``random_insertion_auc``).
    """
    import torch
    import torch.nn.functional as F
    from scipy.ndimage import gaussian_filter

    from ncm_core.explain.methods import fill_value
    from ncm_core.models.preprocess import tiles_to_tensor

    bundle = load_bundle(bundle)
    c = bundle.config
    model = bundle.model.eval()
    tiles = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)
    x = tiles_to_tensor(tiles, c.input, next(model.parameters()).device)
    N, C, H, W = x.shape
    fillv = fill_value(bundle, x) if isinstance(fill, str) else torch.as_tensor(fill, dtype=x.dtype)
    fillv = fillv.reshape(-1, 1, 1).expand(C, H, W)
    maps = torch.from_numpy(np.ascontiguousarray(explanation.maps, np.float32))
    maps = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False).numpy()
    fr = np.linspace(0, 1, steps + 1)
    rng = np.random.default_rng(seed)

    def scores(batch: Any, t: int) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for k in range(0, len(batch), batch_size):
                z = model(batch[k : k + batch_size]).float()
                out.append((torch.softmax(z, 1) if c.task == "classify" else z)[:, t].cpu().numpy())
        return np.concatenate(out)

    def curves(xn: Any, order: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        blurred = torch.from_numpy(gaussian_filter(xn.cpu().numpy(), (0, blur_sigma, blur_sigma))).to(xn)
        dele, ins = [], []
        for q in fr:
            keep = torch.zeros(H * W, dtype=torch.bool)
            keep[torch.from_numpy(order[: int(round(q * H * W))])] = True
            keep = keep.reshape(1, H, W).to(xn.device)
            dele.append(torch.where(keep, fillv, xn))
            ins.append(torch.where(keep, xn, blurred))
        return scores(torch.stack(dele), t), scores(torch.stack(ins), t)

    K = maps.shape[1]
    dele = np.zeros((N, K, steps + 1))
    ins = np.zeros((N, K, steps + 1))
    rdel, rins = [], []
    reg = c.regression
    for n in range(N):
        for k in range(K):
            t = int(explanation.targets[n, k])
            order = np.argsort(-maps[n, k].ravel(), kind="stable")
            dele[n, k], ins[n, k] = curves(x[n], order, t)
            rd, ri = curves(x[n], rng.permutation(H * W), t)
            if c.task == "regress":  # values relative to the unchanged tile's, in the target's units
                m = np.ravel(reg.get("mean", [0.0] * c.num_outputs))[t]
                s = np.ravel(reg.get("std", [1.0] * c.num_outputs))[t]
                v0 = dele[n, k][0] * s + m
                dele[n, k], ins[n, k], rd, ri = ((v * s + m) / v0 for v in (dele[n, k], ins[n, k], rd, ri))
            rdel.append(rd)
            rins.append(ri)
    return {
        "fractions": fr,
        "deletion": dele,
        "insertion": ins,
        "deletion_auc": float(np.trapezoid(dele, fr, axis=-1).mean()),
        "insertion_auc": float(np.trapezoid(ins, fr, axis=-1).mean()),
        "random_deletion": np.mean(rdel, 0),
        "random_insertion": np.mean(rins, 0),
        "random_deletion_auc": float(np.trapezoid(np.mean(rdel, 0), fr)),
        "random_insertion_auc": float(np.trapezoid(np.mean(rins, 0), fr)),
        "method": explanation.method,
    }
