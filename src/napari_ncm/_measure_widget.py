"""The Measure dock widget: the microstructure numbers of a segmentation, as tables, plots and layers.

Runs :func:`ncm_core.workflows.measure.measure` on a Labels layer (class names from its features, pixel
size from its scale) in a napari thread worker with the progress bar and Cancel, into an output folder.
When it is done, the dock shows the summary as a table (porosity and phase fractions, particles and
d10/d50/d90, interface density, local thickness, tortuosity) and the size-distribution and profile
plots; the separated particles (Labels) and the pores' local thickness (Image) are added as layers
aligned with the segmentation (same scale, translated by the measured region's offset).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox

from napari_ncm._background import RunsInBackground
from napari_ncm._fields import layer_choice
from ncm_core.measure.options import MeasureOptions
from ncm_core.measure.particles import SEPARATION_METHODS

if TYPE_CHECKING:
    import napari


def is_segmentation(layer: Any) -> bool:
    """A segmented mosaic (``ncm predict`` with a segmenter, the Segment dock): what Measure is for, rather
    than a stroke or mask layer."""
    return "ncm_segmentation" in (getattr(layer, "metadata", None) or {})


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """``(measure, value)`` rows of a ``measure.json`` summary, for the dock's table."""
    u = s.get("unit", "px")
    rows = [("porosity", f"{s['fractions']['porosity']:.4f}")]
    rows += [(f"fraction {k}", f"{v:.4f}") for k, v in s["fractions"]["fractions"].items() if v is not None]
    i = s.get("interfaces")
    if i:
        rows.append(("pore-solid interface", f"{i['pore_solid']:.4g} {i['unit']}"))
    p = s.get("particles")
    if p:
        rows.append(("particles", f"{p['count']:.0f}"))
        rows += [(k, f"{p[k]:.4g} {u}") for k in ("d10", "d50", "d90") if p.get(k) is not None]
        if p.get("mean_circularity") is not None:
            rows.append(("mean circularity", f"{p['mean_circularity']:.3f}"))
    t = s.get("local_thickness")
    if t and t.get("mean") is not None:
        rows.append(("mean pore thickness", f"{t['mean']:.4g} {u}"))
    tau = s.get("tortuosity")
    if tau:
        rows.append((f"tortuosity (axis {tau['axis']})", "infinite" if tau["tau"] is None else f"{tau['tau']:.4f}"))
    return rows


def full_resolution(layer: Any) -> np.ndarray:
    """The pixels of a Labels layer at full resolution: level 0 of a multiscale layer (a segmentation opened
    from a mosaic), which ``np.asarray(layer.data)`` would give at its coarsest level."""
    return np.asarray(layer.data[0] if layer.multiscale else layer.data)


