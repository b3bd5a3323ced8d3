"""SliceGAN-style networks: a 3D generator of phase volumes and 2D critics of its slices, and their bundle.

SliceGAN (Kench & Cooper, Nature Machine Intelligence 3, 299-305, 2021) is a research script, not a
package, so the networks are written here in plain PyTorch, following the paper's rules:

- **generator**: transposed 3D convolutions with kernel 4, stride 2 and padding 2 (the last layer
  padding 3), so that every output voxel receives the same number of kernel contributions ("uniform
  information density", the paper's ``{k, s, p}`` rule ``s < k``, ``k mod s = 0``, ``p >= k - s``): no
  checkerboard and no edge artefacts. A latent of 4 voxels a side gives ``2 ** (layers + 1)`` voxels a
  side; a larger latent gives a larger volume from the same weights. BatchNorm + ReLU between layers, a
  softmax over phases at the output (one channel per phase: volume fractions are the channel means),
  after fixed per-phase logit offsets that calibrate the phase fractions (``GeneratorSpec.logit_offsets``);
- **critics**: 2D convolutions, kernel 4, stride 2, padding 1, down to 4 x 4, then one kernel-4 layer to
  a single score (no normalisation, as WGAN-GP wants). An isotropic material has one critic for the three
  axes; an anisotropic one a critic per axis, each shown its own training image.

Bundle: ``config.json`` (``"format": "ncm-generator"``, :class:`GeneratorSpec` and what training
measured) and ``model.safetensors`` (the generator's weights); never pickled.

The generator is local: an output voxel depends on a few latent voxels only, and with BatchNorm in
evaluation mode it is a fixed function of them. :func:`block_output` says which output voxels a
latent sub-block makes (all of them equal the whole latent's), which is what lets
:mod:`ncm_core.inference.generate` stream volumes of any size block by block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.outputs import register_marker

FORMAT = "ncm-generator"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LATENT_EDGE = 4  # latent voxels a side of a training sample


@dataclass
class GeneratorSpec:
    """Everything needed to rebuild a generator: phases (their label values), sizes and widths."""

    phases: list[int]  # label value of each phase in the training images (channel k = phase k)
    size: int = 64  # voxels a side of a training sample (2 ** (layers + 1))
    latent_channels: int = 16
    gen_width: int = 32  # channels of the last hidden generator layer (doubling towards the latent)
    critic_width: int = 32  # channels of the first critic layer (doubling, at most 256)
    isotropic: bool = True
    logit_offsets: list[float] = field(default_factory=list)  # per phase, added before the softmax ([]: none)
    training: dict[str, Any] = field(default_factory=dict)  # what training measured (fractions, metrics)

    @property
    def layers(self) -> int:
        return layers_for(self.size)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}


def layers_for(size: int) -> int:
    """Generator layers for a training sample of ``size`` voxels a side (a power of two, 16 or more)."""
    n = int(size).bit_length() - 2
    if size < 16 or 2 ** (n + 1) != size:
        raise NcmError(f"the training size must be a power of two of at least 16 voxels, got {size}")
    return n


def paddings(layers: int) -> list[int]:
    return [2] * (layers - 1) + [3]


def out_length(latent: int, layers: int) -> int:
    """Voxels along an axis produced from ``latent`` latent voxels (transposed conv k=4, s=2)."""
    n = latent
    for p in paddings(layers):
        n = 2 * (n - 1) - 2 * p + 4
    return n


def latent_for(length: int, layers: int) -> int:
    """The smallest latent length whose output is at least ``length`` voxels."""
    lat = LATENT_EDGE
    while out_length(lat, layers) < length:
        lat += 1
    return lat


def block_output(start: int, stop: int, layers: int) -> tuple[int, int]:
    """Latent voxels ``[start, stop)`` of a larger latent make output voxels ``[offset, offset + length)`` of
    the larger latent's output, exactly: ``(offset, length)``.

    A transposed conv (k=4, s=2) gives full-output voxel ``q`` from inputs ``ceil((q-3)/2) .. floor(q/2)``,
    all inside the block for ``2 <= q < 2n``; padding ``p >= 2`` crops the rest. So every voxel a sub-block
    outputs is the whole latent's voxel (BatchNorm in evaluation mode and ReLU act voxel by voxel), and the
    offset doubles at each layer (``tests/test_generate.py`` checks it against the whole volume).
    """
    offset, n = start, stop - start
    for p in paddings(layers):
        offset, n = 2 * offset, 2 * (n - 1) - 2 * p + 4
    return offset, n


def gen_channels(spec: GeneratorSpec) -> list[int]:
    n = spec.layers
    hidden = [spec.gen_width * 2 ** (n - 2 - k) for k in range(n - 1)]
    return [spec.latent_channels, *hidden, len(spec.phases)]


def critic_channels(spec: GeneratorSpec) -> list[int]:
    halvings = spec.layers - 1  # size -> 4
    return [len(spec.phases), *[min(256, spec.critic_width * 2**k) for k in range(halvings)], 1]


def build_generator(spec: GeneratorSpec) -> Any:
    import torch.nn as nn

    ch, pads = gen_channels(spec), paddings(spec.layers)
    mods: list[Any] = []
    for k, p in enumerate(pads):
        mods.append(nn.ConvTranspose3d(ch[k], ch[k + 1], 4, 2, p, bias=False))
        if k < len(pads) - 1:
            mods += [nn.BatchNorm3d(ch[k + 1]), nn.ReLU(inplace=True)]
    if spec.logit_offsets:
        mods.append(_offsets(spec.logit_offsets))
    mods.append(nn.Softmax(dim=1))
    return nn.Sequential(*mods)


def _offsets(values: list[float]) -> Any:
    """A layer that adds a fixed offset per phase to the logits (the phase-fraction calibration of
    :func:`ncm_core.training.generate.calibrate_fractions`); its values live in the spec, not the weights."""
    import torch

    class PhaseOffsets(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            v = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1, 1)
            self.register_buffer("offsets", v, persistent=False)

        def forward(self, x: Any) -> Any:
            return x + self.offsets

    return PhaseOffsets()


def build_critic(spec: GeneratorSpec) -> Any:
    import torch.nn as nn

    ch = critic_channels(spec)
    mods: list[Any] = []
    for k in range(len(ch) - 2):
        mods += [nn.Conv2d(ch[k], ch[k + 1], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    mods.append(nn.Conv2d(ch[-2], 1, 4, 1, 0))
    return nn.Sequential(*mods)


@dataclass
class GeneratorBundle:
    """A trained generator (in evaluation mode) with its spec."""

    spec: GeneratorSpec
    model: Any
    path: Path | None = None

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(folder / WEIGHTS))
        (folder / CONFIG).write_text(json.dumps(self.spec.to_dict(), indent=2))
        return folder


def is_generator(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG
    try:
        return cfg.is_file() and json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


register_marker("a generator bundle", is_generator)


def load_generator(path: str | Path, device: Any = "cpu") -> GeneratorBundle:
    """Load a generator bundle (nothing is unpickled); one-line errors for what is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise NcmError("not a generator bundle: config.json is missing (train one with ncm generate train)", path)
    try:
        d = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise NcmError(f"unreadable config.json: {e}", path / CONFIG) from None
    if d.get("format") != FORMAT:
        raise NcmError(f"not a generator bundle (format is {d.get('format')!r}); train one: ncm generate train", path)
    if int(d.get("format_version", 0)) > FORMAT_VERSION:
        raise NcmError("generator bundle written by a newer napari-ncm: upgrade to read it", path)
    known = set(GeneratorSpec.__dataclass_fields__)
    spec = GeneratorSpec(**{k: v for k, v in d.items() if k in known})
    model = build_generator(spec)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS)))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise NcmError(f"generator weights cannot be read ({str(e).splitlines()[0][:160]})", path / WEIGHTS) from None
    return GeneratorBundle(spec, model.to(device).eval(), path)
