"""The Tile probabilities dock: click a tile of a prediction, see its class-probability bars.

Works for any prediction layer in the viewer (from the Predict widget or
opened from disk): the click is mapped through the layer's own transform to
its grid cell, and the probabilities are read from the prediction on disk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari


class TileProbabilities(QWidget):
    """Class-probability bars of the prediction tile under the last click."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__()
        self._viewer = napari_viewer
        self.figure = Figure(figsize=(3.6, 3.4), dpi=90)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(280)
        self.ax = self.figure.add_subplot(1, 1, 1)
        self.info = QLabel("Click a tile of a prediction layer.")
        self.info.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.info)
        layout.addWidget(self.canvas)
        self.shown: dict[str, Any] | None = None  # what the plot shows: layer, cell, probabilities
        self._predictions: dict[str, Any] = {}
        napari_viewer.mouse_drag_callbacks.append(self._on_mouse)

    def _on_mouse(self, viewer: Any, event: Any) -> None:
        if event.type == "mouse_press":
            self.show_at(event.position)

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
            i, j = (int(v) for v in np.round(layer.world_to_data(tuple(world)[-2:])))
            try:
                pred = self._prediction(meta["ncm_prediction"])
            except Exception as exc:  # the prediction was moved or deleted
                self.info.setText(f"{layer.name}: {exc}")
                return False
            r = tile_report(pred, i, j)
            if r is None:
                continue
            if r.probabilities is None:
                self.info.setText(f"{layer.name}: {r.describe()}")
                self.ax.clear()
                self.canvas.draw_idle()
                self.shown = {"layer": layer.name, "cell": (i, j), "probabilities": None}
                return True
            probs = r.probabilities
            self.info.setText(r.describe())
            probability_bars(self.ax, probs, pred.class_names, pred.colors, title=layer.name)
            self.figure.tight_layout()
            self.canvas.draw_idle()
            self.shown = {"layer": layer.name, "cell": (i, j), "probabilities": probs}
            return True
        return False
