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

    def _prepare(self) -> Any:
        """``self._job()`` (gathers the settings on the main thread), or None after showing its error."""
        from napari.utils.notifications import show_error

        from ncm_core.errors import NcmError

        try:
            return self._job()
        except NcmError as exc:
            self.status.value = f"Error: {exc}"
            show_error(f"{self.task_name}: {exc}")
            return None

    def _run_function(self, task: Any, sync: bool, description: str, running_text: str) -> Any:
        """Run ``task()`` (a function of no arguments) here (``sync``) or in a thread worker; its return
        value goes to ``self._on_done``. Returns the result (sync) or the worker."""
        from ncm_core.errors import Cancelled, NcmError

        if sync:
            try:
                self._on_done(task())
            except (NcmError, Cancelled) as exc:
                self._on_error(exc)
            return self.result
        from napari.qt.threading import create_worker

        worker = create_worker(task, _start_thread=False)
        worker.returned.connect(self._on_done)
        return self._start(worker, description, running_text)

    def cancel(self) -> None:
        """Ask the running task to stop at its next check (after the current batch or epoch)."""
        self._cancel.set()
        self.status.value = "Cancelling..."

    def _on_progress(self, value: tuple[int, int, str]) -> None:
        """``(done, total, message)`` from the task, on the main thread: napari's progress bar and the status."""
        done, total, msg = value
        if self._pbar is not None:
            if total and self._pbar.total != total:
                self._pbar.total = total
            self._pbar.n = done
            self._pbar.set_description(f"{self.task_name}: {msg}" if msg else self.task_name)
            self._pbar.refresh()
        self.status.value = msg or f"{done}/{total}"

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
