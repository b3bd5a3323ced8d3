"""The one runner of the dock widgets: core work in a thread worker, results and progress on the main thread.

In the spirit of stardist-napari: the work is a function of no arguments that runs the core task,
either returning its result or returning a generator that yields progress (``(done, total)`` or
``(done, total, message)``) and returns the result. A widget runs it in a thread worker (napari's
progress bar, a Cancel button) or, for tests and scripts, synchronously in the calling thread; both
paths end in the same callbacks, which Qt runs on the main thread:

* ``_on_done(result)`` shows the result (layers are changed only there);
* ``_on_progress((done, total, message))`` drives napari's progress bar and the status line;
  updates that arrive after the run ended are ignored;
* errors are shown once, as one line ("Task: message") with the traceback under napari's
  "View traceback", and never re-raised on the main thread; :class:`ncm_core.errors.Cancelled` is
  a status line, not an error;
* other events of the work (``post("epoch")``, ``post("trial")``) go to ``_on_<kind>``.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from napari_ncm._fields import ScrollingDock


class _Events(QObject):
    """Carries ``(run id, kind, payload)`` from the worker thread to the main thread (a queued signal;
    emitted on the main thread, as in synchronous runs, it is delivered at once)."""

    event = Signal(object)


def wrap_label(label: Any) -> None:
    """A QLabel whose long lines wrap at the dock's width instead of widening the dock."""
    from qtpy.QtWidgets import QSizePolicy

    label.setWordWrap(True)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)


