"""Compute devices: which one to run on, and which mixed precision suits it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ncm_core.errors import NcmError

AMP_MODES = ("auto", "off", "bf16", "fp16")


def resolve_device(device: str = "auto") -> Any:
    """The torch device for ``device`` (``auto``: CUDA when present, else the CPU)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise NcmError(f"unknown device {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NcmError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def amp_dtype(amp: str, device: Any):
    """The autocast dtype for ``amp`` on ``device`` (None = full precision).

    ``auto`` is bfloat16 on GPUs that support it (float16 with loss scaling on
    older ones) and off on CPUs, where autocast is slower than float32.
    """
    import torch

    if amp not in AMP_MODES:
        raise NcmError(f"mixed precision must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        if device.type != "cuda":
            raise NcmError("float16 mixed precision needs a CUDA device; use bf16 or off on a CPU")
        return torch.float16
    return torch.bfloat16


@contextmanager
def exact_float32() -> Iterator[None]:
    """Convolutions in full float32 precision on CUDA (no TF32) inside the block.

    PyTorch lets cuDNN compute float32 convolutions in TF32 on recent GPUs (10-bit mantissa), which
    moves gradient-based attributions by about 1 % of their range: explanations are computed exactly,
    so that a map on the GPU matches the same map on the CPU.
    """
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # PyTorch >= 2.9
        old = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = old
    else:
        old = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = old
