"""The light path of a short prediction: ONNX Runtime on a cached graph, without PyTorch or timm.

For a small mosaic, importing PyTorch and timm and rebuilding the model take most of the time (about
6 of 9 s for 16 tiles) and most of the memory. When the bundle's graph is in the cache
(:mod:`ncm_core.inference.onnx_cache`), :func:`~ncm_core.inference.predict.predict_mosaic` reads only
the bundle's config (and OOD statistics, as numpy), prepares tiles with numpy and runs the graph in
ONNX Runtime; the probabilities and OOD scores are those of the PyTorch path with
``backend="onnxruntime"``, byte for byte. Conditions: the bundle is given as a folder; backend
``"auto"`` or ``"onnxruntime"``; device ``"cpu"``, or ``"auto"`` on a machine without an NVIDIA GPU;
ONNX Runtime installed; tiles at the model's input size (no resizing); not dense mode nor
distributed; fewer than 16 batches (:func:`~ncm_core.inference.runtime.short_run`); and a resumed
run only when its first part ran on ONNX Runtime.

After a short CPU run on PyTorch that would have qualified, :func:`cache_for_next_run` exports the
graph (once the output is complete), so the next such run is light.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ncm_core.inference import onnx_cache, runtime
from ncm_core.inference.options import PredictOptions
from ncm_core.outputs import partial_path

log = logging.getLogger(__name__)
_WARNED: list[bool] = []  # export failures are logged once per process


def gpu_likely() -> bool:
    """Whether ``device="auto"`` would pick a CUDA GPU, answered without importing PyTorch when it is
    not loaded yet (an NVIDIA driver with a GPU, not hidden by ``CUDA_VISIBLE_DEVICES``)."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        return bool(torch.cuda.is_available())
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    if gpus.is_dir():
        return any(gpus.iterdir())
    return sys.platform == "win32" and shutil.which("nvidia-smi") is not None


def needs_resize(bundle: Any, grid: Any) -> bool:
    """Whether the grid's tiles differ from the model's input size (resizing needs PyTorch)."""
    return (grid.tile, grid.tile) != tuple(bundle.config.input.input_size)


def resumed_backend(out: Path, fingerprint: str, resume: bool) -> str | None:
    """The backend of the interrupted run that ``<out>.partial`` holds for this ``fingerprint``, or None."""
    partial = partial_path(out)
    if not resume or not partial.exists():
        return None
    import zarr

    try:
        attrs = dict(zarr.open_group(str(partial), mode="r").attrs).get("ncm", {})
    except Exception:
        return None
    return attrs.get("backend", "torch") if attrs.get("fingerprint") == fingerprint else None


def qualifies(bundle: Any, o: PredictOptions, grid: Any, n_tiles: int, scheduler: Any) -> bool:
    """Whether a run like this one may use ONNX Runtime without PyTorch (everything but the cache)."""
    return (
        bundle.path is not None
        and o.backend in ("auto", "onnxruntime")
        and (o.device == "cpu" or (o.device == "auto" and not gpu_likely()))
        and not o.dense
        and scheduler is None
        and not needs_resize(bundle, grid)
        and runtime.short_run(n_tiles, o.batch_size)
        and runtime.have_onnxruntime()
    )


def can_run_light(
    bundle: Any, o: PredictOptions, grid: Any, n_tiles: int, ood: bool, scheduler: Any, first_backend: str | None
) -> bool:
    """True when this run takes the light path (see the module's description); loads the cached graph."""
    if bundle.model is not None or first_backend not in (None, "onnxruntime"):
        return False
    if not qualifies(bundle, o, grid, n_tiles, scheduler):
        return False
    return runtime.cached_runner(bundle, runtime.model_part(False, ood)) is not None


def cache_for_next_run(bundle: Any, o: PredictOptions, grid: Any, n_tiles: int, ood: bool, device: Any) -> None:
    """After a completed short run on PyTorch: export and cache the graph, so that the next run of this
    kind is light. Never fails: an export problem is logged once per process."""
    if str(device) != "cpu" or o.backend != "auto" or not qualifies(bundle, o, grid, n_tiles, None):
        return
    part = runtime.model_part(False, ood)
    try:
        if not onnx_cache.cache_path(bundle, part).is_file():
            runtime.export_to_cache(bundle, part)
    except Exception as exc:
        if not _WARNED:
            _WARNED.append(True)
            log.warning(
                "could not cache the ONNX graph of %s (%s: %s); short predictions keep using PyTorch",
                bundle.path,
                type(exc).__name__,
                str(exc).splitlines()[0][:200] if str(exc) else "",
            )