def show_task_error(task: str, exc: BaseException, text: str | None = None) -> None:
    """One error notification ``"task: message"`` (first line, or ``text``), its traceback under "View
    traceback"."""
    from napari.utils.notifications import ErrorNotification, notification_manager

    note = ErrorNotification(exc)
    note.message = f"{task}: {text or one_line(exc)}"
    notification_manager.dispatch(note)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class RunsInBackground(ScrollingDock):
    """Mixin for a magicgui ``Container`` with ``run_button``, ``cancel_button`` and ``status``.

    Call :meth:`_init_runner` in ``__init__``; a widget implements ``_job()`` (gathers the settings
    on the main thread and returns the work, or raises ``NcmError``) and ``_on_done(result)``.
    """

    task_name = "Task"  # used in notifications
    cancelled_text = "Cancelled"
    #: the core's advice in command-line words -> the same advice in this dock's words
    dock_words: dict[str, str] = {}

    def _in_dock_words(self, text: str) -> str:
        for cli, dock in self.dock_words.items():
            text = text.replace(cli, dock)
        return text.replace(" (API: overwrite=True)", "")

    worker: Any = None
    _pbar: Any = None
    _got_result = False

    def _init_runner(self) -> None:
        self.worker = None
        self._pbar = None
        self._cancel = threading.Event()
        self._run_id = 0
        self._active: int | None = None  # id of the run in progress
        self._updating = False  # inside _on_progress (napari's bar processes pending events)
        self._close_pending = False
        self._events = _Events()
        self._events.event.connect(self._dispatch)
        wrap_label(self.status.native)
        self._fit_width()

    # ------------------------------------------------------------ what the work uses (any thread)
    def post(self, kind: str) -> Callable[[Any], None]:
        """A thread-safe callback for the work: ``post("epoch")(record)`` calls ``self._on_epoch(record)``
        on the main thread while this run is in progress (later calls are dropped)."""
        run, emit = self._run_id, self._events.event.emit
        return lambda payload: emit((run, kind, payload))

    def progress_fn(self) -> Callable[[int, int, str], None]:
        """``progress(done, total, message)`` for a core function, posted to ``_on_progress``."""
        post = self.post("progress")
        return lambda done, total, message="": post((done, total, message))

    def _dispatch(self, event: tuple[int, str, Any]) -> None:
        run, kind, payload = event
        if run != self._active:
            return  # from a run that has ended (or an earlier one)
        getattr(self, f"_on_{kind}")(payload)

    # ------------------------------------------------------------ starting
    def _prepare(self) -> Any:
        """A new run id and cancel flag, then ``self._job()`` (settings read on the main thread);
        None after showing its error."""
        from ncm_core.errors import NcmError

        if not self._new_run():
            return None
        try:
            return self._job()
        except NcmError as exc:
            self.status.value = f"Error: {self._in_dock_words(one_line(exc))}"
            show_task_error(self.task_name, exc, self._in_dock_words(one_line(exc)))
            return None

    def _new_run(self) -> bool:
        """A new run id and cancel flag; False while a run is in progress (one at a time)."""
        if self.worker is not None:
            return False
        self._run_id += 1
        self._cancel = threading.Event()
        return True

    def _run_function(self, work: Callable[[], Any], sync: bool, description: str, running_text: str) -> Any:
        """Run ``work`` here (``sync``: returns what ``_on_done`` stored, see ``_result``) or in a thread
        worker (returns the worker)."""
        from ncm_core.errors import Cancelled, NcmError

        body = self._body(work)
        self._active = self._run_id
        self._got_result = False
        self.last_progress = (0, 0)  # (done, total) of this run's last progress report
        self.status.value = running_text
        if sync:
            try:
                self._returned(body())
            except (NcmError, Cancelled) as exc:
                self._on_error(exc)
            finally:
                self._end_run()
            return self._result()
        from superqt.utils import create_worker

        # superqt's worker, not napari's: napari's would notify every error a second time, and without
        # _ignore_errors superqt re-raises it on the main thread
        worker = create_worker(body, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(self._returned)
        worker.errored.connect(self._on_error)
        worker.warned.connect(self._on_warned)
        worker.finished.connect(self._on_finished)
        from napari.utils import progress

        self._pbar = progress(total=0, desc=description)
        self._close_pending = False
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def _body(self, work: Callable[[], Any]) -> Callable[[], Any]:
        """``work``, driving the generator it may return (each yield is a progress update)."""
        progress = self.progress_fn()
        cancel = self._cancel

        def body() -> Any:
            from ncm_core.progress import check_cancel

            value = work()
            if not inspect.isgenerator(value):
                return value
            while True:
                try:
                    step = next(value)
                except StopIteration as stop:
                    return stop.value
                progress(*step) if len(step) == 3 else progress(*step, "")
                check_cancel(cancel)

        return body

    def _result(self) -> Any:
        """What a synchronous run returns: the widget's result, if this run produced one."""
        return getattr(self, "result", None) if self._got_result else None

    def _returned(self, value: Any) -> None:
        self._got_result = value is not None
        self._on_done(value)

    def cancel(self) -> None:
        """Ask the running task to stop at its next check (within a batch or an epoch step)."""
        if self._active is None:
            return
        self._cancel.set()
        self.status.value = "Cancelling..."

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_progress(self, value: tuple[int, int, str]) -> None:
        """``(done, total, message)`` from the task: napari's progress bar and the status."""
        done, total, msg = value
        if self._active is None:
            return
        self.last_progress = (done, total)
        if not self._cancel.is_set():
            self.status.value = msg or f"{done}/{total}"
        pbar = self._pbar
        if pbar is None or self._updating:
            return
        self._updating = True  # napari's bar processes pending events: _on_finished may run inside
        try:
            if total and pbar.total != total:
                pbar.total = total
            pbar.n = done
            pbar.set_description(f"{self.task_name}: {msg}" if msg else self.task_name)
            pbar.refresh()
        finally:
            self._updating = False
            if self._close_pending:
                self._close_pbar()

    def _on_warned(self, args: tuple) -> None:
        """A warning raised in the worker: one warning notification, prefixed with the task. Library
        deprecation notices are for developers: they go to the log, not to a toast."""
        import logging

        from napari.utils.notifications import show_warning

        message, category = args[0], args[1] if len(args) > 1 else UserWarning
        if isinstance(category, type) and issubclass(
            category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
        ):
            logging.getLogger("napari_ncm").info("%s: %s", self.task_name, message)
            return
        show_warning(f"{self.task_name}: {message}")

    def _on_error(self, exc: BaseException) -> None:
        from ncm_core.errors import Cancelled

        if isinstance(exc, Cancelled):
            self.status.value = self.cancelled_text
            return
        text = self._in_dock_words(one_line(exc))
        self.status.value = f"Error: {text}"
        show_task_error(self.task_name, exc, text)

    def _close_pbar(self) -> None:
        self._close_pending = False
        pbar, self._pbar = self._pbar, None
        if pbar is not None:
            pbar.close()

    def _end_run(self) -> None:
        self._active = None
        if self._cancel.is_set() and not self._got_result and not self.status.value.startswith("Error"):
            self.status.value = self.cancelled_text

    def _on_finished(self) -> None:
        self._end_run()
        if self._updating:
            self._close_pending = True
        else:
            self._close_pbar()
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self.worker = None
        self._finished_hook()

    def _finished_hook(self) -> None:
        """Widgets re-enable their other buttons here."""
