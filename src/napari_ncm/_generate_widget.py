"""The Generate dock widget: train a 3D generator on 2D phase maps, then generate volumes into napari.

*Train* runs ``ncm_core.training.generate.train_generator`` in a thread worker (progress, Cancel; Cancel
keeps the last checkpoint and Train again resumes); *Generate volume* runs
``ncm_core.inference.generate.generate_volume`` and opens the volume as a 3D labels layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from ncm_core.inference.generate import VolumeOptions
from ncm_core.training.generate import GenerateConfig, describe_calibration

if TYPE_CHECKING:
    import napari


def _path(field: Any) -> Path | None:
    return None if str(field.value) in ("", ".") else Path(str(field.value))


class GenerateWidget(RunsInBackground, Container):
    """Train a SliceGAN-style generator, and generate volumes of any size."""

    task_name = "Generate"
    cancelled_text = "Cancelled: the last checkpoint is kept (Train again to resume)"
    dock_words = {
        "choose a smaller --size": "choose a smaller Training size",
        "pass --overwrite to replace it": "tick 'Replace a finished generator there'",
        "--overwrite": "'Replace a finished generator there'",
    }

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True, scrollable=True)
        self._viewer = napari_viewer
        c, v = GenerateConfig(), VolumeOptions()
        self.images = LineEdit(value="", label="Phase maps", tooltip="one file, or three (yx, zx, zy) separated by ;")
        self.bundle = FileEdit(mode="d", label="Generator folder")
        self.size = SpinBox(value=c.size, min=16, max=256, step=16, label="Training size")
        self.iterations = SpinBox(value=c.iterations, min=1, max=1_000_000, label="Steps")
        self.overwrite = CheckBox(value=False, text="Replace a finished generator there")
        self.run_button = PushButton(text="Train")
        self.volume_size = SpinBox(value=v.size[0], min=8, max=4096, label="Volume side (voxels)")
        self.seed = SpinBox(value=v.seed, min=0, max=2**31 - 1, label="Seed")
        self.volume_button = PushButton(text="Generate volume")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [self.images, self.bundle, self.size, self.iterations, self.overwrite, self.run_button]
            + [self.volume_size, self.seed, self.volume_button, self.cancel_button, self.status]
        )
        self.run_button.changed.connect(lambda: self.run())
        self.volume_button.changed.connect(lambda: self.generate())
        self.cancel_button.changed.connect(self.cancel)
        self.result = None
        self._mode = "train"
        self._init_runner()

    def _job(self):
        from napari_ncm._torch import guard_triton

        guard_triton()
        from ncm_core.errors import NcmError

        out = _path(self.bundle)
        if out is None:
            raise NcmError("choose the generator folder")
        cancel, progress = self._cancel, self.progress_fn()
        if self._mode == "volume":
            import tempfile

            from ncm_core.inference.generate import generate_volume

            n, seed = self.volume_size.value, self.seed.value
            target = Path(tempfile.mkdtemp(prefix="ncm-volume-")) / f"generated-{seed}.zarr"
            return lambda: generate_volume(out, target, size=(n, n, n), seed=seed, progress=progress, cancel=cancel)
        from ncm_core.training.generate import train_generator

        images = [p.strip() for p in self.images.value.split(";") if p.strip()]
        if not images:
            raise NcmError("give one phase map (or three separated by ;)")
        kw = dict(size=self.size.value, iterations=self.iterations.value, overwrite=self.overwrite.value)
        return lambda: train_generator(images, out, progress=progress, cancel=cancel, **kw)

    def run(self, sync: bool = False):
        """Train; ``sync=True`` runs in the calling thread (tests, scripts)."""
        self._mode = "train"
        task = self._prepare()
        return None if task is None else self._run_function(task, sync, "Training a generator", "Training...")

    def generate(self, sync: bool = False):
        """Generate a volume and open it as a 3D labels layer."""
        self._mode = "volume"
        task = self._prepare()
        return None if task is None else self._run_function(task, sync, "Generating a volume", "Generating...")

    def _on_done(self, result: Any) -> None:
        if result is None:
            return
        self.result = result
        if self._mode == "volume":
            from napari_ncm._reader import read

            for data, kw, kind in read(str(result)):
                getattr(self._viewer, f"add_{kind}")(data, **kw)
            self._viewer.dims.ndisplay = 3
        note = describe_calibration(result) if self._mode == "train" else ""
        self.status.value = f"Done: {result}" + (f"; {note}" if note else "")
