"""All figures in one namespace (the older import path; the figures live in modules by concern).

:mod:`~ncm_core.viz.prediction` (mosaic overviews, probabilities, confusion matrices),
:mod:`~ncm_core.viz.training` (training curves), :mod:`~ncm_core.viz.rate_capability` (regression
scatter and rate-capability curves) and :mod:`~ncm_core.viz.explanations` (explanation maps and checks).
"""

from __future__ import annotations

from ncm_core.viz._common import agg_figure as _figure
from ncm_core.viz._common import show_gray as _show_gray
from ncm_core.viz.explanations import (
    deletion_insertion_figure,
    draw_tile_explanation,
    explanation_figure,
    heatmap_overlay_figure,
    heatmap_overlays,
    heatmap_style,
    randomisation_figure,
)
from ncm_core.viz.prediction import (
    confusion_matrix_figure,
    draw_confusion_matrix,
    grid_extent,
    overview_image,
    prediction_overview,
    probability_bars,
)
from ncm_core.viz.rate_capability import (
    draw_rate_capability,
    rate_capability_figure,
    rate_capability_series,
    scatter_figure,
)
from ncm_core.viz.training import draw_training_curves, training_curves_figure

__all__ = [
    "_figure",
    "_show_gray",
    "confusion_matrix_figure",
    "deletion_insertion_figure",
    "draw_confusion_matrix",
    "draw_rate_capability",
    "draw_tile_explanation",
    "draw_training_curves",
    "explanation_figure",
    "grid_extent",
    "heatmap_overlay_figure",
    "heatmap_overlays",
    "heatmap_style",
    "overview_image",
    "prediction_overview",
    "probability_bars",
    "randomisation_figure",
    "rate_capability_figure",
    "rate_capability_series",
    "scatter_figure",
    "training_curves_figure",
]
