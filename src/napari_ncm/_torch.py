"""Importing torch safely inside a running napari.

torchvision imports ``torch._dynamo``, which imports triton when it is
installed (CUDA builds of torch bring it). triton >= 3.7 exports its own LLVM
symbols, and loading it into a process where another LLVM is already loaded
crashes the interpreter (SIGSEGV) -- the same clash as
tensorflow/tensorflow#124205. In napari that other LLVM is Mesa's llvmpipe,
the software OpenGL renderer of virtual displays (Xvfb), VMs and remote
desktops. The plugin never uses triton (no ``torch.compile``), so before torch
is first imported in a napari session we make ``import triton`` fail cleanly;
torch then treats triton as absent. Set ``NAPARI_NCM_ALLOW_TRITON=1`` to keep it.
"""

from __future__ import annotations

import os
import sys


def guard_triton() -> None:
    """Keep triton from loading, unless torch or triton is already loaded or the user opted out."""
    if os.environ.get("NAPARI_NCM_ALLOW_TRITON") or "triton" in sys.modules or "torch._dynamo" in sys.modules:
        return
    sys.modules["triton"] = None  # type: ignore[assignment]  # 'import triton' now raises ImportError
