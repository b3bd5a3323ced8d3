"""Outputs that never look complete before they are: ``<out>.partial``, then one rename.

Every writer in ncm_core goes through :func:`check_output` (refuse an existing output unless asked to
replace it, in the same words everywhere) and :func:`atomic_output` or :func:`finalize` (write under
``<out>.partial``, then replace ``out`` in one step). A crash or a cancel leaves at most a
``.partial`` beside the output, never a half-written ``out``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ncm_core.errors import NcmError

OUTPUT_EXISTS = "output exists; choose another or pass --overwrite (API: overwrite=True)"


def partial_path(out: str | Path) -> Path:
    """Where ``out`` is written until it is complete."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_output(out: str | Path, overwrite: bool) -> Path:
    """``out`` as a Path; one clear error when it exists and ``overwrite`` is off, or its parent is not a folder."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise NcmError(OUTPUT_EXISTS, out)
    parent = out.resolve().parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise NcmError(f"cannot write here: {p} is a file, not a folder", out)
            if not os.access(p, os.W_OK):
                raise NcmError(f"cannot write here: {p} is not writable", out)
            break
    return out


def remove(path: Path) -> None:
    """Remove a file or a folder tree (nothing if absent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def finalize(partial: Path, out: Path) -> Path:
    """Replace ``out`` by the completed ``partial`` (one rename once any old ``out`` is gone)."""
    remove(out)
    partial.rename(out)
    return out


@contextmanager
def atomic_output(out: str | Path, overwrite: bool = False, folder: bool = True) -> Iterator[Path]:
    """Write ``out`` under ``<out>.partial`` and rename it when the block completes.

    The block receives the ``.partial`` path (created as an empty folder when ``folder``). A stale
    ``.partial`` is replaced; on an error or a cancel the ``.partial`` is removed and ``out`` is left
    as it was.
    """
    out = check_output(out, overwrite)
    part = partial_path(out)
    remove(part)
    if folder:
        part.mkdir(parents=True)
    else:
        part.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield part
    except BaseException:
        remove(part)
        raise
    finalize(part, out)
