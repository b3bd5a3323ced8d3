"""Explanations on demand (the napari Explain dock): what a bundle can be asked, and the tile under a point.

:func:`target_choices` lists the targets a bundle's explanations can follow, read from its
``config.json`` alone (no weights loaded). :func:`explain_tile_at` explains the tile of a mosaic that
holds a pixel: its scores and the maps of its two most probable classes (or first two targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.explain.methods import Explanation
from ncm_core.explain.options import ExplainOptions
from ncm_core.models.bundle import CONFIG, BundleConfig, ModelBundle

__all__ = ["TileExplanation", "explain_tile_at", "target_choices", "tile_targets"]


def target_choices(bundle: str | Path | ModelBundle | BundleConfig) -> list[str]:
    """Targets to offer for a bundle, the default first: ``predicted``, ``top-2``, ``all`` and each class for
    a classifier; ``all`` and each target for a regression. A bundle folder is read without its weights."""
    from ncm_core.io.mosaic import read_json

    if isinstance(bundle, ModelBundle):
        cfg = bundle.config
    elif isinstance(bundle, BundleConfig):
        cfg = bundle
    else:
        path = Path(bundle) / CONFIG
        cfg = BundleConfig.from_dict(read_json(path, "bundle config"), str(path))
    if cfg.task == "classify":
        return ["predicted", "top-2", "all", *cfg.class_names]
    return ["all", *cfg.target_names]


def tile_targets(config: BundleConfig) -> Any:
    """What a clicked tile shows: its two most probable classes, or the first two regression targets."""
    if config.task == "regress":
        return [0, 1] if config.num_outputs > 1 else [0]
    return "top-2"


@dataclass
class TileExplanation:
    """One tile of a mosaic explained: where it is, its pixels and its explanation."""

    y0: int
    x0: int
    size: int  # tile side, mosaic pixels
    tile: np.ndarray
    explanation: Explanation

    def describe(self) -> str:
        """One line: the tile's position and its explained outputs with their scores."""
        ex = self.explanation
        top = ", ".join(f"{n} {ex.scores[0, t]:.2f}" for n, t in zip(ex.names[0], ex.targets[0]))
        return f"tile y {self.y0}, x {self.x0}: {top}"


def explain_tile_at(
    bundle: ModelBundle,
    mosaic: Any,
    y: float,
    x: float,
    method: str = ExplainOptions.method,
    *,
    target: Any = None,
) -> TileExplanation | None:
    """Explain the bundle-sized tile of ``mosaic`` holding pixel (y, x) (None outside the image) with
    ``method``; ``target`` defaults to :func:`tile_targets`."""
    from ncm_core.explain.heatmaps import tile_at
    from ncm_core.explain.methods import explain
    from ncm_core.io.mosaic import open_mosaic

    mosaic = open_mosaic(mosaic)
    where = tile_at(bundle, mosaic, y, x)
    if where is None:
        return None
    y0, x0, size = where
    tile = np.asarray(mosaic.data[y0 : y0 + size, x0 : x0 + size].compute())
    t = tile_targets(bundle.config) if target is None else target
    return TileExplanation(y0, x0, size, tile, explain(bundle, tile[None], method, t))
