"""Search spaces of hyperparameter tuning: the default, reading and checking a file, drawing a trial.

A space is a YAML or JSON file (or dict) of ``train`` parameters, each ``{"type": "float"|"int",
"low": ..., "high": ..., "log": bool}`` or ``{"type": "categorical", "choices": [...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError

#: The SEM study's search (ASHA over learning rate, batch size and normalisation, up to 20 epochs),
#: with augmentation, weight decay and model size added.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "normalize": {"type": "categorical", "choices": [False, True]},
    "augment": {"type": "categorical", "choices": ["flip,rot90", "none"]},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "architecture": {"type": "categorical", "choices": ["resnet10t", "resnet18"]},
}

#: ``train`` parameters a search space may vary.
TUNABLE = (
    "lr",
    "batch_size",
    "normalize",
    "augment",
    "weight_decay",
    "architecture",
    "optimizer",
    "momentum",
    "input_size",
    "warmup_epochs",
    "scheduler",
    "crops_per_image",
    "tile_size",
)


def load_space(space: str | Path | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Read and check a search space (YAML/JSON file or dict); None gives :data:`DEFAULT_SPACE`."""
    where = None
    if space is None:
        return json.loads(json.dumps(DEFAULT_SPACE))
    if isinstance(space, (str, Path)):
        where = Path(space).expanduser()
        if not where.is_file():
            raise NcmError("search-space file not found", where)
        text = where.read_text()
        try:
            if where.suffix.lower() in (".yaml", ".yml"):
                import yaml

                space = yaml.safe_load(text)
            else:
                space = json.loads(text)
        except Exception as exc:
            raise NcmError(
                f"cannot parse the search space ({type(exc).__name__}: {str(exc).splitlines()[0]})", where
            ) from None
    if not isinstance(space, dict) or not space:
        raise NcmError("the search space is empty: give at least one parameter", where)
    for name, spec in space.items():
        if name not in TUNABLE:
            raise NcmError(f"unknown parameter {name!r} in the search space (tunable: {', '.join(TUNABLE)})", where)
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise NcmError(f"parameter {name!r} needs type float, int or categorical", where)
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise NcmError(f"parameter {name!r} needs a non-empty list of choices", where)
        else:
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (KeyError, TypeError, ValueError):
                raise NcmError(f"parameter {name!r} needs numeric low and high", where) from None
            if not low < high:
                raise NcmError(f"parameter {name!r}: low ({low:g}) must be below high ({high:g})", where)
            if spec.get("log") and low <= 0:
                raise NcmError(f"parameter {name!r}: a log scale needs low > 0 (got {low:g})", where)
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one configuration from ``space`` with Optuna's suggest API."""
    out = {}
    for name, s in space.items():
        if s["type"] == "float":
            out[name] = trial.suggest_float(name, float(s["low"]), float(s["high"]), log=bool(s.get("log")))
        elif s["type"] == "int":
            out[name] = trial.suggest_int(
                name, int(s["low"]), int(s["high"]), log=bool(s.get("log")), step=int(s.get("step", 1))
            )
        else:
            out[name] = trial.suggest_categorical(name, s["choices"])
    return out
