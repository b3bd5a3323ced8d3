"""What an explanation follows: its target outputs (classes or regression targets) and its target layer.

Targets: ``"predicted"`` (classifiers; the default), ``"top-K"`` (the K most probable classes), a class
index or name, ``"output:K"`` / a target name / an index (regression), ``"all"`` (every class or
output), or a list of these. Layers: a module name of ``model.named_modules()`` with a spatial output;
by default the last one before global pooling.
"""

from __future__ import annotations

import difflib
import weakref
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.bundle import ModelBundle

__all__ = ["default_layer", "output_names", "resolve_layer", "resolve_targets"]


def output_names(bundle: ModelBundle) -> list[str]:
    """The bundle's class names (classifier) or target names (regression)."""
    c = bundle.config
    return list(c.class_names if c.task == "classify" else c.target_names)


def _one_target(bundle: ModelBundle, spec: Any) -> int:
    c = bundle.config
    names = output_names(bundle)
    n = len(names)
    kind = "class" if c.task == "classify" else "output"
    if isinstance(spec, (int, np.integer)):
        i = int(spec)
        if not 0 <= i < n:
            plural = "classes" if kind == "class" else "outputs"
            raise NcmError(f"{kind} {i} is out of range: the model has {n} {plural} (0-{n - 1})")
        return i
    s = str(spec).strip()
    if ":" in s:
        prefix, value = (p.strip() for p in s.split(":", 1))
        if prefix in ("class", "output", "target"):
            want = "classify" if prefix == "class" else "regress"
            if want != c.task:
                if c.task == "classify":
                    raise NcmError(
                        f"target {spec!r} asks for a regression output, but the model is a classifier "
                        f"({n} classes); use a class index or name, 'predicted' or 'top-K'"
                    )
                raise NcmError(
                    f"target {spec!r} asks for a class, but the model is a regressor with outputs "
                    f"{', '.join(names)}; use 'output:K', a target name or 'all'"
                )
            s = value
    if s.lstrip("-").isdigit():
        return _one_target(bundle, int(s))
    if s in names:
        return names.index(s)
    close = difflib.get_close_matches(s, names, n=1)
    raise NcmError(
        f"unknown {kind} {s!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; the model's {'classes' if kind == 'class' else 'outputs'} are {', '.join(names)}"
    )


def resolve_targets(bundle: ModelBundle, target: Any, scores: np.ndarray) -> np.ndarray:
    """Output indices ``(N, K)`` for ``target`` (see the module docstring) given scores ``(N, outputs)``."""
    c = bundle.config
    N, n_out = scores.shape
    if isinstance(target, np.ndarray) and target.ndim == 2:  # explicit per-tile indices
        if target.shape[0] != N or target.min() < 0 or target.max() >= n_out:
            raise NcmError(f"target indices must be ({N}, K) with values 0-{n_out - 1}")
        return target.astype(np.int64)
    if target is None:
        target = "predicted" if c.task == "classify" else "all"
    specs = list(target) if isinstance(target, (list, tuple)) else [target]
    cols: list[np.ndarray] = []
    for spec in specs:
        s = str(spec).strip().lower() if isinstance(spec, str) else None
        if s in ("predicted", "top-1", "top1") or (s and s.startswith("top")):
            if c.task != "classify":
                raise NcmError(
                    f"target {spec!r} needs a classifier; this model is a regressor with outputs "
                    f"{', '.join(c.target_names)} (use 'output:K', a target name or 'all')"
                )
            k = 1
            if s not in ("predicted",):
                digits = s[3:].lstrip("-")
                if not digits.isdigit() or not 1 <= int(digits) <= n_out:
                    raise NcmError(f"bad target {spec!r}: use 'top-K' with K from 1 to {n_out}")
                k = int(digits)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            cols.extend(order.T)
        elif s == "all":
            cols.extend(np.full(N, i) for i in range(n_out))
        else:
            cols.append(np.full(N, _one_target(bundle, spec)))
    return np.stack(cols, axis=1).astype(np.int64)


_CHECKED_LAYERS: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()


def default_layer(model: Any, input_shape: tuple[int, ...]) -> str:
    """The last layer with a spatial output before global pooling (torchcam's choice), else timm's last stage."""
    import logging

    from torchcam.methods._utils import locate_candidate_layer

    logging.getLogger("torchcam").setLevel(logging.ERROR)
    name = locate_candidate_layer(model, input_shape)
    if isinstance(name, str):
        return name
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    raise NcmError("cannot find a convolutional layer to explain; name one with layer=")


def resolve_layer(model: Any, layer: str | None, input_shape: tuple[int, ...]) -> str:
    """Check that ``layer`` names a module with a spatial (N, C, h, w) output; pick the default when None."""
    import torch

    key = (layer, tuple(input_shape))
    known = _CHECKED_LAYERS.setdefault(model, {})
    if key in known:
        return known[key]
    if layer is None or layer == "":
        layer = default_layer(model, input_shape)
    modules = dict(model.named_modules())
    if layer not in modules:
        close = difflib.get_close_matches(layer, list(modules), n=3)
        raise NcmError(
            f"unknown layer {layer!r}"
            + (f"; close matches: {', '.join(close)}" if close else "")
            + " (see the model's named_modules())"
        )
    seen: list[Any] = []
    h = modules[layer].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.inference_mode():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        h.remove()
    out = seen[0] if seen else None
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[-1] * out.shape[-2] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise NcmError(
            f"layer {layer!r} has no spatial output (its output is {shape}); pick a convolutional "
            f"layer such as {default_layer(model, input_shape)!r}"
        )
    known[key] = layer
    return layer
