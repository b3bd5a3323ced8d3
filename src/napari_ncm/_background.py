"""What the dock widgets share about running work in a napari thread worker.

A widget gathers parameters on the main thread, hands the work to a thread
worker (napari's progress bar, a Cancel button) and changes layers only in
the callbacks, which Qt runs on the main thread.
"""

from __future__ import annotations

from typing import Any


class RunsInBackground:
    """Mixin for a magicgui ``Container`` with ``run_button``, ``cancel_button``, ``status`` and ``_cancel``."""

    task_name = "Task"  # used in notifications
    cancelled_text = "Cancelled"

    worker: Any = None
    _pbar: Any = None

    def _has_result(self) -> bool:
        raise NotImplementedError

    def _start(self, worker: Any, description: str, running_text: str = "Running...") -> Any:
        """Connect the common callbacks, open napari's progress bar and start ``worker``."""
        from napari.utils import progress

        self._pbar = progress(total=0, desc=description)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = running_text
        worker.start()
        return worker

    def _on_error(self, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        from ncm_core.errors import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = self.cancelled_text
            return
        self.status.value = f"Error: {exc}"
        show_error(f"{self.task_name}: {exc}")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._cancel.is_set() and not self._has_result():
            self.status.value = self.cancelled_text
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None
