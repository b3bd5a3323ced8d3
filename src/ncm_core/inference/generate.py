"""Volumes of any size from a trained generator, streamed to an OME-Zarr group block by block.

The volume is the generator's output for one large latent (``latent_channels`` x ``Lz`` x ``Ly`` x ``Lx``,
just large enough for the requested size; the excess is cropped at the far end). It is never built whole:

- the latent is drawn in chunks of ``LATENT_CHUNK`` voxels a side, each from its own generator seeded by
  ``(seed, chunk index)``, so any part of it is the same whatever part is asked for, and the same seed
  gives the same volume;
- each output block (``block`` voxels a side, one zarr chunk) is made from the latent sub-block that
  covers it: the generator's layers (transposed conv k=4, s=2, padding >= 2) make every output voxel of a
  sub-block equal to the whole latent's voxel (:func:`ncm_core.models.slicegan.block_output`), so
  overlapping sub-blocks whose outputs are cut to the block give exactly the whole volume, without seams.
  Neighbouring sub-blocks overlap by about two latent voxels (64 output voxels for a 64-voxel training
  size); memory is that of one sub-block.

Output: a zarr v3 group, ``0`` = ``uint8`` phase labels (value ``k + 1`` for phase ``k``; the phases'
label values in the training images are in the attributes), NGFF ``zyx`` multiscale metadata, and the
run in ``attrs["ncm"]``. napari-ncm's reader opens it as a 3D labels layer.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.models.slicegan import GeneratorBundle, block_output, latent_for, load_generator
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output, check_output, check_space
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

VOLUME_KIND = "generated-volume"
LATENT_CHUNK = 8


@dataclass(frozen=True)
class VolumeOptions:
    """Options of :func:`generate_volume`: the one home of their defaults."""

    size: tuple[int, int, int] = (128, 128, 128)  # voxels (z, y, x)
    seed: int = 0
    block: int = 128  # voxels a side made at once (and the zarr chunk)
    voxel_size: float | None = None  # micrometres per voxel (None: unknown)
    device: str = "auto"
    overwrite: bool = False


def latent_block(seed: int, channels: int, lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    """Latent voxels ``[lo, hi)`` (z, y, x) of the volume drawn with ``seed``: ``(channels, *hi - lo)``."""
    c = LATENT_CHUNK
    out = np.empty((channels, *(h - lo_ for lo_, h in zip(lo, hi))), np.float32)
    ranges = [range(lo_ // c, (h - 1) // c + 1) for lo_, h in zip(lo, hi)]
    for iz in ranges[0]:
        for iy in ranges[1]:
            for ix in ranges[2]:
                idx = (iz, iy, ix)
                piece = np.random.default_rng([seed, *idx]).standard_normal((channels, c, c, c), np.float32)
                src = [slice(max(lo[k] - i * c, 0), min(hi[k] - i * c, c)) for k, i in enumerate(idx)]
                dst = [slice(i * c + s.start - lo[k], i * c + s.stop - lo[k]) for k, (i, s) in enumerate(zip(idx, src))]
                out[(slice(None), *dst)] = piece[(slice(None), *src)]
    return out


def latent_span(c0: int, c1: int, layers: int, total: int) -> tuple[int, int, int]:
    """The latent voxels ``[a, b)`` whose output covers output voxels ``[c0, c1)``, and that output's offset."""
    a = min(c0 // 2**layers, total - 1)
    b = a + 1
    while b < total and sum(block_output(a, b, layers)) < c1:
        b += 1
    return a, b, block_output(a, b, layers)[0]


def is_volume(path: str | Path) -> bool:
    """Whether ``path`` is a volume written by :func:`generate_volume`."""
    import json

    p = Path(path) / "zarr.json"
    try:
        return p.is_file() and json.loads(p.read_text())["attributes"]["ncm"]["kind"] == VOLUME_KIND
    except (OSError, ValueError, KeyError, TypeError):
        return False


def read_volume(path: str | Path) -> np.ndarray:
    """A generated volume's phase labels, read whole (``uint8``, value ``k + 1`` for phase ``k``)."""
    import zarr

    if not is_volume(path):
        raise NcmError("not a generated volume (write one with ncm generate volume)", path)
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])


