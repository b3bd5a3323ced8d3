"""The U-Net segmentation engine: an encoder-decoder with any timm encoder, as safetensors + JSON.

The network is segmentation-models-pytorch's ``Unet(encoder_name="tu-<timm architecture>")`` built with
``encoder_weights=None`` (nothing is downloaded; a backbone from ``ncm pretrain`` is loaded into its
encoder by :func:`~ncm_core.models.backbone.load_encoder_weights`). Its settings (:class:`UnetSpec`) are
stored in the bundle's ``engine_config``, its weights in ``model.safetensors``.

Window sides must be a multiple of ``2 ** depth`` (``config.multiple``): the network halves the
resolution ``depth`` times. For the same reason its result is the same for a shifted input only when the
shift is a multiple of it, so the streaming engine keeps every window on that grid.

``halo`` is a *practical* receptive field, measured on the trained network (:func:`measure_reach`):
the distance beyond which replacing the surroundings of a patch changes its class probabilities by less
than ``tol``. The theoretical receptive field of a deep encoder is hundreds of pixels, but what lies that
far has almost no effect on a trained network's output, and a window's halo is paid for in every window.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.segmenter_config import SegmenterConfig, write_config

WEIGHTS = "model.safetensors"
#: halo of a U-Net whose reach was not measured (pixels each side)
DEFAULT_HALO = 64
#: the reach measurement stops here: a larger halo costs more than the seams it would remove
MAX_REACH = 128


@dataclass(frozen=True)
class UnetSpec:
    """The network's shape: what ``engine_config`` of a U-Net bundle holds."""

    encoder: str = "resnet10t"  # a timm architecture (features_only)
    depth: int = 5  # times the encoder halves the resolution
    decoder_channels: tuple[int, ...] = (64, 32, 16, 16, 8)  # one per depth, coarsest first
    pretrained: str | None = None  # the backbone file loaded into the encoder at training (for the record)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def multiple(self) -> int:
        return 2**self.depth

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decoder_channels": list(self.decoder_channels)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnetSpec:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if "decoder_channels" in kw:
            kw["decoder_channels"] = tuple(int(c) for c in kw["decoder_channels"])
        return cls(**kw)


def build_unet(spec: UnetSpec, in_channels: int, classes: int) -> Any:
    """An untrained ``smp.Unet`` with the timm encoder ``spec.encoder`` (no download)."""
    import segmentation_models_pytorch as smp

    from ncm_core.models.factory import check_architecture

    check_architecture(spec.encoder)
    if not 1 <= spec.depth <= 5:
        raise NcmError(f"the U-Net depth must be between 1 and 5, got {spec.depth}")
    dec = tuple(spec.decoder_channels)[: spec.depth]
    if len(dec) < spec.depth:
        raise NcmError(f"decoder_channels needs {spec.depth} entries (one per depth), got {len(dec)}")
    try:
        return smp.Unet(
            encoder_name=f"tu-{spec.encoder}",
            encoder_weights=None,
            encoder_depth=spec.depth,
            decoder_channels=dec,
            in_channels=in_channels,
            classes=classes,
        )
    except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
        raise NcmError(f"cannot build a U-Net on encoder {spec.encoder!r}: {str(exc)[:200]}") from None


def unet_config(
    spec: UnetSpec, classes: list[str], channels: int, halo: int = DEFAULT_HALO, **fields: Any
) -> SegmenterConfig:
    """A :class:`SegmenterConfig` for a U-Net of ``spec`` (window constraints from its depth)."""
    return SegmenterConfig(
        engine="unet",
        classes=list(classes),
        channels=channels,
        halo=halo,
        min_size=spec.multiple,
        multiple=spec.multiple,
        engine_config=spec.to_dict(),
        **fields,
    )


