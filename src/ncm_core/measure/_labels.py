"""Class lists, pore selection and block iteration shared by the measures."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

#: Class names taken for the pore phase when ``--pore`` is not given (lower-case match).
PORE_NAMES = ("pore", "pores", "porosity", "void", "electrolyte", "resin", "epoxy")
#: Pixels read at once by the block-by-block measures (about 64 MiB of int64 counts at most).
BLOCK_PIXELS = 8 * 1024 * 1024


def class_map(classes: Sequence[str] | Mapping[int, str] | None, values: Sequence[int] = ()) -> dict[int, str]:
    """``{label value: class name}``: a list names values 1, 2, ... (value 0 = not predicted); a mapping is
    taken as is; None names each non-zero value in ``values`` ``class_<v>``."""
    if classes is None:
        return {int(v): f"class_{int(v)}" for v in sorted(values) if int(v) != 0}
    if isinstance(classes, Mapping):
        return {int(k): str(v) for k, v in classes.items()}
    return {i + 1: str(name) for i, name in enumerate(classes)}


def pore_values(classes: Mapping[int, str], pore: str | int | Sequence[str | int] | None = None) -> list[int]:
    """The label values of the pore phase: ``pore`` as class name(s) or value(s); by default the classes
    whose name reads as pore (``PORE_NAMES``). One clear line when none can be found."""
    names = {v.lower(): k for k, v in classes.items()}
    if pore is None:
        found = [names[n] for n in PORE_NAMES if n in names]
        if not found:
            raise NcmError(
                f"no class reads as pore among {', '.join(classes.values()) or 'none'}: "
                "say which class is pore: --pore CLASS"
            )
        return found[:1]
    wanted = [pore] if isinstance(pore, (str, int, np.integer)) else list(pore)
    out = []
    for p in wanted:
        if isinstance(p, (int, np.integer)) or (isinstance(p, str) and p.isdigit() and p.lower() not in names):
            if int(p) not in classes:
                raise NcmError(
                    f"pore class value {p} is not one of {sorted(classes)}: say which class is pore: --pore CLASS"
                )
            out.append(int(p))
        elif p.lower() in names:
            out.append(names[p.lower()])
        else:
            raise NcmError(
                f"pore class {p!r} is not one of {', '.join(classes.values())}: say which class is pore: --pore CLASS"
            )
    return out


def block_slices(shape: Sequence[int], chunks: Sequence[int] | None = None) -> Iterator[tuple[slice, ...]]:
    """Slabs along the first axis that tile an array of ``shape``, about ``BLOCK_PIXELS`` pixels each (a
    whole number of the array's chunks along that axis when ``chunks`` are given: a slab never splits a
    chunk)."""
    shape = tuple(int(s) for s in shape)
    rest = int(np.prod(shape[1:]))
    step = max(1, BLOCK_PIXELS // max(rest, 1))
    if chunks:
        c0 = int(chunks[0])
        step = max(c0, step // c0 * c0)
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def chunks_of(array: Any) -> tuple[int, ...] | None:
    """The chunk shape of a zarr or dask array (first chunk of each axis), else None."""
    ch = getattr(array, "chunks", None)
    if not ch:
        return None
    return tuple(int(c[0]) if isinstance(c, tuple) else int(c) for c in ch)


def read(array: Any, sl: tuple[slice, ...] = ()) -> np.ndarray:
    """The pixels of ``array[sl]`` as numpy (zarr, dask or numpy)."""
    part = array[sl] if sl else array
    compute = getattr(part, "compute", None)
    return np.asarray(compute() if compute is not None else part)
