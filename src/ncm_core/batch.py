"""Batches that finish what can be finished: one bad input is recorded with its reason, the rest completes.

Every batch task (``ncm sections`` over mosaics, ``ncm crops`` over frames, ``ncm evaluate`` and
``ncm explain`` over folders, ``ncm predict`` over several mosaics) runs each input inside
:meth:`Batch.attempt`. An :class:`~ncm_core.errors.NcmError` raised there (the input cannot be read or
processed) is recorded as a :class:`Failure` (the input and a one-line reason) and the batch goes on;
any other exception is a bug and propagates. With ``strict`` (and for a batch of one input) the first
failure is raised as it is. When every input fails, :meth:`Batch.check` raises :class:`BatchFailed`,
so nothing that looks complete is written. The output records the failures in ``failures.csv``
(:meth:`Batch.write`) and in its summary; the task returns its usual result with the failures
attached, and warns once (:class:`BatchWarning`). The command line prints one line per failure and
exits with status 3 (:class:`BatchIncomplete`).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError

__all__ = [
    "FAILURES_FILE",
    "Attempt",
    "Batch",
    "BatchFailed",
    "BatchIncomplete",
    "BatchPath",
    "BatchWarning",
    "Failure",
    "read_failures",
]

#: the file in a batch's output that lists the inputs that failed, one per row: ``input,reason``
FAILURES_FILE = "failures.csv"


@dataclass(frozen=True)
class Failure:
    """An input of a batch that failed, and why (one line)."""

    input: str
    reason: str

    @classmethod
    def of(cls, input: Any, exc: NcmError) -> Failure:
        """The failure of ``input`` (a path or an object with one) from its error: the error's line without
        the input's path in front (the path is the ``input`` column)."""
        name = _name(input)
        msg = str(exc)
        if exc.path is not None and _same(exc.path, name) and msg.startswith(f"{exc.path}: "):
            msg = msg[len(exc.path) + 2 :]
        return cls(name, msg)

    def line(self) -> str:
        """``<input>: <reason>``."""
        return f"{self.input}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason}


def _name(x: Any) -> str:
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    for attr in ("source", "path", "root", "name"):
        v = getattr(x, attr, None)
        if isinstance(v, (str, os.PathLike)) and str(v):
            return str(v)
    return repr(x)


def _same(a: str, b: str) -> bool:
    try:
        return a == b or Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except (OSError, ValueError):
        return False


class BatchWarning(UserWarning):
    """Some inputs of a batch failed and were skipped (the command line prints them one by one instead)."""


class BatchFailed(NcmError):
    """Every input of a batch failed: nothing was written. ``failures`` lists them."""

    def __init__(self, message: str, failures: Sequence[Failure]) -> None:
        super().__init__(message)
        self.failures = tuple(failures)


class BatchIncomplete(Exception):
    """Raised by the command line after a batch that skipped inputs: exit status 3, one last line."""


class BatchPath(type(Path())):  # type: ignore[misc]
    """The path of a batch's output, with the batch's failures attached (``()`` when none)."""

    failures: tuple[Failure, ...] = ()

    @classmethod
    def of(cls, path: str | Path, failures: Sequence[Failure] = ()) -> BatchPath:
        p = cls(path)
        p.failures = tuple(failures)
        return p


@dataclass
class Attempt:
    """One input's try inside :meth:`Batch.attempt`; ``failed`` is set when it was skipped."""

    input: Any
    failed: bool = False


class Batch:
    """The failures of a batch of ``total`` inputs, collected as the batch runs.

    ``strict``: the first failure is raised (today's one-line error) instead of recorded; a batch of one
    input is always strict, so a single input behaves as it did before batches finished the rest.
    """

    def __init__(self, total: int, *, strict: bool = False, what: str = "inputs") -> None:
        self.total = int(total)
        self.strict = bool(strict) or self.total <= 1
        self.what = what
        self.failures: list[Failure] = []

    @contextmanager
    def attempt(self, input: Any) -> Iterator[Attempt]:
        """Run the block for one input; an :class:`NcmError` in it is recorded (not raised) unless strict."""
        a = Attempt(input)
        try:
            yield a
        except BatchFailed:
            raise
        except NcmError as exc:
            if self.strict:
                raise
            a.failed = True
            self.failures.append(Failure.of(input, exc))

    @property
    def succeeded(self) -> int:
        return self.total - len(self.failures)

    def check(self) -> None:
        """Raise :class:`BatchFailed` (one line: how many, and the first failure) when every input failed."""
        if self.failures and self.succeeded <= 0:
            raise BatchFailed(
                f"all {self.total} {self.what} failed, nothing was written; the first: {self.failures[0].line()}",
                self.failures,
            )

    def write(self, folder: str | Path) -> Path | None:
        """``failures.csv`` in ``folder`` (columns ``input``, ``reason``) when there are failures; its path.
        Without failures, a list left there by an earlier run is removed (and None returned)."""
        path = Path(folder) / FAILURES_FILE
        if not self.failures:
            path.unlink(missing_ok=True)
            return None
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["input", "reason"])
            w.writeheader()
            w.writerows(f.to_dict() for f in self.failures)
        return path

    def records(self) -> list[dict[str, str]]:
        """The failures as JSON-ready rows (for a summary or manifest)."""
        return [f.to_dict() for f in self.failures]

    def warn(self, out: str | Path | None = None) -> None:
        """One warning line when inputs were skipped (the API's notice; the CLI prints each failure)."""
        if self.failures:
            where = f"; listed in {Path(out) / FAILURES_FILE}" if out is not None else ""
            warnings.warn(
                f"{len(self.failures)} of {self.total} {self.what} failed and were skipped{where} "
                f"(the first: {self.failures[0].line()})",
                BatchWarning,
                stacklevel=3,
            )


def read_failures(folder: str | Path) -> list[Failure]:
    """The failures recorded in ``folder``'s ``failures.csv`` (none when there is no such file)."""
    path = Path(folder) / FAILURES_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [Failure(r["input"], r["reason"]) for r in csv.DictReader(fh)]