class UnetSegmenter:
    """A trained U-Net behind the :class:`~ncm_core.models.segmenter.Segmenter` interface."""

    def __init__(self, model: Any, config: SegmenterConfig, path: Path | None = None, device: Any = "cpu") -> None:
        self.model = model.eval()
        self.config = config
        self.path = path
        self.device = device
        self.spec = UnetSpec.from_dict(config.engine_config)

    @classmethod
    def build(cls, config: SegmenterConfig) -> UnetSegmenter:
        """An untrained network for ``config`` (training starts here)."""
        return cls(build_unet(UnetSpec.from_dict(config.engine_config), config.channels, len(config.classes)), config)

    def to(self, device: Any) -> UnetSegmenter:
        self.model.to(device)
        self.device = device
        return self

    def logits(self, x: Any) -> Any:
        """``(N, C, H, W)`` tensor -> ``(N, K, H, W)`` logits; sides not a multiple of ``config.multiple`` are
        padded at the bottom and right by reflection and cropped back (the origin, and so the result of
        every pixel, stays where it is)."""
        import torch.nn.functional as F

        m = self.config.multiple
        h, w = x.shape[-2:]
        ph, pw = -h % m, -w % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self.model(x)[..., :h, :w]

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)).to(self.device)
        self.model.eval()
        with torch.inference_mode():
            return self.logits(x).float().softmax(1).cpu().numpy()

    def save(self, path: str | Path) -> Path:
        """``model.safetensors`` (written under a temporary name, then renamed) and ``config.json``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        tmp = path / (WEIGHTS + ".partial")
        save_file(state, str(tmp), metadata={"format": "ncm-segmenter", "encoder": self.spec.encoder})
        os.replace(tmp, path / WEIGHTS)
        write_config(path, self.config)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | Path, config: SegmenterConfig, device: str = "cpu") -> UnetSegmenter:
        from safetensors.torch import load_file

        from ncm_core.devices import resolve_device

        path = Path(path)
        weights = path / WEIGHTS
        if not weights.is_file():
            raise NcmError("segmentation bundle has no model.safetensors", path)
        seg = cls.build(config)
        try:
            seg.model.load_state_dict(load_file(str(weights)))
        except Exception as exc:
            raise NcmError(f"the weights do not fit the network in config.json: {str(exc)[:200]}", weights) from None
        seg.path = path
        return seg.to(resolve_device(device))


def measure_reach(
    segmenter: Any,
    images: list[np.ndarray],
    tol: float = 1e-3,
    patch: int | None = None,
    max_reach: int = MAX_REACH,
    step: int = 16,
) -> dict[str, Any]:
    """The practical receptive field of ``segmenter``: the smallest ``d`` (a multiple of ``step`` px) such
    that replacing everything farther than ``d`` from a patch changes the patch's class probabilities by
    less than ``tol`` (largest change over patches of the first two normalised ``images``, ``(C, H, W)``).

    The change shrinks as ``d`` grows, so ``d`` is found by bisection (a few forward passes). Returns
    ``{"reach": d, "tol": tol, "changes": {d tested: largest change}}``; ``reach`` is ``max_reach`` when
    even that distance changes the result by ``tol`` or more."""
    m = int(segmenter.config.multiple)
    patch = patch or max(m, 32)
    pad = -(-max_reach // m) * m + m
    side = patch + 2 * pad  # a multiple of m, the patch at a multiple of m from the origin
    probes = []
    for img in images[:2]:
        img = np.asarray(img, np.float32)
        big = np.pad(img, [(0, 0)] + [(0, max(0, side - s)) for s in img.shape[1:]], mode="symmetric")
        x = np.ascontiguousarray(big[:, :side, :side])
        probes.append((x, x[:, ::-1, ::-1].copy()))  # the other: realistic content, not the patch's surroundings
    core = np.s_[:, :, pad : pad + patch, pad : pad + patch]
    base = segmenter.predict_proba(np.stack([x for x, _ in probes]))[core]
    changes: dict[int, float] = {}

    def change(d: int) -> float:
        batch = []
        for x, other in probes:
            y = other.copy()
            y[:, pad - d : pad + patch + d, pad - d : pad + patch + d] = x[
                :, pad - d : pad + patch + d, pad - d : pad + patch + d
            ]
            batch.append(y)
        changes[d] = round(float(np.abs(segmenter.predict_proba(np.stack(batch))[core] - base).max()), 6)
        return changes[d]

    cands = list(range(step, max_reach + 1, step))
    lo, hi = 0, len(cands)  # the answer's index lies in [lo, hi]; hi = len: not within max_reach
    while lo < hi:
        mid = (lo + hi) // 2
        if change(cands[mid]) < tol:
            hi = mid
        else:
            lo = mid + 1
    reach = cands[lo] if lo < len(cands) else max_reach
    return {"reach": int(reach), "tol": tol, "changes": dict(sorted(changes.items()))}


def halo_for(reach: int, multiple: int) -> int:
    """The window halo for a measured ``reach``: rounded up to half the network's ``multiple`` (so that a
    window's stride, window - 2 * halo, stays on its grid), at least 8 px."""
    step = max(1, multiple // 2)
    return max(8, -(-int(reach) // step) * step)
