"""The Predict dock widget: pick an image layer and a model bundle, classify every tile.

The widget only gathers parameters and shows results: the work is
``ncm_core.inference.predict.predict_mosaic_steps``, run in a napari thread worker
(napari's progress bar, a Cancel button) or, for tests, synchronously.
Layers are added on the main thread, from the worker's ``returned`` signal.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice

if TYPE_CHECKING:
    import napari


def layer_to_mosaic(layer: Any):
    """A ``Mosaic`` view of an Image layer: its data (level 0), pixel size and translate.

    A scale of 1 is napari's default and is read as 'pixel size unknown'.
    """
    import dask.array as da

    from ncm_core.errors import NcmError
    from ncm_core.io.mosaic import Mosaic, open_mosaic

    data = layer.data[0] if layer.multiscale else layer.data
    spatial = 2
    if data.ndim - (1 if layer.rgb else 0) != spatial:
        raise NcmError(f"layer {layer.name!r} has {data.ndim} dimensions; Predict works on 2-D (or RGB) images")
    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=(1024, 1024) + data.shape[2:])
    m = open_mosaic(arr, axes="yxc" if layer.rgb else "yx")
    sy, sx = (float(v) for v in layer.scale[-2:])
    pixel = None if (sy == 1.0 and sx == 1.0) else sx
    return Mosaic(
        data=m.data,
        pixel_size=pixel,
        translate=tuple(float(v) for v in layer.translate[-2:]),
        source=f"napari layer {layer.name!r}",
        name=layer.name,
    )


def input_note(bundle: Any, layer: Any) -> str | None:
    """How the image layer is converted for the bundle's model (None: as it is), shown as a napari info
    notification now and kept for the status line: an RGB image given to a grayscale model is never
    converted silently."""
    from napari.utils.notifications import show_info

    from ncm_core.models.bundle import ModelBundle, config_bundle

    b = bundle if isinstance(bundle, ModelBundle) else config_bundle(bundle)  # config only: light
    channels = 1
    if layer.rgb:
        data = layer.data[0] if layer.multiscale else layer.data
        channels = int(data.shape[-1])
    note = b.config.input.channel_note(channels)
    if note:
        show_info(f"{layer.name}: {note}")
    return note


def hand_bundle_to_predict(viewer: Any, path: str, open_if_missing: bool = False) -> int:
    """Set ``path`` as the model of the Predict widget(s) docked in ``viewer`` (opening one when asked);
    returns how many received it. The Train and Tune widgets call this with the bundle they made."""
    try:
        docked = [w for w in viewer.window.dock_widgets.values() if isinstance(w, PredictWidget)]
        if not docked and open_if_missing:
            docked = [viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")[1]]
    except Exception:  # a viewer without a window (scripts)
        return 0
    for w in docked:
        w.use_bundle(path)
    return len(docked)


class PredictWidget(RunsInBackground, Container):
    """Classify the tiles of an image layer with a model bundle; adds class, confidence and probability layers."""

    task_name = "Predict"

    @property
    def cancelled_text(self) -> str:  # type: ignore[override]
        """What a Cancel leaves: the finished blocks, if any, for a run with the same settings."""
        done, total = getattr(self, "last_progress", (0, 0))
        if done:
            return f"Cancelled: {done} of {total} blocks are kept; Run again with the same settings to resume"
        return "Cancelled before a block was finished"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        self.image = layer_choice(viewer, napari.layers.Image, "Image")
        self.bundle = FileEdit(mode="d", label="Model bundle", tooltip="folder with config.json and model.safetensors")
        self.stride = SpinBox(value=0, min=0, max=100000, label="Stride (px)", tooltip="0 = tile size (no overlap)")
        from ncm_core.inference.options import PredictOptions

        d = PredictOptions()  # the one home of the defaults (light: no torch)
        self.batch_size = SpinBox(value=d.batch_size, min=1, max=4096, label="Batch size")
        self.exclude_rows = LineEdit(
            value="", label="Exclude rows", tooltip="e.g. -32: skips a 32-row SEM info bar; auto: find the bar"
        )
        self.foreground = CheckBox(value=d.foreground, text="Skip background tiles")
        self.dense = CheckBox(
            value=d.dense,
            text="Dense (shared features)",
            tooltip="with a stride below the tile: run the network's trunk once per block; "
            "undecided tiles are rechecked exactly",
        )
        self.allow_incomplete = CheckBox(
            value=d.allow_incomplete,
            text="Finish when regions cannot be read",
            tooltip="tiles whose pixels cannot be read (a damaged or missing chunk) are marked not predicted "
            "instead of stopping the run; by default the run stops and a second Run retries them",
        )
        self.output = FileEdit(
            mode="w",
            label="Output (.zarr)",
            filter="*.zarr",
            tooltip="where the prediction is written; empty = a temporary folder",
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.bundle,
                self.stride,
                self.batch_size,
                self.exclude_rows,
                self.foreground,
                self.dense,
                self.allow_incomplete,
                self.output,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.prediction = None
        self._tmp_outputs: dict[str, Path] = {}
        self._tmp_dirs: dict[str, tempfile.TemporaryDirectory] = {}
        self._init_runner()

    # ------------------------------------------------------------ running
    def _job(self):
        """The work (a generator of block progress returning the prediction), from the current settings
        (main thread)."""
        from napari_ncm._torch import guard_triton

        guard_triton()  # before torch is first imported in this napari session
        from ncm_core.data.infobar import parse_band
        from ncm_core.errors import NcmError
        from ncm_core.inference.predict import predict_mosaic_steps

        layer = self.image.value
        if layer is None:
            raise NcmError("choose an image layer to predict")
        bundle = Path(str(self.bundle.value))
        if str(self.bundle.value) in ("", "."):
            raise NcmError("choose a model bundle folder")
        out_text = str(self.output.value)
        if out_text in ("", "."):  # one temporary output per layer, so that a cancelled run resumes
            out = self._tmp_outputs.get(layer.name)
            if out is None:
                # a TemporaryDirectory is removed when napari exits (its finalizer), unlike mkdtemp's
                tmp = self._tmp_dirs[layer.name] = tempfile.TemporaryDirectory(prefix="ncm-")
                out = self._tmp_outputs[layer.name] = Path(tmp.name) / f"{layer.name}_prediction.zarr"
        else:
            out = Path(out_text)
        rows = parse_band(self.exclude_rows.value) if self.exclude_rows.value.strip() else None
        mosaic = layer_to_mosaic(layer)
        self._note = input_note(bundle, layer)
        self._name = layer.name
        self._layer = layer
        kwargs = dict(
            stride=self.stride.value or None,
            batch_size=self.batch_size.value,
            exclude_rows=rows,
            foreground=self.foreground.value,
            dense=self.dense.value,
            allow_incomplete=self.allow_incomplete.value,
            overwrite=True,
        )
        cancel = self._cancel

        def work():
            steps = predict_mosaic_steps(bundle, mosaic, out, cancel=cancel, **kwargs)
            while True:
                try:
                    done, total = next(steps)
                except StopIteration as stop:
                    return stop.value
                yield done, total, f"{done}/{total} blocks"

        return work

    def run(self, sync: bool = False):
        """Start a prediction. ``sync=True`` runs it in the calling thread (tests, scripts) and returns it;
        otherwise returns the thread worker."""
        work = self._prepare()
        if work is None:
            return None
        self.result = None
        return self._run_function(work, sync, f"Predicting {self._name}", f"Predicting {self._name}...")

    # ------------------------------------------------------------ callbacks (main thread)
    def use_bundle(self, path: str) -> None:
        """Predict with ``path`` (the Train widget calls this with the bundle it has just written)."""
        self.bundle.value = path

    def _on_done(self, prediction: Any) -> None:
        from napari_ncm._layers import prediction_layers, viewer_classes

        if prediction is None:
            return
        self.prediction = self.result = prediction
        for data, kw, kind in prediction_layers(prediction, name=self._name, classes=viewer_classes(self._viewer)):
            if kw["name"] in self._viewer.layers:  # a second run replaces the first run's layers
                self._viewer.layers.remove(kw["name"])
            getattr(self._viewer, f"add_{kind}")(data, **kw)
        at = prediction.attrs
        msg = f"Done: {at['n_predicted']} tiles in {at['seconds']:.1f} s ({prediction.grid.tile} px)"
        for why, n in at.get("not_predicted", {}).items():
            msg += f"; {n} not predicted ({why})"
        if at.get("ood_fraction") is not None:
            msg += f"; {at['ood_fraction']:.0%} unlike the training tiles"
            from ncm_core.inference.options import OOD_WARN_FRACTION

            if at["ood_fraction"] > OOD_WARN_FRACTION:
                from napari.utils.notifications import show_warning

                show_warning(
                    f"{at['ood_fraction']:.0%} of the tiles of {self._name!r} look unlike the model's "
                    "training tiles: their classes are unreliable (see the out-of-distribution layer)"
                )
        if self._note:
            msg += f"; {self._note}"
        self.status.value = msg + f" -> {prediction.path.name}"
        self.probabilities_dock()

    def _result(self) -> Any:
        return self.prediction if self._got_result else None

    def probabilities_dock(self):
        """The Tile probabilities dock (opened on first use): click a tile to see its class bars."""
        try:
            _, dock = self._viewer.window.add_plugin_dock_widget("napari-ncm", "Tile probabilities")
        except Exception:  # a viewer without a window (scripts)
            return None
        return dock
