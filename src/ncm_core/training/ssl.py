"""The parts of self-supervised pretraining: augmented views, the methods (lightly's heads and losses), k-NN.

Views are made on batches of tensors (on the GPU when there is one): a random resized crop of each crop
(``torchvision.ops.roi_align``: one call for the whole batch), the eight flips and quarter turns, and the
intensity changes one SEM session differs from another by: brightness, contrast, gamma, blur and noise.
Every random draw comes from a seeded ``torch.Generator``, so views are the same run after run.

Methods: ``simclr`` (contrastive: lightly's ``SimCLRProjectionHead`` and ``NTXentLoss``), ``byol``
(non-contrastive: ``BYOLProjectionHead``, ``BYOLPredictionHead``, ``NegativeCosineSimilarity`` and a
momentum copy updated by ``update_momentum`` on a ``cosine_schedule``) and ``vicreg`` (``VICRegLoss``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def _uniform(g: Any, n: int, lo: float, hi: float) -> Any:
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=g)


def _blur(x: Any, sigma: float) -> Any:
    """Gaussian blur of every image of ``x`` ``(B, C, H, W)`` (a separable kernel, one channel at a time:
    a plain convolution, much faster on CPUs than a grouped one)."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    r = 3
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def augment_views(x: Any, size: int, g: Any, min_scale: float = 0.3) -> Any:
    """One augmented view of each image of ``x`` ``(B, C, S, S)`` (intensities in [0, 1]), ``size`` px."""
    import torch
    from torchvision.ops import roi_align

    b, _, s, _ = x.shape
    dev = x.device
    area = _uniform(g, b, min_scale, 1.0)
    ratio = torch.exp(_uniform(g, b, float(np.log(3 / 4)), float(np.log(4 / 3))))
    bw, bh = (s * (area * ratio).sqrt()).clamp(max=s), (s * (area / ratio).sqrt()).clamp(max=s)
    x0, y0 = torch.rand(b, generator=g) * (s - bw), torch.rand(b, generator=g) * (s - bh)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + bw, y0 + bh], 1).to(dev, x.dtype)
    v = roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    for flip in (lambda t: t.flip(-1), lambda t: t.flip(-2), lambda t: t.transpose(-1, -2)):
        mask = (torch.rand(b, generator=g) < 0.5).to(dev)[:, None, None, None]
        v = torch.where(mask, flip(v), v)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    contrast = _uniform(g, b, 0.6, 1.4).to(dev, v.dtype)[:, None, None, None]
    bright = _uniform(g, b, -0.2, 0.2).to(dev, v.dtype)[:, None, None, None]
    v = ((v - mean) * contrast + mean + bright).clamp(0, 1)
    gamma = torch.exp(_uniform(g, b, -0.4, 0.4)).to(dev, v.dtype)[:, None, None, None]
    v = v.clamp_min(1e-6) ** gamma
    level = torch.randint(0, 6, (b,), generator=g)  # no blur (half), or one of three widths
    for i, sigma in enumerate((0.5, 1.0, 1.5), start=3):
        pick = (level == i).nonzero().flatten().to(dev)
        if len(pick):
            v[pick] = _blur(v[pick], sigma)
    noise = _uniform(g, b, 0.0, 0.05) * (torch.rand(b, generator=g) < 0.5)
    v = v + noise.to(dev, v.dtype)[:, None, None, None] * torch.randn(v.shape, generator=g).to(dev, v.dtype)
    return v


def make_method(method: str, backbone: Any, dim: int) -> Any:
    """An ``nn.Module`` holding ``backbone`` (as ``.backbone``) and the method's heads; its ``loss(v1, v2)`` is
    the method's loss of two views, ``after_step(step, total)`` updates momentum copies."""
    import torch
    from lightly.loss import NegativeCosineSimilarity, NTXentLoss, VICRegLoss
    from lightly.models.modules.heads import (
        BYOLPredictionHead,
        BYOLProjectionHead,
        SimCLRProjectionHead,
        VICRegProjectionHead,
    )
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule

    class SSL(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            if method == "simclr":
                self.projection = SimCLRProjectionHead(dim, 512, 128)
                self.criterion = NTXentLoss(temperature=0.2)
            elif method == "byol":
                self.projection = BYOLProjectionHead(dim, 1024, 256)
                self.prediction = BYOLPredictionHead(256, 1024, 256)
                self.backbone_momentum = copy.deepcopy(backbone)
                self.projection_momentum = copy.deepcopy(self.projection)
                deactivate_requires_grad(self.backbone_momentum)
                deactivate_requires_grad(self.projection_momentum)
                self.criterion = NegativeCosineSimilarity()
            else:
                self.projection = VICRegProjectionHead(dim, 1024, 1024, num_layers=2)
                self.criterion = VICRegLoss()

        def _z(self, v: Any) -> Any:
            return self.projection(self.backbone(v))

        def loss(self, v1: Any, v2: Any) -> Any:
            if method != "byol":
                return self.criterion(self._z(v1).float(), self._z(v2).float())
            p1, p2 = self.prediction(self._z(v1)), self.prediction(self._z(v2))
            with torch.no_grad():
                t1 = self.projection_momentum(self.backbone_momentum(v1))
                t2 = self.projection_momentum(self.backbone_momentum(v2))
            return 0.5 * (self.criterion(p1.float(), t2.float()) + self.criterion(p2.float(), t1.float()))

        def after_step(self, step: int, total: int) -> None:
            if method == "byol":
                m = cosine_schedule(step, total, 0.99, 1.0)
                update_momentum(self.backbone, self.backbone_momentum, m)
                update_momentum(self.projection, self.projection_momentum, m)

    return SSL()


def embed(backbone: Any, tiles: np.ndarray, spec: Any, device: Any, batch: int = 128) -> np.ndarray:
    """L2-normalised features of ``tiles`` (the backbone's pooled output) in eval mode."""
    import torch
    import torch.nn.functional as F

    from ncm_core.models.preprocess import tiles_to_tensor

    was = backbone.training
    backbone.eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(tiles), batch):
            f = backbone(tiles_to_tensor(tiles[k : k + batch], spec, device)).float()
            out.append(F.normalize(f, dim=1).cpu().numpy())
    backbone.train(was)
    return np.concatenate(out)


def knn_accuracy(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, k: int = 10) -> float:
    """Leave-one-frame-out k-NN accuracy: each crop is classified by a similarity-weighted vote of its ``k``
    most similar crops of other frames (cosine similarity of normalised features)."""
    sim = features @ features.T
    sim[groups[:, None] == groups[None, :]] = -np.inf  # never a crop of the same frame
    k = min(k, int(np.isfinite(sim).sum(1).min()))
    if k < 1:
        return float("nan")
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    n_cls = int(labels.max()) + 1
    votes = np.zeros((len(labels), n_cls))
    w = np.exp(np.take_along_axis(sim, idx, 1) / 0.1)
    np.add.at(votes, (np.repeat(np.arange(len(labels)), k), labels[idx].ravel()), w.ravel())
    return float((votes.argmax(1) == labels).mean())
