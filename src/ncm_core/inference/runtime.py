"""Inference backends for tiled prediction: PyTorch, and ONNX Runtime on the CPU when it is faster.

ONNX Runtime fuses convolution, batch normalisation and activation into one
kernel; on 2 CPU cores it ran EfficientNet-B0 and ResNet-10t 1.2-1.3x faster
than PyTorch in channels-last layout (docs/benchmarks.md). It is optional
(``pip install "napari-ncm[onnx]"``). The model is exported from the weights
already loaded from safetensors (about half a second), with PyTorch's
TorchScript-based exporter, and the graph is kept in a cache keyed by the
weights (:mod:`ncm_core.inference.onnx_cache`); nothing is downloaded or
unpickled, and nothing is written next to the bundle.

``backend="auto"`` (the default of :func:`~ncm_core.inference.predict.predict_mosaic`)
uses ONNX Runtime only on the CPU, where it is installed, and:

- for runs of at least 16 batches (and 1024 tiles) when a short measurement
  (one batch of up to 32 tiles per backend, after an untimed one) finds it
  faster than PyTorch;
- for shorter runs when the graph is already cached and the tiles need no
  resizing (not in dense mode): then nothing needs PyTorch, and a prediction
  from a bundle folder skips importing it (:mod:`ncm_core.inference.light`).

GPUs always use PyTorch. In dense mode the trunk (``forward_features``,
exported with free height and width) runs in ONNX Runtime and the small head
per tile in PyTorch. The choice is stored in the output and kept when a run
resumes, so the result stays byte-identical.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.inference import onnx_cache

BACKENDS = ("auto", "torch", "onnxruntime")
_CHOICES: dict[tuple, str] = {}  # measured choices, per process


def have_onnxruntime() -> bool:
    """Whether ONNX Runtime and the ``onnx`` package (PyTorch's exporter needs it) can be imported."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


OUTPUTS = {"model": ["logits"], "features": ["logits", "features"], "trunk": ["features"]}


class OnnxRunner:
    """A model exported to ONNX and run by ONNX Runtime (an ``onnxruntime.InferenceSession``).

    ``part="model"``: ``runner(x)`` -> ``(logits, None)``; ``"features"``: ``(logits, pre-logits
    features)``; ``"trunk"``: ``(forward_features(x), None)`` for inputs of any height and width
    (dense mode). Inputs are numpy arrays or CPU tensors; outputs are numpy arrays.
    """

    def __init__(self, session: Any, part: str = "model") -> None:
        self.session = session
        self.part = part

    def __call__(self, x: Any) -> tuple[np.ndarray, np.ndarray | None]:
        arr = np.ascontiguousarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32)
        out = self.session.run(None, {"x": arr})
        return out[0], (out[1] if self.part == "features" else None)


