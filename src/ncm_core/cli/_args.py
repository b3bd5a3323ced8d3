"""Argument types and small helpers shared by the ``ncm`` sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ncm_core.errors import NcmError

if TYPE_CHECKING:
    from ncm_core.batch import Failure


def common(sp: argparse.ArgumentParser, device: bool = True) -> None:
    """The options every long-running command has: ``--quiet`` and (optionally) ``--device``."""
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    if device:
        sp.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")


def rows(value: str) -> tuple[int | None, int | None] | None:
    from ncm_core.data.tiling import parse_rows

    try:
        return parse_rows(value)
    except NcmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def band(value: str):
    """``--exclude-rows``: ``START:STOP``, ``auto`` (an information bar must be found), ``detect`` or ``none``."""
    from ncm_core.data.infobar import parse_band

    try:
        return parse_band(value)
    except NcmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


BAND_HELP = (
    "auto (find the SEM information bar; an image without one fails), detect (skip it where found), "
    "none (or empty: no band), or a band START:STOP, e.g. --exclude-rows=-32: for the bottom 32 rows"
)


def positive(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def nonnegative(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def progress(label: str, quiet: bool):
    from ncm_core.progress import ConsoleProgress

    return None if quiet else ConsoleProgress(label)


def size(value: str) -> tuple[int, int]:
    """``224`` or ``56x168`` (height x width)."""
    try:
        parts = [int(v) for v in value.lower().replace("*", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {value!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides of at least 8 px, got {value!r}")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def list_(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def hw(value: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive numbers, got {value!r}")
    return parts[0], parts[1]


def targets(value: str | None) -> object:
    if value is None:
        return None
    parts = [v.strip() for v in value.split(",") if v.strip()]
    return parts[0] if len(parts) == 1 else parts


def truth(path: str):
    """A truth map and its value -> class-name table (NGFF labels, e.g. ``image.zarr/labels/truth``)."""
    from ncm_core.io.mosaic import open_mosaic, read_label_classes

    return open_mosaic(path).data, (read_label_classes(path) or None)


def strict(sp: argparse.ArgumentParser, what: str, stops: str = "exit 2, nothing written") -> None:
    """``--strict``: stop a batch at its first failing input (by default it is skipped and recorded)."""
    sp.add_argument(
        "--strict",
        action="store_true",
        help=f"stop at the first {what} that fails ({stops}); by default it is skipped, "
        "listed in failures.csv, the rest is finished and the exit status is 3",
    )


def finish_batch(failures: Sequence[Failure], total: int, where: str | Path | None) -> None:
    """After a batch's normal output: one warning line per failed input, then raise
    :class:`~ncm_core.batch.BatchIncomplete` (the last line, exit status 3). Nothing when none failed."""
    from ncm_core.batch import BatchIncomplete

    if not failures:
        return
    for f in failures:
        print(f"ncm: warning: {f.line()}", file=sys.stderr)
    see = f"see {where}" if where is not None else "listed above"
    raise BatchIncomplete(f"{len(failures)} of {total} inputs failed ({see})")
