"""Class probabilities for batches of tiles (PyTorch or ONNX Runtime)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncm_core.inference.layout import use_channels_last
from ncm_core.models.bundle import ModelBundle
from ncm_core.models.preprocess import tiles_to_tensor
from ncm_core.progress import check_cancel


def tta_views(x: Any) -> list[Any]:
    """Test-time augmentation views of a batch ``(N, C, H, W)`` (tensor or array): itself, mirrored left-right,
    upside down, and transposed (a quarter turn and a mirror)."""
    if hasattr(x, "flip"):
        return [x, x.flip(-1), x.flip(-2), x.transpose(-2, -1)]
    return [np.ascontiguousarray(v) for v in (x, x[..., ::-1], x[..., ::-1, :], x.swapaxes(-2, -1))]


def classify_tensor(
    bundle: ModelBundle,
    x: Any,
    device: Any = "cpu",
    batch_size: int = 64,
    channels_last: bool = False,
    ood: bool = False,
    backend: str = "torch",
    cancel: Any = None,
    tta: bool = False,
) -> Any:
    """Class probabilities ``(N, classes)`` for a prepared input tensor ``(N, C, H, W)`` (on any device;
    batches are moved to ``device`` asynchronously when ``x`` is in pinned memory).

    With ``ood`` (the bundle must have a detector), returns ``(probabilities, ood_ratio)``.
    ``backend="onnxruntime"`` runs the batches with ONNX Runtime (:mod:`ncm_core.inference.runtime`, CPU only).
    ``cancel`` is checked between batches. ``tta`` averages the probabilities of the :func:`tta_views`
    (the out-of-distribution score is the plain view's).
    """
    if tta:
        views = tta_views(x)
        first = classify_tensor(bundle, views[0], device, batch_size, channels_last, ood, backend, cancel)
        probs = first[0] if ood else first
        for v in views[1:]:
            probs = probs + classify_tensor(bundle, v, device, batch_size, channels_last, False, backend, cancel)
        probs = probs / len(views)
        return (probs, first[1]) if ood else probs
    if backend == "onnxruntime":
        return classify_array(bundle, x.numpy() if hasattr(x, "numpy") else x, batch_size, ood, cancel)
    import torch

    from ncm_core.models.ood import forward_with_features, ood_ratio

    model = bundle.model
    dev = torch.device(device)
    if channels_last:
        use_channels_last(model)
    out, scores = [], []
    amp = dict(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    with torch.inference_mode(), torch.autocast(**amp):
        for k in range(0, len(x), batch_size):
            check_cancel(cancel)
            xb = x[k : k + batch_size].to(dev, non_blocking=True)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            if ood:
                logits, feats = forward_with_features(model, xb)
            else:
                logits = model(xb)
            if ood:
                scores.append(ood_ratio(bundle, feats).cpu().numpy())
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    probs = np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)
    if ood:
        return probs, (np.concatenate(scores) if scores else np.zeros(0, np.float32))
    return probs


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32."""
    z = np.asarray(logits, dtype=np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classify_array(
    bundle: ModelBundle, x: np.ndarray, batch_size: int = 64, ood: bool = False, cancel: Any = None
) -> Any:
    """:func:`classify_tensor` with ONNX Runtime, in numpy: ``x`` is a float32 array ``(N, C, H, W)`` at
    the model's input size. Uses the bundle's cached graph (needs no PyTorch) or exports it."""
    from ncm_core.inference.runtime import model_part, onnx_runner
    from ncm_core.models.ood import ood_ratio_array

    runner = onnx_runner(bundle, model_part(False, ood))
    out, scores = [], []
    for k in range(0, len(x), batch_size):
        check_cancel(cancel)
        logits, feats = runner(x[k : k + batch_size])
        out.append(softmax(logits))
        if ood:
            scores.append(ood_ratio_array(bundle, feats))
    probs = np.concatenate(out) if out else np.zeros((0, bundle.config.num_outputs), np.float32)
    if ood:
        return probs, (np.concatenate(scores) if scores else np.zeros(0, np.float32))
    return probs


def classify_tiles(
    bundle: ModelBundle, tiles: np.ndarray, device: Any = "cpu", batch_size: int = 64, channels_last: bool = False
) -> np.ndarray:
    """Class probabilities ``(N, classes)`` for tiles ``(N, h, w[, C])``."""
    return classify_tensor(
        bundle, tiles_to_tensor(tiles, bundle.config.input, "cpu", channels_last), device, batch_size, channels_last
    )
