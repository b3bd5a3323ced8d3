"""One tile of a mosaic prediction, read back: its class probabilities, pixels and out-of-distribution score.

The napari Probabilities dock shows this for the tile under the mouse; :func:`tile_report` is the same
from Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ncm_core.inference.predict import Prediction, open_prediction

__all__ = ["TileReport", "tile_report"]


@dataclass
class TileReport:
    """Grid cell ``cell`` of a prediction: pixels ``rect`` (y0, y1, x0, x1) of the mosaic, its class
    probabilities (None where the tile was masked, not predicted) and its OOD score (score / threshold:
    above 1 the tile is unlike the training tiles; None without a detector)."""

    cell: tuple[int, int]
    rect: tuple[int, int, int, int]
    class_names: list[str]
    probabilities: np.ndarray | None
    ood: float | None = None

    @property
    def predicted(self) -> str | None:
        """The most probable class (None if not predicted)."""
        return None if self.probabilities is None else self.class_names[int(self.probabilities.argmax())]

    @property
    def unlike_training(self) -> bool:
        return self.ood is not None and self.ood > 1

    def describe(self) -> str:
        """One line: where the tile is, its class and probability, and its OOD score."""
        i, j = self.cell
        y0, y1, x0, x1 = self.rect
        where = f"tile ({i}, {j}), pixels y {y0}:{y1}, x {x0}:{x1}"
        if self.probabilities is None:
            return f"{where} was not predicted (masked)"
        text = f"{where}: {self.predicted} ({self.probabilities.max():.2f})"
        if self.ood is not None:
            text += f"; out-of-distribution score {self.ood:.2f}" + (
                " - unlike the training tiles!" if self.unlike_training else ""
            )
        return text


def tile_report(prediction: str | Path | Prediction, i: int, j: int) -> TileReport | None:
    """The report of grid cell (row ``i``, column ``j``) of a prediction; None outside the grid."""
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    rows, cols = pred.grid.shape
    if not (0 <= i < rows and 0 <= j < cols):
        return None
    probs = np.asarray(pred.probabilities[:, i, j])
    ood = None if pred.ood is None else float(np.asarray(pred.ood[i, j]))
    return TileReport(
        (i, j),
        tuple(int(v) for v in pred.grid.cell_rect(i, j)),
        list(pred.class_names),
        None if np.isnan(probs).any() else probs,
        ood,
    )