def export_graph(model: Any, in_chans: int, input_size: tuple[int, int], part: str = "model") -> bytes:
    """``model`` (or its ``part``) exported to a serialised ONNX graph with PyTorch's TorchScript-based
    exporter, in memory (batch size free; height and width free for ``"trunk"``)."""
    import torch

    class _Part(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            f = self.m.forward_features(x)
            if part == "trunk":
                return f
            return self.m.forward_head(f), self.m.forward_head(f, pre_logits=True)

    if any(q.device.type != "cpu" for q in model.parameters()):
        raise NcmError("the ONNX Runtime backend runs on the CPU; load the bundle on the CPU")
    net = (model if part == "model" else _Part(model)).eval()
    outputs = OUTPUTS[part]
    axes = {"x": {0: "n", 2: "h", 3: "w"} if part == "trunk" else {0: "n"}}
    axes.update({o: {0: "n", 2: "fh", 3: "fw"} if part == "trunk" else {0: "n"} for o in outputs})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation notes are not the user's concern
        torch.onnx.export(
            net,
            (torch.zeros(2, in_chans, *input_size),),
            buf,
            input_names=["x"],
            output_names=outputs,
            dynamic_axes=axes,
            dynamo=False,
        )
    return buf.getvalue()


def cached_runner(bundle: Any, part: str = "model") -> OnnxRunner | None:
    """The bundle's :class:`OnnxRunner` for ``part`` when it is loaded or in the graph cache
    (:mod:`ncm_core.inference.onnx_cache`), else None. Needs neither PyTorch nor timm."""
    memo = bundle.__dict__.setdefault("_ncm_onnx", {})
    usable = bundle.path is not None and (bundle.model is None or onnx_cache.model_matches_file(bundle))
    if part not in memo and usable:  # in-memory models, or files rewritten since loading: not from the cache
        sess = onnx_cache.load_cached(bundle, part)
        if sess is not None:
            memo[part] = OnnxRunner(sess, part)
    return memo.get(part)


def export_to_cache(bundle: Any, part: str = "model") -> bytes:
    """Export the loaded bundle's ``part`` and write it to the graph cache (when it was loaded from a folder
    whose weights file is unchanged since, and the cache can be written); returns the graph."""
    spec = bundle.config.input
    graph = export_graph(bundle.model, spec.in_chans, tuple(spec.input_size), part)
    if onnx_cache.model_matches_file(bundle):  # never cache a model whose file was rewritten since
        graph = onnx_cache.tag(graph, onnx_cache.cache_key(bundle, part))
        onnx_cache.save(bundle, part, graph)
    return graph


def onnx_runner(bundle: Any, part: str = "model") -> OnnxRunner:
    """The bundle's :class:`OnnxRunner` for ``part``: from the graph cache, or exported (about half a
    second) and cached; kept on the loaded bundle (so each dask worker loads it once)."""
    runner = cached_runner(bundle, part)
    if runner is None:
        if bundle.model is None:
            raise NcmError(f"no cached ONNX graph for this bundle ({part}); load the bundle to export it", bundle.path)
        runner = OnnxRunner(onnx_cache.session(export_to_cache(bundle, part)), part)
        bundle.__dict__["_ncm_onnx"][part] = runner
    return runner


def model_part(dense: bool, ood: bool) -> str:
    """The exported part a run needs: the trunk (dense mode), logits and features (OOD) or logits."""
    return "trunk" if dense else "features" if ood else "model"


def short_run(n_tiles: int, batch_size: int) -> bool:
    """Runs of fewer than 16 batches (or 1024 tiles) are too short to gain from measuring anything."""
    return n_tiles < max(16 * batch_size, 1024)


def choose_backend(
    bundle: Any,
    batch_size: int,
    device: Any,
    n_tiles: int,
    requested: str = "auto",
    channels_last: bool = False,
    dense: bool = False,
    ood: bool = False,
    resize: bool = False,
) -> str:
    """``"torch"`` or ``"onnxruntime"`` for a prediction run (see the module's description); ``resize``:
    the tiles are resized to the model's input size (which needs PyTorch)."""
    import torch

    if requested not in BACKENDS:
        raise NcmError(f"backend must be one of {', '.join(BACKENDS)}, got {requested!r}")
    dev = torch.device(device)
    part = model_part(dense, ood)
    if requested == "onnxruntime":
        if not have_onnxruntime():
            raise NcmError('the ONNX Runtime backend needs onnxruntime and onnx: pip install "napari-ncm[onnx]"')
        if dev.type != "cpu":
            raise NcmError(f"the ONNX Runtime backend runs on the CPU, not on {dev}")
        try:  # export now, so that a model the exporter cannot handle fails before the run, in one line
            onnx_runner(bundle, part)
        except NcmError:
            raise
        except Exception as exc:
            raise NcmError(
                f"cannot run this model in ONNX Runtime ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use backend 'torch'",
                bundle.path,
            ) from None
        return requested
    if requested == "torch" or dev.type != "cpu" or not have_onnxruntime():
        return "torch"
    if short_run(n_tiles, batch_size):  # no measurement; a cached graph saves the export
        light = not dense and not resize and cached_runner(bundle, part) is not None
        return "onnxruntime" if light else "torch"
    spec = bundle.config.input
    key = (
        bundle.config.architecture,
        tuple(spec.input_size),
        spec.in_chans,
        min(batch_size, 32),
        channels_last,
        part,
        torch.get_num_threads(),
    )
    if key not in _CHOICES:
        try:
            runner = onnx_runner(bundle, part)
        except Exception as exc:  # a layer the exporter or the runtime does not support: stay on PyTorch
            warnings.warn(f"ONNX export failed ({type(exc).__name__}); predicting with PyTorch", stacklevel=2)
            _CHOICES[key] = "torch"
            return "torch"
        if dense:  # the trunk on a region of 2 x 2 tiles
            x = torch.rand(1, spec.in_chans, 2 * spec.input_size[0], 2 * spec.input_size[1])
        else:
            x = torch.rand(min(batch_size, 32), spec.in_chans, *spec.input_size)  # small batches favour PyTorch
        xt = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        if channels_last:
            bundle.model.to(memory_format=torch.channels_last)
        fwd = bundle.model.forward_features if dense else bundle.model
        from ncm_core.inference.layout import time_once

        timings = time_once({"torch": lambda: fwd(xt), "onnxruntime": lambda: runner(x)})
        _CHOICES[key] = min(timings, key=timings.get)
    return _CHOICES[key]