class MeasureWidget(RunsInBackground, Container):
    """Measure a Labels layer: fractions, profiles, particles, interfaces, local thickness, tortuosity."""

    task_name = "Measure"
    cancelled_text = "Cancelled: nothing was written"
    dock_words = {
        "--pore CLASS": "the Pore class field",
        "--region y0:y1,x0:x1[,z0:z1]": "the Region field",
        "--classes a,b,c": "class names on the layer (features) or the Classes field",
        "(give --pixel-size)": "(set the layer's scale in micrometres)",
        "pass --overwrite": "tick 'Replace earlier measures there'",
    }

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        import napari.layers
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure
        from qtpy.QtWidgets import QTableWidget

        super().__init__(labels=True, scrollable=True)
        self._viewer = viewer = napari_viewer
        d = MeasureOptions()
        self.labels = layer_choice(viewer, napari.layers.Labels, "Segmentation", prefer=is_segmentation)
        self.regions = layer_choice(viewer, napari.layers.Labels, "Regions", nullable=True, preselect=False)
        self.classes = LineEdit(value="", label="Classes", tooltip="a,b,c for values 1, 2, 3 (default: the layer's)")
        self.pore = LineEdit(value="", label="Pore class", tooltip="default: the class named pore, void, resin...")
        self.region = LineEdit(value="", label="Region", tooltip="y0:y1,x0:x1 for particles and tortuosity")
        self.axis = SpinBox(value=d.axis, min=0, max=2, label="Through-plane axis")
        self.separation = ComboBox(choices=list(SEPARATION_METHODS), value=d.separation, label="Separation")
        self.do_tortuosity = CheckBox(value=d.tortuosity, text="Tortuosity (TauFactor)")
        self.output = FileEdit(mode="d", label="Output folder")
        self.overwrite = CheckBox(value=False, text="Replace earlier measures there")
        self.run_button = PushButton(text="Measure")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend(
            [
                self.labels,
                self.regions,
                self.classes,
                self.pore,
                self.region,
                self.axis,
                self.separation,
                self.do_tortuosity,
                self.output,
                self.overwrite,
                self.run_button,
                self.cancel_button,
                self.status,
            ]
        )
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["measure", "value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setVisible(False)
        self.inner.layout().addWidget(self.table)
        self.figure = Figure(figsize=(4.5, 5.5), dpi=80)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(380)
        self.canvas.setVisible(False)
        self.inner.layout().addWidget(self.canvas)
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(self.cancel)
        self.result: Path | None = None
        self.summary: dict[str, Any] | None = None
        self._init_runner()

    # ------------------------------------------------------------ job (settings read on the main thread)
    def _job(self):
        from napari_ncm._layers import layer_classes
        from ncm_core.errors import NcmError

        layer = self.labels.value
        if layer is None:
            raise NcmError("choose the segmentation (a Labels layer)")
        out = str(self.output.value)
        if out in ("", "."):
            raise NcmError("choose an output folder for the measures")
        named = {v: n for n, v in layer_classes(layer).items()}
        scale = float(layer.scale[-1])
        regions = self.regions.value
        kw = dict(
            classes=self.classes.value.strip() or named or None,
            pore=self.pore.value.strip() or None,
            region=self.region.value.strip() or None,
            axis=self.axis.value,
            separation=self.separation.value,
            tortuosity=self.do_tortuosity.value,
            pixel_size=scale if scale != 1.0 else None,
            overwrite=self.overwrite.value,
        )
        data = full_resolution(layer)
        if regions is not None:
            kw["regions"] = full_resolution(regions)
        cancel, progress = self._cancel, self.progress_fn()

        def task():
            from ncm_core.workflows.measure import measure

            return measure(data, out, progress=progress, cancel=cancel, **kw)

        return task

    def run(self, sync: bool = False):
        """Measure the chosen layer; ``sync=True`` runs in the calling thread (tests, scripts)."""
        task = self._prepare()
        if task is None:
            return None
        self.result = self.summary = None
        return self._run_function(task, sync, "Measuring", "Measuring...")

    # ------------------------------------------------------------ callbacks (main thread)
    def _on_done(self, out: Any) -> None:
        if out is None:
            return
        self.result = Path(out)
        self.summary = s = json.loads((self.result / "measure.json").read_text())
        self._show_table(summary_rows(s))
        self._show_plots(s)
        self._add_layers(s)
        por = s["fractions"]["porosity"]
        self.status.value = f"Done: porosity {por:.3f}; tables and figures in {self.result}"

    def _show_table(self, rows: list[tuple[str, str]]) -> None:
        from qtpy.QtWidgets import QTableWidgetItem

        self.table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(k))
            self.table.setItem(i, 1, QTableWidgetItem(v))
        self.table.resizeColumnsToContents()
        self.table.resizeRowsToContents()
        # every row in view (the dock scrolls, not the table)
        rows_height = sum(self.table.rowHeight(i) for i in range(len(rows)))
        self.table.setFixedHeight(rows_height + self.table.horizontalHeader().sizeHint().height() + 4)
        self.table.setVisible(True)

    def _show_plots(self, s: dict[str, Any]) -> None:
        from ncm_core.viz.measure import draw_profile, draw_size_distribution

        self.figure.clear()
        u = s["unit"]
        classes = list(s["classes"].values())
        prof = json.loads((self.result / "profile.json").read_text())
        table = {k: np.array([r.get(k, math.nan) for r in prof["rows"]], float) for k in ["position", *classes]}
        n = 2 if "particles" in s else 1
        draw_profile(self.figure.add_subplot(n, 1, 1), table, classes, s["pore"], u, prof["coordinate"])
        if "particles" in s:
            rows = json.loads((self.result / "particles.json").read_text())["rows"]
            d = np.array([r["equivalent_diameter"] for r in rows], float)
            draw_size_distribution(self.figure.add_subplot(n, 1, 2), d, s["particles"], u)
        self.figure.tight_layout()
        self.canvas.setVisible(True)
        self.canvas.draw_idle()

    def _add_layers(self, s: dict[str, Any]) -> None:
        import tifffile

        layer = self.labels.value
        scale = np.asarray(layer.scale)
        translate = np.asarray(layer.translate) + np.asarray(s["region_offset"]) * scale
        kw = {"scale": tuple(scale), "translate": tuple(translate)}
        name = layer.name
        for suffix in (" particles", " local thickness"):
            if f"{name}{suffix}" in self._viewer.layers:
                self._viewer.layers.remove(f"{name}{suffix}")
        meta = {"ncm_overlay": "measure"}
        if (self.result / "particles.tif").is_file():
            parts = tifffile.imread(self.result / "particles.tif")
            self._viewer.add_labels(parts, name=f"{name} particles", opacity=0.5, metadata=meta, **kw)
        if (self.result / "local_thickness.tif").is_file():
            lt = tifffile.imread(self.result / "local_thickness.tif")
            self._viewer.add_image(
                lt, name=f"{name} local thickness", colormap="magma", blending="additive", metadata=meta, **kw
            )
