"""Super-resolution network and bundle: a small ESPCN-style network on top of bicubic interpolation.

The network (Shi et al., CVPR 2016, "ESPCN") works at the low resolution and outputs ``factor ** 2``
channels per low-resolution pixel, the sub-pixel values that a pixel shuffle arranges into the
``factor`` x larger image; it learns a correction to bicubic interpolation (residual learning), so an
untrained network is bicubic. Working in sub-pixel channels makes it a pixel-level task of the streaming
engine at the input's resolution (:mod:`ncm_core.inference.superres`); its reach, ``halo``, is what the
engine's windows need as halo so that tiles have no seams.

Bundle: ``config.json`` (``"format": "ncm-superres"``, :class:`SuperresSpec`) + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.outputs import register_marker

FORMAT = "ncm-superres"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


@dataclass
class SuperresSpec:
    factor: int = 4
    width: int = 32
    depth: int = 4  # conv layers: one 5x5, then 3x3
    norm_low: float = 0.0  # raw value mapped to 0
    norm_high: float = 1.0  # raw value mapped to 1
    degradation: dict[str, Any] = field(default_factory=dict)  # how the training pairs were made
    training: dict[str, Any] = field(default_factory=dict)  # held-out PSNR / SSIM against bicubic, ...

    @property
    def halo(self) -> int:
        """Low-resolution pixels of context each side a sub-pixel depends on (conv reach + bicubic's 2), rounded up."""
        reach = 2 + (self.depth - 1) + 2
        return 4 * -(-reach // 4)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}


def build_superres(spec: SuperresSpec) -> Any:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class SuperRes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            w, f = spec.width, spec.factor
            layers: list[Any] = [nn.Conv2d(1, w, 5, padding=2), nn.ReLU(inplace=True)]
            for _ in range(spec.depth - 2):
                layers += [nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True)]
            layers.append(nn.Conv2d(w, f * f, 3, padding=1))
            self.body = nn.Sequential(*layers)
            nn.init.zeros_(self.body[-1].weight)
            nn.init.zeros_(self.body[-1].bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """``(n, 1, h, w)`` -> ``(n, factor ** 2, h, w)`` sub-pixel values."""
            f = spec.factor
            up = F.interpolate(x, scale_factor=f, mode="bicubic", align_corners=False)
            return F.pixel_unshuffle(up, f) + self.body(x)

        def upscale(self, x: torch.Tensor) -> torch.Tensor:
            return F.pixel_shuffle(self(x), spec.factor)

    return SuperRes()


@dataclass
class SuperresBundle:
    spec: SuperresSpec
    model: Any
    path: Path | None = None

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.spec.to_dict(), indent=2))
        return folder


def is_superres(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


register_marker("a super-resolution bundle", is_superres)


def load_superres(path: str | Path, device: Any = "cpu") -> SuperresBundle:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        d = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        raise NcmError("not a super-resolution bundle: no readable config.json (ncm superres train)", path) from None
    if d.get("format") != FORMAT:
        raise NcmError(f"not a super-resolution bundle (format is {d.get('format')!r})", path)
    spec = SuperresSpec(**{k: v for k, v in d.items() if k in SuperresSpec.__dataclass_fields__})
    model = build_superres(spec)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS)))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise NcmError(f"super-resolution weights cannot be read ({str(e).splitlines()[0][:160]})", path) from None
    return SuperresBundle(spec, model.to(device).eval(), path)
