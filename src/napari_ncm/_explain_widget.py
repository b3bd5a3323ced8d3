"""The Explain dock widget: explanation heatmaps over a mosaic, and a per-tile panel on click.

* **Run** computes :func:`ncm_core.explain.heatmaps.explain_mosaic` for the chosen
  image layer, bundle, method and target in a thread worker (napari's
  progress bar, Cancel) and adds one Image layer per map, aligned with the
  image (diverging colormap with symmetric limits for signed maps).
* **Explain folder** runs :func:`ncm_core.workflows.explanations.explain_folder` on a folder of
  tiles (or section crops): maps, ``explanations.csv`` and ``overview.png`` in the 'Save to' folder.
* **Clicking** the image (with this dock open) explains the tile under the
  mouse: its class probabilities and the maps of its two most probable
  classes side by side (for a regression bundle: its values and the maps of
  the first two targets), as in the SEM study's look at a misclassified tile.
  The clicked tile is outlined in a Shapes layer.

Layers are changed only in the callbacks, on the main thread.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice, on_click
from ncm_core.explain.options import ExplainOptions, Method

if TYPE_CHECKING:
    import napari

METHOD_CHOICES = list(get_args(Method))


class ExplainWidget(RunsInBackground, Container):
    """Explanation heatmaps over an image layer; click a tile for its probabilities and top-2 maps."""

    task_name = "Explain"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        self.image = layer_choice(viewer, napari.layers.Image, "Image")
        self.bundle = FileEdit(mode="d", label="Model bundle")
        self.method = ComboBox(choices=METHOD_CHOICES, value=ExplainOptions.method, label="Method")
        self.target = ComboBox(
            choices=["predicted", "top-2", "all"],
            value="predicted",
            label="Target",
            tooltip="predicted / top-2: each tile's own classes; or one class or target",
        )
        self.overlap = SpinBox(
            value=-1,
            min=-1,
            max=4096,
            label="Overlap (px)",
            tooltip="pixels shared by neighbouring tiles; -1 = a quarter tile",
        )
        self.factor = SpinBox(
            value=0,
            min=0,
            max=64,
            label="Heatmap factor",
            tooltip="mosaic pixels per heatmap pixel; 0 = automatic (4, or 1 for guided)",
        )
        self.out = FileEdit(
            mode="w", label="Save to (.zarr)", filter="*.zarr", tooltip="optional; a temporary folder otherwise"
        )
        self.folder = FileEdit(
            mode="d",
            label="Tiles folder",
            tooltip="optional: explain every image of a folder (maps, table, overview) into 'Save to' instead",
        )
        self.folder_button = PushButton(text="Explain folder")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="Click a tile of the image to explain it.")
        self.extend(
            [
                self.image,
                self.bundle,
                self.method,
                self.target,
                self.overlap,
                self.factor,
                self.out,
                self.folder,
                self.folder_button,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.figure = Figure(figsize=(4.8, 2.6), dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.canvas.setVisible(False)
        self.inner.layout().addWidget(self.canvas)
        self.run_button.changed.connect(lambda: self.run())
        self.folder_button.changed.connect(lambda: self.explain_folder())
        self.cancel_button.changed.connect(self.cancel)
        self.bundle.changed.connect(self._bundle_changed)
        on_click(viewer, self._on_click)  # a click, not the press that starts a pan
        self._loaded: Any = None  # (path, ModelBundle): loaded once, reused by clicks
        self.heatmap = None
        self.tile_result = None
        self.result = None
        self._tmp: Any = None
        self._what = "heatmap"
        self._init_runner()

    # ------------------------------------------------------------ settings
    def _bundle_changed(self) -> None:
        from ncm_core.errors import NcmError
        from ncm_core.explain.interactive import target_choices

        try:
            choices = target_choices(Path(str(self.bundle.value)))
        except NcmError:
            return
        self.target.choices = choices
        self.target.value = choices[0]

    def _load(self) -> Any:
        from ncm_core.errors import NcmError
        from ncm_core.models.bundle import load_bundle

        path = str(self.bundle.value)
        if path in ("", "."):
            raise NcmError("choose a model bundle")
        if self._loaded is None or self._loaded[0] != path:
            from napari_ncm._torch import guard_triton

            guard_triton()
            self._loaded = (path, load_bundle(path))
        return self._loaded[1]

    def _mosaic(self) -> Any:
        from napari_ncm._widget import layer_to_mosaic
        from ncm_core.errors import NcmError

        if self.image.value is None:
            raise NcmError("choose an image layer")
        return layer_to_mosaic(self.image.value)

    def _out_path(self, folder: bool = False) -> Path:
        """'Save to', or a temporary path (a heatmap zarr, or with ``folder`` an output folder)."""
        out = str(self.out.value)
        if out not in ("", "."):
            return Path(out)
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ncm-explain-")
        name = f"{self.method.value}-{self.target.value}" + ("-tiles" if folder else ".zarr")
        return Path(self._tmp.name) / name.replace("/", "_")

    # ------------------------------------------------------------ jobs
    def _job(self):
        if self._what == "folder":
            return self._folder_job()
        mosaic, bundle = self._mosaic(), self._load()
        from napari_ncm._widget import input_note

        self._note = input_note(bundle, self.image.value)
        cancel, progress = self._cancel, self.progress_fn()
        kw = dict(
            overlap=None if self.overlap.value < 0 else self.overlap.value,
            factor=self.factor.value or None,
            device="cpu" if self._on_cpu() else "auto",
        )
        method, target, out = self.method.value, self.target.value, self._out_path()

        def work():
            from ncm_core.explain.heatmaps import explain_mosaic

            return "heatmap", explain_mosaic(
                bundle,
                mosaic,
                out,
                method=method,
                target=target,
                overwrite=True,
                cancel=cancel,
                progress=progress,
                **kw,
            )

        return work

    def _folder_job(self):
        from ncm_core.errors import NcmError

        folder = str(self.folder.value)
        if folder in ("", "."):
            raise NcmError("choose a folder of tiles")
        bundle = self._load()
        cancel, progress = self._cancel, self.progress_fn()
        method, target = self.method.value, self.target.value
        out = self._out_path(folder=True)
        device = "cpu" if self._on_cpu() else "auto"

        def work():
            from ncm_core.workflows.explanations import explain_folder

            return "folder", explain_folder(
                bundle,
                folder,
                out,
                methods=method,
                target=target,
                device=device,
                overwrite=True,
                cancel=cancel,
                progress=progress,
            )

        return work

    @staticmethod
    def _on_cpu() -> bool:
        import torch

        return not torch.cuda.is_available()

    def run(self, sync: bool = False):
        """Compute the heatmap of the image layer; adds one Image layer per map."""
        task = self._prepare()
        if task is None:
            return None
        self.result = None
        return self._run_function(task, sync, "Explain", "Explaining...")

    def explain_folder(self, sync: bool = False):
        """Explain every image of the tiles folder into 'Save to' (maps, explanations.csv, overview.png)."""
        self._what = "folder"
        try:
            task = self._prepare()
        finally:
            self._what = "heatmap"
        if task is None:
            return None
        self.result = None
        return self._run_function(task, sync, "Explain folder", "Explaining the folder...")

    def explain_tile(self, y: float, x: float, sync: bool = False):
        """Explain the tile holding data pixel (y, x) of the image layer: probabilities and top-2 maps."""
        from ncm_core.errors import NcmError
        from ncm_core.explain.heatmaps import tile_at

        if not self._new_run():
            return None
        try:
            mosaic, bundle = self._mosaic(), self._load()
            if tile_at(bundle, mosaic, y, x) is None:
                return None
        except NcmError as exc:
            self._on_error(exc)
            return None
        method = self.method.value

        def work():
            from ncm_core.explain.interactive import explain_tile_at

            return "tile", explain_tile_at(bundle, mosaic, y, x, method)

        self.result = None
        return self._run_function(work, sync, "Explain tile", "Explaining the tile...")

    def _on_click(self, position: Any) -> None:
        layer = self.image.value
        if layer is None or self.worker is not None or str(self.bundle.value) in ("", "."):
            return
        if not self.native.isVisible():
            return
        y, x = layer.world_to_data(position)[-2:]
        self.explain_tile(y, x)

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_done(self, value: Any) -> None:
        if value is None:
            return
        what, res = value
        self.result = res
        if what == "heatmap":
            self._show_heatmap(res)
        elif what == "folder":
            self.status.value = res.summary()
        elif res is not None:
            self._show_tile(res)

    def _show_heatmap(self, hm: Any) -> None:
        from napari_ncm._layers import heatmap_layers

        self.heatmap = hm
        base = f"{self.image.value.name} {hm.method}"
        for data, kw, _ in heatmap_layers(hm, name=base):
            if kw["name"] in self._viewer.layers:
                self._viewer.layers.remove(kw["name"])
            self._viewer.add_image(data, **kw)
        self.status.value = (
            f"{hm.method}: {len(hm.names)} map(s), {hm.attrs['n_tiles']} tiles, {hm.attrs['seconds']:.1f} s"
        ) + (f"; {self._note}" if getattr(self, "_note", None) else "")

    def _show_tile(self, te: Any) -> None:
        import numpy as np

        from ncm_core.viz.explanations import draw_tile_explanation

        y0, x0, T = where = (te.y0, te.x0, te.size)
        self.tile_result = (where, te.explanation)
        image = self.image.value
        rect = np.array([[y0 - 0.5, x0 - 0.5], [y0 + T - 0.5, x0 + T - 0.5]])
        name = f"{image.name} explained tile"
        kw = {"scale": tuple(image.scale[-2:]), "translate": tuple(image.translate[-2:])}
        if name in self._viewer.layers:
            self._viewer.layers[name].data = [rect]
        else:
            self._viewer.add_shapes(
                [rect],
                shape_type="rectangle",
                edge_color="cyan",
                face_color="transparent",
                edge_width=2,
                name=name,
                metadata={"ncm_overlay": "explained tile"},
                **kw,
            )
            self._viewer.layers.selection.active = image
        draw_tile_explanation(
            self.figure, te.tile, te.explanation, self._loaded[1].class_names or self._loaded[1].config.target_names
        )
        self.canvas.setVisible(True)
        self.canvas.draw_idle()
        self.status.value = te.describe()

    def _run_function(self, work: Any, sync: bool, description: str, running_text: str) -> Any:
        self.folder_button.enabled = sync
        return super()._run_function(work, sync, description, running_text)

    def _finished_hook(self) -> None:
        self.folder_button.enabled = True
