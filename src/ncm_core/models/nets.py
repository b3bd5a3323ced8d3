"""Small networks of the source studies, registered with timm so they are built like any timm model.

``ncm_vgg`` is the rate-capability network of Deeg et al. (Batteries 2024,
10, 99): three blocks of two 3x3 convolutions (BatchNorm, ReLU) with 32, 64
and 96 filters, max-pooling after blocks 1 and 2, global average pooling after
block 3, four dense layers of 64 units (BatchNorm, leaky ReLU, dropout) and
one linear output per target: about 224k parameters for RGB input and five
targets. It takes inputs of any size (224 x 672 as published).

Registration (``timm.models.register_model``) happens when this module is
imported; :mod:`ncm_core.models.factory` imports it before asking timm for a model,
so bundles, tuning workers and ``timm.create_model('ncm_vgg', ...)`` all
find it. It follows timm's model interface (``forward_features``,
``forward_head(pre_logits=...)``, ``get_classifier``, ``reset_classifier``),
so timm's optimiser factory, torchcam and captum treat it like the others.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["NcmVGG", "ncm_vgg"]


def _block(cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(2):
        layers += [
            nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class NcmVGG(nn.Module):
    """The VGG-like regression CNN of Deeg et al. 2024 (see the module docstring)."""

    def __init__(
        self,
        num_classes: int = 5,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 96),
        dense: int = 64,
        n_dense: int = 4,
        drop_rate: float = 0.1,
        negative_slope: float = 0.01,
        **_: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        blocks: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            blocks.append(_block(cin, w))
            if i < len(widths) - 1:
                blocks.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        mlp: list[nn.Module] = []
        for k in range(n_dense):
            mlp += [
                nn.Linear(cin if k == 0 else dense, dense),
                nn.BatchNorm1d(dense),
                nn.LeakyReLU(negative_slope, inplace=True),
                nn.Dropout(drop_rate),
            ]
        self.mlp = nn.Sequential(*mlp)
        self.num_features = self.head_hidden_size = dense
        self.fc = nn.Linear(dense, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            dict(num_chs=w, reduction=2 ** min(i, len(widths) - 1), module=f"features.{2 * i}")
            for i, w in enumerate(widths)
        ]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.mlp(self.global_pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "ncm_vgg": {
            "num_classes": 5,
            "input_size": (3, 224, 672),
            "pool_size": None,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "first_conv": "features.0.0",
            "classifier": "fc",
            "license": "MIT",
        },
    }
)


@register_model
def ncm_vgg(pretrained: bool = False, **kwargs: Any) -> NcmVGG:
    """Deeg et al. 2024 rate-capability CNN (about 224k parameters)."""
    return build_model_with_cfg(NcmVGG, "ncm_vgg", pretrained, **kwargs)
