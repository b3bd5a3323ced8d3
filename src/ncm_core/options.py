"""Options objects: one home for each option's default, merged with keyword overrides.

Each task has a dataclass of its options (``PredictOptions``, ``TrainConfig``, ...). The public
functions keep their keyword interface: ``predict_mosaic(bundle, mosaic, out, tile=128)`` is the
same as ``predict_mosaic(bundle, mosaic, out, PredictOptions(tile=128))``. The CLI, the napari
widgets, fingerprints and output attributes read their defaults from the same objects.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from ncm_core.errors import NcmError

T = TypeVar("T")


def merge_options(cls: type[T], options: T | None, overrides: dict[str, Any]) -> T:
    """``options`` (or ``cls()``) with ``overrides`` applied; ``None`` values mean "keep the default".

    Where ``None`` has a meaning of its own for a field (``patience=None``: no early stopping), the
    options class says so in ``NONE_MEANS`` (field -> the value an explicit None stands for), and an
    explicit ``None`` keyword is that value. Callers that use None for "not given" (the CLI) drop
    such keywords first (:func:`given`). An unknown keyword raises one :class:`NcmError` that names it
    and the closest option.
    """
    base = cls() if options is None else options
    if not isinstance(base, cls):
        raise NcmError(f"expected {cls.__name__}, got {type(base).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in overrides:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise NcmError(f"unknown option {key!r} for {cls.__name__}{hint}")
    none_means: dict[str, Any] = getattr(cls, "NONE_MEANS", {})
    chosen = {k: none_means[k] if v is None else v for k, v in overrides.items() if v is not None or k in none_means}
    return dataclasses.replace(base, **chosen) if chosen else base  # type: ignore[type-var]


def given(**kwargs: Any) -> dict[str, Any]:
    """The keywords whose value is not None: options a command-line user did not give keep their defaults."""
    return {k: v for k, v in kwargs.items() if v is not None}


def defaults(cls: type[Any]) -> dict[str, Any]:
    """The default of every field of an options class (for argparse defaults and widget initial values)."""
    return {f.name: getattr(cls(), f.name) for f in dataclasses.fields(cls)}
