"""User-facing errors.

Every error a user can cause (a bad file, a bad parameter) is raised as
:class:`NcmError` at the boundary where it is detected, with a one-line message
that names the file or parameter and what is wrong. The CLI prints that line
alone (no traceback); the napari widgets show it in a notification.
"""

from __future__ import annotations

from pathlib import Path


class NcmError(Exception):
    """An error caused by the user's input, with a message they can act on."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        msg = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {msg}" if self.path else msg)


class Cancelled(Exception):
    """Raised inside long tasks when the caller's cancel flag is set."""
