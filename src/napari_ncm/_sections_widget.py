"""The Cross-section dock widget: find the collector, show the crops, extract them, predict rate capability.

* **Detect** runs :func:`ncm_core.data.sections.detect_section` on the chosen image
  layer and adds two Shapes layers over it: the collector's top edge (a line)
  and the crop rectangles (rotated with the collector), so the geometry can be
  checked before anything is written.
* **Extract crops** writes them with :func:`ncm_core.data.sections.extract_sections`
  (a folder the Train widget's regression mode reads).
* **Predict** runs :func:`ncm_core.inference.sections.predict_section` with a
  regression bundle and adds one Shapes layer per target, each crop filled by
  its predicted value (its value shows in the status bar under the mouse),
  and draws the section's predicted rate capability (mean +- std over the
  crops) in the dock.

Each runs in a napari thread worker with the progress bar and Cancel; layers
are added in the callbacks, on the main thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice
from ncm_core.data.section_detection import MODES, SectionOptions

if TYPE_CHECKING:
    import napari


def section_layers_kwargs(image: Any) -> dict[str, Any]:
    """Scale and translate that put Shapes in the image's pixel coordinates over the image."""
    return {"scale": tuple(image.scale[-2:]), "translate": tuple(image.translate[-2:])}


def crop_colors(
    crops: list[tuple[int, int]], crop: tuple[int, int]
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """Edge and face colours of the crop outlines: yellow outlines when crops do not overlap; overlapping
    crops (sliding mode) alternate between four colours by the parity of their row and column, with a
    faint fill, so that neighbours that overlap never look alike."""
    yellow = (1.0, 1.0, 0.0, 1.0)
    rows = {r: k for k, r in enumerate(sorted({r for r, _ in crops}))}
    cols = {c: k for k, c in enumerate(sorted({c for _, c in crops}))}
    rs, cs = sorted(rows), sorted(cols)
    overlap = any(b - a < crop[0] for a, b in zip(rs, rs[1:])) or any(b - a < crop[1] for a, b in zip(cs, cs[1:]))
    if not overlap:
        return [yellow] * len(crops), [(0.0, 0.0, 0.0, 0.0)] * len(crops)
    palette = [yellow, (0.0, 1.0, 1.0, 1.0), (1.0, 0.3, 1.0, 1.0), (0.4, 1.0, 0.4, 1.0)]
    edge = [palette[2 * (rows[r] % 2) + cols[c] % 2] for r, c in crops]
    return edge, [(*e[:3], 0.12) for e in edge]


class SectionsWidget(RunsInBackground, Container):
    """Detect a cross-section's collector and crops; extract them; predict values along the section."""

    task_name = "Cross-section"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        self.image = layer_choice(viewer, napari.layers.Image, "Image")
        d = SectionOptions()
        self.crop_h = SpinBox(value=d.crop[0], min=8, max=8192, label="Crop height (px)")
        self.crop_w = SpinBox(value=d.crop[1], min=8, max=16384, label="Crop width (px)")
        self.mode = ComboBox(
            choices=list(MODES),
            value=d.mode,
            label="Crops",
            tooltip="one row of crops centred in the active layer, or a sliding window",
        )
        self.margin = SpinBox(
            value=d.margin,
            min=0,
            max=512,
            label="Margin (px)",
            tooltip="pixels left out next to the collector and below the surface",
        )
        self.detect_button = PushButton(text="Detect")
        self.crops_out = FileEdit(mode="d", label="Crop folder", tooltip="where Extract writes the crops")
        self.extract_button = PushButton(text="Extract crops")
        self.bundle = FileEdit(mode="d", label="Regression bundle")
        self.predict_button = PushButton(text="Predict")
        self.run_button = self.detect_button  # the mixin disables this one while working
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.crop_h,
                self.crop_w,
                self.mode,
                self.margin,
                self.detect_button,
                self.crops_out,
                self.extract_button,
                self.bundle,
                self.predict_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.figure = Figure(figsize=(4.5, 3.0), dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self.canvas.setVisible(False)
        self.inner.layout().addWidget(self.canvas)
        self.detect_button.changed.connect(lambda: self.detect())
        self.extract_button.changed.connect(lambda: self.extract())
        self.predict_button.changed.connect(lambda: self.predict())
        self.cancel_button.changed.connect(self.cancel)
        self._what = "detect"
        self.geometry = None
        self.prediction = None
        self.result = None
        self._init_runner()

    # ------------------------------------------------------------ jobs
    def _settings(self) -> dict[str, Any]:
        return dict(crop=(self.crop_h.value, self.crop_w.value), mode=self.mode.value, margin=self.margin.value)

    def _mosaic(self):
        from napari_ncm._widget import layer_to_mosaic
        from ncm_core.errors import NcmError

        if self.image.value is None:
            raise NcmError("choose the cross-section image layer")
        return layer_to_mosaic(self.image.value)

    def _job(self):
        from ncm_core.errors import NcmError

        mosaic = self._mosaic()
        kw = self._settings()
        cancel, progress = self._cancel, self.progress_fn()
        what = self._what
        if what == "detect":
            from ncm_core.data.sections import detect_section

            return lambda: ("detect", detect_section(mosaic, cancel=cancel, **kw))
        if what == "extract":
            out = str(self.crops_out.value)
            if out in ("", "."):
                raise NcmError("choose a crop folder to write")

            def extract():
                from ncm_core.data.sections import extract_sections

                return "extract", extract_sections(
                    [mosaic], out, overwrite=True, progress=progress, cancel=cancel, **kw
                )

            return extract
        bundle = str(self.bundle.value)
        if bundle in ("", "."):
            raise NcmError("choose a regression bundle (ncm train --task regress)")
        from napari_ncm._torch import guard_triton

        guard_triton()

        def predict():
            from ncm_core.inference.sections import predict_section

            return "predict", predict_section(
                bundle, mosaic, mode=kw["mode"], margin=kw["margin"], progress=progress, cancel=cancel
            )

        return predict

    def _go(self, what: str, sync: bool):
        self._what = what
        task = self._prepare()
        if task is None:
            return None
        self.result = None
        return self._run_function(task, sync, f"Cross-section: {what}", f"{what.capitalize()}...")

    def detect(self, sync: bool = False):
        """Find collector, surface and crops; show them as Shapes layers."""
        return self._go("detect", sync)

    def extract(self, sync: bool = False):
        """Write the crops to the crop folder."""
        return self._go("extract", sync)

    def predict(self, sync: bool = False):
        """Predict every crop with the regression bundle; value layers and the rate-capability plot."""
        return self._go("predict", sync)

    # ------------------------------------------------------------ callbacks (main thread)
    def _show_geometry(self, geom: Any) -> None:
        image = self.image.value
        kw = section_layers_kwargs(image)
        name = image.name
        for suffix in (" collector", " crops"):
            if f"{name}{suffix}" in self._viewer.layers:
                self._viewer.layers.remove(f"{name}{suffix}")
        self._viewer.add_shapes(
            [geom.collector_line()],
            shape_type="line",
            edge_color="red",
            edge_width=3,
            name=f"{name} collector",
            metadata={"ncm_overlay": "collector"},
            **kw,
        )
        edge, face = crop_colors(geom.crops, tuple(geom.crop))
        self._viewer.add_shapes(
            geom.crop_polygons(outline=True),
            shape_type="polygon",
            edge_color=edge,
            face_color=face,
            edge_width=2 if len(set(map(tuple, edge))) == 1 else 1,
            name=f"{name} crops",
            features={"crop": list(range(len(geom.crops)))},
            metadata={"ncm_overlay": "crops"},
            **kw,
        )

    def _show_values(self, sp: Any) -> None:
        from ncm_core.viz.rate_capability import draw_section_prediction

        image = self.image.value
        kw = section_layers_kwargs(image)
        polys = sp.geometry.crop_polygons(outline=True)
        features = {n: sp.values[:, k] for k, n in enumerate(sp.target_names)}
        for k, n in enumerate(sp.target_names):
            lname = f"{image.name} {n}"
            if lname in self._viewer.layers:
                self._viewer.layers.remove(lname)
            v = sp.values[:, k]
            lo, hi = float(v.min()), float(v.max())
            self._viewer.add_shapes(
                polys,
                shape_type="polygon",
                features=features,
                face_color=n,
                face_colormap="viridis",
                face_contrast_limits=(lo, hi if hi > lo else lo + 1),
                edge_width=0,
                opacity=0.6,
                name=lname,
                visible=k == 0,
                **kw,
            )
        ax = self.figure.gca() if self.figure.axes else self.figure.add_subplot(1, 1, 1)
        draw_section_prediction(ax, image.name, sp.summary(), sp.target_names, len(sp.values))
        self.figure.tight_layout()
        self.canvas.setVisible(True)
        self.canvas.draw_idle()

    def _on_done(self, value: Any) -> None:
        if value is None:
            return
        what, res = value
        self.result = res
        if what == "detect":
            self.geometry = res
            self._show_geometry(res)
            self.status.value = res.describe()
        elif what == "extract":
            self.status.value = f"crops written to {Path(res)}"
        else:
            self.prediction, self.geometry = res, res.geometry
            self._show_geometry(res.geometry)
            self._show_values(res)
            from ncm_core.data.sections import summary_line

            self.status.value = summary_line(res.summary(), len(res.values))

    def _run_function(self, work: Any, sync: bool, description: str, running_text: str) -> Any:
        self.extract_button.enabled = self.predict_button.enabled = sync
        return super()._run_function(work, sync, description, running_text)

    def _finished_hook(self) -> None:
        self.extract_button.enabled = self.predict_button.enabled = True
