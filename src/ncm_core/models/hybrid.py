"""Regressors that read microstructure descriptors: a descriptor-only head and a CNN + descriptor hybrid.

Both take ``(x, d)``: prepared crops ``x (N, C, H, W)`` and the crops' raw descriptors ``d (N, D)``
(:mod:`ncm_core.data.descriptors`), and return standardised targets ``z (N, targets)`` like every
regression network of a bundle (the bundle's ``regression.mean`` / ``std`` bring them back to units).
Their state is buffers and weights only, so a bundle stores them as safetensors + JSON like any model.

* :class:`DescriptorRegressor` (``ncm_descriptors``): the logarithms of the descriptors (each floored at
  half its smallest positive training value, so a pore-free crop stays finite), standardised by the
  training crops' mean and standard deviation (buffers), and one linear map fitted in closed form by
  ridge regression (:func:`ncm_core.training.regression_models.fit_descriptor_model`). Logarithms make
  the power laws of transport (a characteristic rate that scales with porosity over thickness) linear.
  It ignores ``x``. A standardised descriptor is clamped to the training crops' range widened by
  :data:`CLAMP_MARGIN` of its width on each side: a descriptor that hardly varied in training (every
  training section about as thick as the next) has a tiny standard deviation and an ill-determined
  coefficient, and a new section far outside that range would otherwise move the prediction by tens of
  percent on that coefficient alone. Clamped, such a section gets the prediction at the edge of what the
  model knows; the extrapolation warning and the widened interval of :mod:`ncm_core.inference.ensemble`
  tell the user (measured in ``make bench-rate``'s cross-family rows).
* :class:`HybridRegressor` (``ncm_hybrid``): a backbone's pooled features (``ncm_vgg`` or any timm
  model built with ``num_classes=0``) concatenated with the standardised descriptors, then a small
  head (linear, leaky ReLU, dropout, linear) whose output is *added* to a fitted
  :class:`DescriptorRegressor`. The head's last layer starts at zero, so training starts from the
  descriptor model's predictions and the CNN only has to learn what the descriptors miss: on few
  sections it cannot fall far below the descriptor model, on many it can add what the images hold.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ncm_core.data.descriptors import RANGE_MARGIN

__all__ = ["HEADS", "DescriptorRegressor", "HybridRegressor", "build_head_model"]

#: architectures of this module, as the bundle names them
HEADS = ("ncm_descriptors", "ncm_hybrid")
#: standardised descriptors are clamped to the training range widened by this share of its width per side
CLAMP_MARGIN = RANGE_MARGIN


class DescriptorRegressor(nn.Module):
    """Log descriptors, standardised -> linear map (ridge, fitted in closed form)."""

    def __init__(self, num_outputs: int, n_descriptors: int, **_: Any) -> None:
        super().__init__()
        self.n_descriptors = n_descriptors
        self.register_buffer("d_floor", torch.ones(n_descriptors))
        self.register_buffer("d_mean", torch.zeros(n_descriptors))
        self.register_buffer("d_std", torch.ones(n_descriptors))
        self.register_buffer("coef", torch.zeros(num_outputs, n_descriptors))
        self.register_buffer("intercept", torch.zeros(num_outputs))
        self.register_buffer("d_low", torch.full((n_descriptors,), -torch.inf))  # clamp range, standardised
        self.register_buffer("d_high", torch.full((n_descriptors,), torch.inf))

    def standardised(self, d: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` raw descriptors -> standardised logarithms, clamped to the (widened) training range."""
        z = (torch.log(torch.maximum(d.float(), self.d_floor)) - self.d_mean) / self.d_std
        return torch.minimum(torch.maximum(z, self.d_low), self.d_high)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # bundles written before the clamp was added have no range: they stay unclamped
        for name in ("d_low", "d_high"):
            state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor | None, d: torch.Tensor) -> torch.Tensor:
        return self.standardised(d) @ self.coef.T + self.intercept


class HybridRegressor(nn.Module):
    """Backbone features + standardised descriptors -> head, added to a descriptor model (module docstring)."""

    def __init__(
        self,
        num_outputs: int,
        n_descriptors: int,
        backbone: nn.Module,
        hidden: int = 64,
        drop_rate: float = 0.1,
        **_: Any,
    ) -> None:
        super().__init__()
        self.backbone = backbone  # pooled features (num_classes 0); models.factory builds it by name
        n_feat = int(self.backbone.num_features)
        self.descriptors = DescriptorRegressor(num_outputs, n_descriptors)
        self.head = nn.Sequential(
            nn.Linear(n_feat + n_descriptors, hidden),
            nn.LeakyReLU(0.01),
            nn.Dropout(drop_rate),
            nn.Linear(hidden, num_outputs),
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        return self.descriptors(None, d) + self.head(torch.cat([f, self.descriptors.standardised(d)], 1))


def build_head_model(
    architecture: str, num_outputs: int, backbone: nn.Module | None = None, **kwargs: Any
) -> nn.Module:
    """``ncm_descriptors``, or ``ncm_hybrid`` on ``backbone`` (``kwargs``: ``n_descriptors``, and for the
    hybrid ``hidden`` and ``drop_rate``). :func:`ncm_core.models.factory.build_model` names the backbone."""
    if architecture == "ncm_descriptors":
        return DescriptorRegressor(num_outputs, **kwargs)
    return HybridRegressor(num_outputs, backbone=backbone, **kwargs)
