"""Progress and cancellation for long tasks.

Long tasks take ``progress(done, total, message)`` and a ``cancel`` flag (a
``threading.Event`` or any object with ``is_set()``, or a callable returning
bool). The CLI prints a progress line, the napari widgets drive napari's
progress bar, and tests call the tasks synchronously.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ncm_core.errors import Cancelled

ProgressFn = Callable[[int, int, str], None]
CancelFlag = Any | None


def is_cancelled(cancel: CancelFlag) -> bool:
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def check_cancel(cancel: CancelFlag) -> None:
    """Raise :class:`Cancelled` if the caller asked to stop."""
    if is_cancelled(cancel):
        raise Cancelled()


def report(progress: ProgressFn | None, done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done, total, message)


def run_steps(gen: Any, progress: ProgressFn | None, message: str = "") -> Any:
    """Drive a generator that yields ``(done, total)`` to its end, reporting each step; returns its value."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        report(progress, done, total, message)


class ConsoleProgress:
    """A one-line progress display for the terminal (stderr), at most a few updates a second."""

    def __init__(self, label: str, stream: Any = None, interval: float = 0.5) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else max(interval, 10.0)  # logs: a line every 10 s
        self._last = 0.0
        self._t0 = time.monotonic()

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done < total:
            return
        self._last = now
        pct = 100 * done / total if total else 100
        line = f"\r{self.label}: {done}/{total} ({pct:3.0f}%) {now - self._t0:5.0f}s {message}"
        if self.tty:
            self.stream.write(line[:120].ljust(120) + ("\n" if done >= total else ""))
        else:
            self.stream.write(line.strip() + "\n")
        self.stream.flush()
