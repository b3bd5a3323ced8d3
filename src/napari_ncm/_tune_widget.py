"""The Tune dock widget: ASHA hyperparameter search (``ncm_core.training.tune.tune``) with a live trials table.

Runs in a napari thread worker with napari's progress bar and a Cancel button; Cancel stops the
running trial after its current epoch and keeps the finished ones (Run again with *Resume* ticked
continues the study). Each finished trial adds a row to the table and a point to the best-so-far
plot; *Use best bundle* hands the best trial's bundle to the Predict widget.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox, Table

from napari_ncm._background import RunsInBackground
from ncm_core.training.config import TuneConfig

if TYPE_CHECKING:
    import napari


class TuneWidget(RunsInBackground, Container):
    """Tune learning rate, batch size, normalisation, ... with ASHA; shows every trial as it finishes."""

    task_name = "Tune"
    cancelled_text = "Cancelled: finished trials are kept (tick Resume and run again to continue)"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=True, scrollable=True)
        self._viewer = napari_viewer
        self.data = FileEdit(mode="d", label="Data folder", tooltip="class folders of frames, or a tile set")
        self.space = FileEdit(
            mode="r",
            label="Search space",
            filter="*.yaml *.yml *.json",
            tooltip="YAML/JSON file; empty = the SEM study's space (docs/tuning.md)",
        )
        c = TuneConfig()
        self.trials = SpinBox(value=c.n_trials, min=1, max=10000, label="Trials")
        self.max_epochs = SpinBox(value=c.max_epochs, min=1, max=1000, label="Max epochs / trial")
        self.min_epochs = SpinBox(value=c.min_epochs, min=1, max=1000, label="Min epochs")
        self.reduction = SpinBox(value=c.reduction_factor, min=2, max=10, label="Reduction factor")
        self.pruner = ComboBox(choices=["asha", "hyperband", "none"], value=c.pruner, label="Pruner")
        self.arch = LineEdit(value="", label="Architecture", tooltip="fixed model; empty = the space decides")
        self.tile = SpinBox(value=96, min=8, max=4096, label="Tile (px)", tooltip="for class folders of frames")
        self.exclude_rows = LineEdit(value="", label="Exclude rows", tooltip="e.g. -32: for an SEM info bar")
        self.output = FileEdit(mode="d", label="Study folder")
        self.resume = CheckBox(value=c.resume, text="Resume the study in this folder")
        self.run_button = PushButton(text="Tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.use_best = PushButton(text="Use best bundle in Predict", enabled=False)
        self.status = Label(value="")
        self.table = Table(value=table_value([]))
        self.table.native.setMinimumHeight(140)
        self.extend(
            [
                self.data,
                self.space,
                self.trials,
                self.max_epochs,
                self.min_epochs,
                self.reduction,
                self.pruner,
                self.arch,
                self.tile,
                self.exclude_rows,
                self.output,
                self.resume,
                self.run_button,
                self.cancel_button,
                self.use_best,
                self.status,
                self.table,
            ]
        )
        self.figure = Figure(figsize=(4.5, 2.4), dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.inner.layout().addWidget(self.canvas)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.use_best.changed.connect(self.use_best_bundle)
        self.rows: list[dict[str, Any]] = []
        self.result = None
        self._init_runner()

    def _job(self):
        from napari_ncm._torch import guard_triton

        guard_triton()
        from ncm_core.data.tiling import parse_rows
        from ncm_core.errors import NcmError
        from ncm_core.training.tune import tune

        if str(self.data.value) in ("", "."):
            raise NcmError("choose a data folder (class folders of frames or a tile set)")
        if str(self.output.value) in ("", "."):
            raise NcmError("choose a study folder (the study, its trials and the best bundle are kept there)")
        space = None if str(self.space.value) in ("", ".") else str(self.space.value)
        fixed: dict[str, Any] = {"tile_size": self.tile.value}
        rows = parse_rows(self.exclude_rows.value)
        if rows is not None:
            fixed["exclude_rows"] = rows
        if self.arch.value.strip():
            fixed["architecture"] = self.arch.value.strip()
        from ncm_core.data.tilesets import is_tile_set

        if is_tile_set(Path(str(self.data.value))):
            fixed.pop("tile_size")
        kwargs = dict(
            space=space,
            n_trials=self.trials.value,
            max_epochs=self.max_epochs.value,
            min_epochs=self.min_epochs.value,
            reduction_factor=self.reduction.value,
            pruner=self.pruner.value,
            resume=self.resume.value,
            train_kwargs=fixed,
        )
        data, out = Path(str(self.data.value)), Path(str(self.output.value))
        cancel, progress, on_trial = self._cancel, self.progress_fn(), self.post("trial")
        self._study = out

        def task():
            return tune(
                data,
                out,
                cancel=cancel,
                progress=progress,
                on_trial=lambda tr: on_trial(_row(tr)),
                **kwargs,
            )

        return task

    def run(self, sync: bool = False):
        """Start the search; ``sync=True`` runs it in the calling thread (tests, scripts)."""
        task = self._prepare()
        if task is None:
            return None
        self.rows, self.result = [], None
        self.use_best.enabled = False
        self.table.value = table_value([])
        self._draw()
        return self._run_function(task, sync, "Tuning", "Tuning...")

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_trial(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.table.value = table_value(self.rows)
        self._draw()
        self._update_best()

    def _draw(self) -> None:
        from ncm_core.training.tune_plots import draw_trials

        draw_trials(self.figure, [r["value"] for r in self.rows], [r["state"] for r in self.rows])
        self.canvas.draw_idle()

    def _on_done(self, result: Any) -> None:
        if result is None:
            return
        self.result = result
        self._update_best()
        self.status.value = (
            f"Done: {result.n_complete} complete, {result.n_pruned} pruned; best trial "
            f"{result.best_trial} ({result.best_value:.1%}) -> {result.best_bundle}"
        )

    def best_bundle(self) -> Path | None:
        """The study's best bundle, if one exists (also after a cancelled or resumed run)."""
        if self.result is not None and self.result.best_bundle is not None:
            return Path(self.result.best_bundle)
        study = getattr(self, "_study", None) or (
            None if str(self.output.value) in ("", ".") else Path(str(self.output.value))
        )
        if study is not None and (Path(study) / "best" / "config.json").is_file():
            return Path(study) / "best"
        return None

    def _update_best(self) -> None:
        self.use_best.enabled = self.best_bundle() is not None

    def _finished_hook(self) -> None:
        self._update_best()

    def use_best_bundle(self) -> None:
        """Hand the best trial's bundle to the Predict widget (opened if needed)."""
        from napari_ncm._widget import hand_bundle_to_predict

        best = self.best_bundle()
        if best is not None:
            hand_bundle_to_predict(self._viewer, str(best), open_if_missing=True)


COLUMNS = ["trial", "state", "accuracy", "epochs", "parameters"]


def table_value(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The trials table's value in magicgui's split form (its ``index`` key is required, else the
    columns read "data | columns")."""
    data = [
        [r["trial"], r["state"], "" if r["value"] is None else f"{r['value']:.3f}", r["epochs"], r["params"]]
        for r in rows
    ]
    return {"data": data, "index": [str(r["trial"]) for r in rows], "columns": COLUMNS}


def _row(trial: Any) -> dict[str, Any]:
    """A finished trial as plain values (safe to send between threads)."""
    import json

    return {
        "trial": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "epochs": len(trial.intermediate_values),
        "params": json.dumps(trial.params),
    }
