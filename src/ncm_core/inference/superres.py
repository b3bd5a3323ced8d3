"""Super-resolution of whole mosaics on the streaming engine, tile by tile without seams.

The network works at the input's resolution and outputs ``factor ** 2`` sub-pixel channels per input
pixel (:mod:`ncm_core.models.superres`), so super-resolution is a :class:`WindowTask` like any other:
windows with a halo of the network's reach, blended where they overlap, read ahead, resumable. The
sub-pixel channels (``sub/0``, ``(factor ** 2, H, W)``) are then arranged chunk by chunk into the
``factor`` x larger image ``0`` (a pixel shuffle moves values, it computes nothing across pixels, so the
result has no seams either), in the input's intensity units, with NGFF metadata.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.devices import resolve_device
from ncm_core.errors import NcmError
from ncm_core.inference import engine
from ncm_core.inference.engine import Context
from ncm_core.inference.windows import WindowGeometry, WindowTask
from ncm_core.models.superres import SuperresBundle, load_superres
from ncm_core.options import merge_options
from ncm_core.outputs import check_output, check_space
from ncm_core.progress import CancelFlag, ProgressFn, run_steps

SUPERRES_KIND = "superres"


@dataclass(frozen=True)
class SuperresOptions:
    """Options of :func:`apply_superres`: the one home of their defaults."""

    factor: int | None = None  # must be the model's (None: the model's)
    window: int = 128  # input pixels a side of a window (with its halo)
    chunk: int = 256  # input pixels a side of a block
    batch_size: int = 8
    device: str = "auto"
    overwrite: bool = False
    resume: bool = True


@dataclass
class SuperresTask(WindowTask):
    norm: tuple[float, float] = (0.0, 1.0)

    def to_input(self, ctx: Context, windows: np.ndarray) -> Any:
        import torch

        lo, hi = self.norm
        return torch.from_numpy(((windows.astype(np.float32) - lo) / max(hi - lo, 1e-12))[:, None])

    def run_windows(self, ctx: Context, x: Any) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return ctx.bundle.model(x.to(ctx.device)).float().cpu().numpy()


def _fingerprint(bundle: SuperresBundle, mosaic: Any, settings: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for k, v in bundle.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    h.update(json.dumps({**settings, "source": mosaic.source, "shape": list(mosaic.shape)}, default=str).encode())
    return h.hexdigest()


def apply_superres(
    bundle: str | Path | SuperresBundle,
    image: Any,
    out: str | Path,
    options: SuperresOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> Path:
    """Super-resolve the grey-level ``image`` (any size, read lazily) into the zarr group ``out``."""
    import zarr

    from ncm_core.io.mosaic import open_mosaic

    o = merge_options(SuperresOptions, options, overrides)
    dev = resolve_device(o.device)
    b = bundle if isinstance(bundle, SuperresBundle) else load_superres(bundle, dev)
    f = b.spec.factor
    if o.factor is not None and int(o.factor) != f:
        raise NcmError(
            f"this model was trained for {f}x super-resolution, not {o.factor}x; train one for {o.factor}x "
            f"(ncm superres train --factor {o.factor})",
            b.path,
        )
    mosaic = open_mosaic(image)
    if mosaic.data.ndim != 2:
        raise NcmError("super-resolution takes a grey-level image", mosaic.source)
    out = check_output(out, o.overwrite, [x for x in (b.path, mosaic.source) if x])
    H, W = mosaic.shape
    check_space(out, (f * f * 4 * 2) * H * W, "the super-resolved image")
    halo = b.spec.halo
    window = max(int(o.window), 2 * halo + 8)
    geometry = WindowGeometry((H, W), window, halo, 0, 1, int(o.chunk), "constant")
    task = SuperresTask(geometry, f * f, int(o.batch_size), "sub/0", (b.spec.norm_low, b.spec.norm_high))
    settings = {k: v for k, v in asdict(o).items() if k not in engine.RUN_ONLY} | {"window": window}
    fp = _fingerprint(b, mosaic, settings)
    attrs: dict[str, Any] = {
        "kind": SUPERRES_KIND,
        "complete": False,
        "fingerprint": fp,
        "factor": f,
        "source": mosaic.source,
        "bundle": str(b.path) if b.path else None,
        "options": settings,
    }
    b.model.to(dev).eval()
    t0 = time.monotonic()
    partial, root, _ = engine.start(out, fp, attrs, task, overwrite=o.overwrite, resume=o.resume)
    gen = engine.execute(task, Context(b, mosaic, dev, cancel, requested_device=o.device), cancel=cancel)
    failed = run_steps(gen, progress, "super-resolution")
    engine.settle(failed, False, attrs, root, task, mosaic.source or out)
    sub = zarr.open_array(str(partial / "sub" / "0"), mode="r")
    c = int(o.chunk)
    img = root.create_array(
        "0", shape=(H * f, W * f), dtype=np.float32, chunks=(c * f, c * f), dimension_names=["y", "x"], overwrite=True
    )
    lo, hi = b.spec.norm_low, b.spec.norm_high
    for y0 in range(0, H, c):
        for x0 in range(0, W, c):
            s = np.asarray(sub[:, y0 : y0 + c, x0 : x0 + c])
            k, h, w = s.shape
            tile = s.reshape(f, f, h, w).transpose(2, 0, 3, 1).reshape(h * f, w * f)
            img[y0 * f : (y0 + h) * f, x0 * f : (x0 + w) * f] = tile * (hi - lo) + lo
    px = mosaic.pixel_size or 1.0
    unit = {"unit": "micrometer"} if mosaic.pixel_size else {}
    root.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "name": "super-resolved",
                "axes": [{"name": a, "type": "space", **unit} for a in "yx"],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [px / f, px / f]}]}
                ],
            }
        ],
    }
    attrs.update(seconds=round(time.monotonic() - t0, 3), device=str(dev))
    return engine.complete(root, attrs, partial, out)


def read_superres(path: str | Path) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_group(str(path), mode="r")["0"][...])
