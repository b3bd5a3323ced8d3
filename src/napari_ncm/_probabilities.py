"""The Tile probabilities dock: click a tile of a prediction, see its class-probability bars.

Works for any prediction layer in the viewer (from the Predict widget or
opened from disk): the click is mapped through the layer's own transform to
its grid cell, and the probabilities are read from the prediction on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


class TileProbabilities(QWidget):
    """Class-probability bars of the prediction tile under the last click."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__()
        self._viewer = napari_viewer
        self.setMinimumWidth(280)  # with the plot hidden, the hint alone would let the dock shrink to a strip
        self.figure = Figure(figsize=(3.6, 3.4), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(270)
        self.canvas.setVisible(False)  # a hint until the first click, not empty axes
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.info = QLabel("Click a tile of a prediction layer to see its class probabilities.")
        from napari_ncm._background import wrap_label

        wrap_label(self.info)
        self.class_box = QComboBox()
        self.class_box.setToolTip("a class of the clicked prediction")
        self.layer_button = QPushButton("Show as layer")
        self.layer_button.setToolTip("add this class's probability per tile as an image layer")
        self.layer_button.clicked.connect(lambda: self.add_probability_layer())
        row = QHBoxLayout()
        row.addWidget(self.class_box, 1)
        row.addWidget(self.layer_button)
        self.class_row = QWidget()
        self.class_row.setLayout(row)
        self.class_row.setVisible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.canvas)
        layout.addWidget(self.class_row)
        layout.addStretch(1)
        self.shown: dict[str, Any] | None = None  # what the plot shows: layer, cell, probabilities
        self._predictions: dict[str, Any] = {}
        from napari_ncm._fields import on_click

        on_click(napari_viewer, self.show_at)

    def add_probability_layer(self, class_name: str | None = None) -> Any:
        """Add the probability of ``class_name`` (default: the chosen class) of the last clicked
        prediction as an image layer; returns the layer."""
        from napari_ncm._layers import probability_layer

        if self.shown is None or self.shown.get("path") is None:
            return None
        pred = self._prediction(self.shown["path"])
        cls = class_name or self.class_box.currentText()
        data, kw, _ = probability_layer(pred, cls, name=self.shown["layer"].removesuffix(" classes"))
        if kw["name"] in self._viewer.layers:
            return self._viewer.layers[kw["name"]]
        return self._viewer.add_image(data, **kw)

    def _prediction(self, path: str):
        from ncm_core.inference.predict import open_prediction

        if path not in self._predictions:
            self._predictions[path] = open_prediction(path)
        return self._predictions[path]

    def show_at(self, world: Any) -> bool:
        """Plot the tile under world position ``world`` of the topmost visible prediction layer."""
        from ncm_core.evaluation.tiles import tile_report
        from ncm_core.viz.prediction import probability_bars

        for layer in reversed(list(self._viewer.layers)):
            meta = layer.metadata or {}
            if "ncm_prediction" not in meta or not layer.visible or layer.ndim != 2:
                continue
            f = int(meta.get("cell_factor", 1))  # layers clipped to the image draw a tile as f x f cells
            i, j = (int(np.round(v)) // f for v in layer.world_to_data(tuple(world)[-2:]))
            try:
                pred = self._prediction(meta["ncm_prediction"])
            except Exception as exc:  # the prediction was moved or deleted
                self.info.setText(f"{layer.name}: {exc}")
                return False
            r = tile_report(pred, i, j)
            if r is None:
                continue
            shown = {"layer": layer.name, "cell": (i, j), "path": meta["ncm_prediction"]}
            if self.class_box.count() != len(pred.class_names) or self.class_box.itemText(0) != pred.class_names[0]:
                self.class_box.clear()
                self.class_box.addItems(list(pred.class_names))
            self.class_row.setVisible(True)
            if r.probabilities is None:
                self.info.setText(f"{layer.name}: {r.describe()}")
                self.ax.clear()
                self.canvas.draw_idle()
                self.shown = {**shown, "probabilities": None}
                return True
            probs = r.probabilities
            self.info.setText(r.describe())
            probability_bars(self.ax, probs, pred.class_names, pred.colors, title=layer.name)
            self.figure.tight_layout()
            self.canvas.setVisible(True)
            self.canvas.draw_idle()
            self.class_box.setCurrentIndex(int(np.argmax(probs)))
            self.shown = {**shown, "probabilities": probs}
            return True
        return False