def generate_volume(
    bundle: str | Path | GeneratorBundle,
    out: str | Path,
    options: VolumeOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Path:
    """Generate a volume of ``size`` voxels from the generator ``bundle`` into the zarr group ``out``."""
    import torch
    import zarr

    o = merge_options(VolumeOptions, options, overrides)
    size = tuple(int(s) for s in o.size)
    if len(size) != 3 or min(size) < 1:
        raise NcmError(f"the volume size must be three whole numbers Z,Y,X of at least 1, got {o.size}")
    if o.block < 8:
        raise NcmError(f"block must be at least 8 voxels, got {o.block}")
    inputs = [bundle] if isinstance(bundle, (str, Path)) else []
    out = check_output(out, o.overwrite, inputs)
    try:
        check_space(out, int(np.prod(size, dtype=np.int64)), f"a {size[0]} x {size[1]} x {size[2]} volume")
    except NcmError as exc:
        raise NcmError(f"too large for the disk: {exc}", out) from None
    dev = resolve_device(o.device)
    b = bundle if isinstance(bundle, GeneratorBundle) else load_generator(bundle, dev)
    model = b.model.to(dev).eval()
    n = b.spec.layers
    total = [latent_for(s, n) for s in size]
    t0 = time.monotonic()
    blocks = [range(0, s, o.block) for s in size]
    n_blocks = int(np.prod([len(r) for r in blocks]))
    attrs = {
        "kind": VOLUME_KIND,
        "complete": False,
        "phases": b.spec.phases,
        "labels": "value k + 1 is phase k",
        "latent": total,
        "options": {**asdict(o), "size": list(size)},
        "bundle": str(b.path) if b.path else None,
        "training": {"phase_fractions": b.spec.training.get("phase_fractions")},
    }
    with atomic_output(out, o.overwrite, inputs=inputs) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        arr = root.create_array(
            "0", shape=size, dtype=np.uint8, chunks=(o.block,) * 3, fill_value=0, dimension_names=["z", "y", "x"]
        )
        done = 0
        report(progress, 0, n_blocks, "generating")
        for z0 in blocks[0]:
            for y0 in blocks[1]:
                for x0 in blocks[2]:
                    check_cancel(cancel)
                    lo, hi, cut = [], [], []
                    for k, c0 in enumerate((z0, y0, x0)):
                        c1 = min(c0 + o.block, size[k])
                        a, bb, off = latent_span(c0, c1, n, total[k])
                        lo.append(a)
                        hi.append(bb)
                        cut.append(slice(c0 - off, c1 - off))
                    z = torch.from_numpy(latent_block(o.seed, b.spec.latent_channels, tuple(lo), tuple(hi)))
                    with torch.inference_mode():
                        probs = model(z[None].to(dev))[0]
                    labels = (probs.argmax(0)[tuple(cut)] + 1).to(torch.uint8).cpu().numpy()
                    arr[z0 : z0 + labels.shape[0], y0 : y0 + labels.shape[1], x0 : x0 + labels.shape[2]] = labels
                    done += 1
                    report(progress, done, n_blocks, f"block {done}/{n_blocks}")
        seconds = time.monotonic() - t0
        scale = [o.voxel_size or 1.0] * 3
        axes = [{"name": a, "type": "space", **({"unit": "micrometer"} if o.voxel_size else {})} for a in "zyx"]
        root.attrs["ome"] = {
            "version": "0.5",
            "multiscales": [
                {
                    "name": "generated volume",
                    "axes": axes,
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
                }
            ],
        }
        attrs.update(complete=True, seconds=round(seconds, 3), voxels_per_second=float(np.prod(size)) / seconds)
        attrs["device"] = str(dev)
        root.attrs["ncm"] = attrs
    return Path(out)
