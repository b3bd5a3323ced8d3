"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``torch.save`` pickles, and loading a pickle runs code; a checkpoint here is a
folder with ``state.safetensors`` (model, best model, optimizer tensors, RNG
states) and ``state.json`` (epoch, history, optimizer hyper-parameters, the
NumPy generator state and a fingerprint of the settings). Nested Python
structures are stored with their tensors replaced by references, and dicts
as key/value pairs so integer keys (optimizer state) survive JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.outputs import atomic_output

TENSORS = "state.safetensors"
STATE = "state.json"


def split_tensors(obj: Any, tensors: dict[str, Any], prefix: str) -> Any:
    """A JSON-able copy of ``obj`` with each tensor moved into ``tensors`` under a path-like key."""
    import torch

    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, split_tensors(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {
            "__seq__": [split_tensors(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)],
            "tuple": isinstance(obj, tuple),
        }
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def join_tensors(obj: Any, tensors: dict[str, Any]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__seq__" in obj:
            seq = [join_tensors(v, tensors) for v in obj["__seq__"]]
            return tuple(seq) if obj.get("tuple") else seq
    return obj


def save_checkpoint(folder: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (nested dicts/lists of tensors and plain values) atomically to ``folder``."""
    from safetensors.torch import save_file

    tensors: dict[str, Any] = {}
    meta = split_tensors(state, tensors, "s")
    with atomic_output(folder, overwrite=True) as tmp:  # the previous checkpoint stays until this one is whole
        save_file(tensors, str(tmp / TENSORS))
        (tmp / STATE).write_text(json.dumps(meta))
    return Path(folder)


def load_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """The state saved in ``folder``, or None when there is no checkpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / STATE).is_file() or not (folder / TENSORS).is_file():
        return None
    try:
        tensors = load_file(str(folder / TENSORS))
        meta = json.loads((folder / STATE).read_text())
    except (SafetensorError, OSError, ValueError) as exc:
        raise NcmError(f"training checkpoint is damaged ({exc}); start again with --restart", folder) from None
    return join_tensors(meta, tensors)
