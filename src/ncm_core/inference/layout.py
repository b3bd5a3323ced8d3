"""Memory layout of the model's inputs: contiguous or channels-last, chosen by a short measurement.

Also :func:`time_once`, the timing helper that :mod:`ncm_core.inference.runtime` uses to choose a backend.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.models.bundle import ModelBundle

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
_LAYOUTS: dict[tuple, str] = {}  # measured choices, per process (the widget predicts many times)


def use_channels_last(model: Any) -> None:
    """Convert ``model`` to channels-last layout (once)."""
    import torch

    if not getattr(model, "_ncm_channels_last", False):
        model.to(memory_format=torch.channels_last)
        model._ncm_channels_last = True


def time_once(runs: dict[str, Any], cuda: bool = False) -> dict[str, float]:
    """Seconds of one call of each function, after an untimed call that sets up kernels."""
    import torch

    times = {}
    with torch.inference_mode():
        for name, run in runs.items():
            run()
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            run()
            if cuda:
                torch.cuda.synchronize()
            times[name] = time.perf_counter() - t
    return times


def choose_memory_format(
    bundle: ModelBundle, batch_size: int, device: Any, n_tiles: int, requested: str = "auto", dense: bool = False
) -> str:
    """``"channels_last"`` or ``"contiguous"``: the faster one by a short measurement.

    Only runs of at least 4 batches (and 256 tiles) are measured; smaller ones keep the
    default layout. The measurement times one pass per layout (after an
    untimed one that sets up kernels) on a batch of up to 16 tiles (dense mode:
    the trunk on a region of 2 x 2 tiles), a fraction of a second; layouts that
    matter differ by 30 % or more. The choice is remembered for the rest of
    the process.
    """
    if requested in ("channels_last", "contiguous"):
        return requested
    if requested != "auto":
        raise NcmError(f"memory format must be 'auto', 'channels_last' or 'contiguous', got {requested!r}")
    if n_tiles < max(4 * batch_size, 256):
        return "contiguous"
    import copy

    import torch

    spec = bundle.config.input
    key = (
        bundle.config.architecture,
        json.dumps(spec.to_dict(), sort_keys=True),
        min(batch_size, 16),
        str(device),
        torch.get_num_threads(),
        dense,
    )
    if key in _LAYOUTS:
        return _LAYOUTS[key]
    if dense:
        x = torch.rand(1, spec.in_chans, 2 * spec.input_size[0], 2 * spec.input_size[1], device=device)
    else:
        x = torch.rand(min(batch_size, 16), spec.in_chans, *spec.input_size, device=device)
    runs = {}
    for fmt in ("contiguous", "channels_last"):
        m = bundle.model if fmt == "contiguous" else copy.deepcopy(bundle.model).to(memory_format=torch.channels_last)
        xi = x if fmt == "contiguous" else x.contiguous(memory_format=torch.channels_last)
        runs[fmt] = (lambda m=m, xi=xi: m.forward_features(xi)) if dense else (lambda m=m, xi=xi: m(xi))
    times = time_once(runs, cuda=x.is_cuda)
    _LAYOUTS[key] = min(times, key=times.get)
    return _LAYOUTS[key]
