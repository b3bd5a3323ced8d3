"""The Pretrain dock widget: self-supervised pretraining (``ncm_core.training.pretrain.pretrain``).

Runs in a napari thread worker with napari's progress bar and a Cancel button; Cancel stops between
batches and keeps the last epoch's checkpoint (Pretrain again into the same folder resumes). Each epoch
adds a line to the log (loss, crops per second, k-NN accuracy of the probe folder when one is given).
*Use in Train* hands the backbone to the Train widget's pretrained-weights field.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from ncm_core.training.config import METHODS, PretrainConfig

if TYPE_CHECKING:
    import napari


def _path(field: Any) -> Path | None:
    return None if str(field.value) in ("", ".") else Path(str(field.value))


class PretrainWidget(RunsInBackground, Container):
    """Pretrain a backbone on unlabelled frames or mosaics with SimCLR, BYOL or VICReg (lightly)."""

    task_name = "Pretrain"
    cancelled_text = "Cancelled: the last finished epoch is kept (Pretrain again to resume)"
    dock_words = {
        "pass --overwrite": "tick 'Replace a finished backbone there'",
        "lower the batch size (--batch-size) or raise --crops": "lower Batch size or raise Crops / image / epoch",
    }

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True, scrollable=True)
        self._viewer = napari_viewer
        c = PretrainConfig()
        self.data = FileEdit(mode="d", label="Images folder", tooltip="frames (any sub-folders) and zarr mosaics")
        self.probe = FileEdit(mode="d", label="Probe folder", tooltip="optional: class folders, k-NN after each epoch")
        self.arch = LineEdit(value=c.architecture, label="Architecture", tooltip="any timm backbone")
        self.method = ComboBox(choices=list(METHODS), value=c.method, label="Method")
        self.epochs = SpinBox(value=c.epochs, min=1, max=10000, label="Epochs")
        self.batch_size = SpinBox(value=c.batch_size, min=2, max=4096, label="Batch size")
        self.crop_size = SpinBox(value=c.crop_size, min=16, max=4096, label="Crop (px)")
        self.input_size = SpinBox(value=c.input_size or c.crop_size, min=16, max=1024, label="Input (px)")
        self.crops = SpinBox(value=c.crops_per_image, min=1, max=10000, label="Crops / image / epoch")
        self.exclude_rows = LineEdit(value=str(c.exclude_rows), label="Exclude rows", tooltip="detect, none or -64:")
        self.output = FileEdit(mode="d", label="Output folder")
        self.overwrite = CheckBox(value=False, text="Replace a finished backbone there")
        self.run_button = PushButton(text="Pretrain")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.use_in_train = PushButton(text="Use in Train", enabled=False)
        self.status = Label(value="")
        self.log = Label(value="")
        self.extend(
            [
                self.data,
                self.probe,
                self.arch,
                self.method,
                self.epochs,
                self.batch_size,
                self.crop_size,
                self.input_size,
                self.crops,
                self.exclude_rows,
                self.output,
                self.overwrite,
                self.run_button,
                self.cancel_button,
                self.use_in_train,
                self.status,
                self.log,
            ]
        )
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.use_in_train.changed.connect(self.hand_to_train)
        self.history: list[dict[str, float]] = []
        self.result = None
        self._init_runner()

    def _job(self):
        from napari_ncm._torch import guard_triton

        guard_triton()
        from ncm_core.data.infobar import parse_band
        from ncm_core.errors import NcmError
        from ncm_core.training.pretrain import pretrain

        data, out, probe = _path(self.data), _path(self.output), _path(self.probe)
        if data is None:
            raise NcmError("choose a folder of images (frames or mosaics)")
        if out is None:
            raise NcmError("choose an output folder (the backbone and its checkpoint are written there)")
        kwargs = dict(
            architecture=self.arch.value.strip() or None,
            method=self.method.value,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            crop_size=self.crop_size.value,
            input_size=self.input_size.value,
            crops_per_image=self.crops.value,
            exclude_rows=parse_band(self.exclude_rows.value),
            probe=probe,
            overwrite=self.overwrite.value,
        )
        cancel, progress, on_epoch = self._cancel, self.progress_fn(), self.post("epoch")

        def task():
            return pretrain(data, out, cancel=cancel, progress=progress, on_epoch=on_epoch, **kwargs)

        return task

    def run(self, sync: bool = False):
        """Start pretraining; ``sync=True`` runs it in the calling thread (tests, scripts)."""
        task = self._prepare()
        if task is None:
            return None
        self.history, self.result, self.log.value = [], None, ""
        self.use_in_train.enabled = False
        return self._run_function(task, sync, "Pretraining", "Pretraining...")

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_epoch(self, rec: dict[str, float]) -> None:
        self.history.append(rec)
        knn = f", k-NN {rec['knn_accuracy']:.1%}" if "knn_accuracy" in rec else ""
        lines = [f"epoch {r['epoch']}: loss {r['loss']:.3f}{knn if r is rec else ''}" for r in self.history[-8:]]
        self.log.value = "\n".join(lines)

    def _on_done(self, result: Any) -> None:
        if result is None:
            return
        self.result = result
        knn = f"; k-NN {result.knn_initial:.1%} -> {result.knn:.1%}" if result.knn is not None else ""
        self.status.value = f"Done: {result.backbone}{knn}"
        self.use_in_train.enabled = True

    def hand_to_train(self) -> None:
        """Open the Train widget (if needed) with this backbone as its pretrained weights and architecture."""
        if self.result is None:
            return
        _, train = self._viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
        if hasattr(train, "pretrained"):
            train.pretrained.value = str(self.result.backbone)
        if hasattr(train, "arch"):
            train.arch.value = self.arch.value.strip()
