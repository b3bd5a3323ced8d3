"""Segmentation bundles: one interface for pixel classifiers (``forest``) and encoder-decoders (``unet``).

A segmentation bundle is a directory with ``config.json`` (``"format": "ncm-segmenter"``, the fields of
:class:`SegmenterConfig`) and the engine's weights in a safe format: ``forest.txt`` (LightGBM's text
model) for the forest, ``model.safetensors`` for the U-Net. Loading never unpickles.

Every engine implements :class:`Segmenter`: raw pixels are scaled by the bundle's fixed normalisation
(:meth:`SegmenterConfig.normalize`, measured once on the training images, so a window's result does not
depend on which block it came from) and :meth:`Segmenter.predict_proba` maps a batch of normalised
windows to class probabilities. ``halo`` says how many pixels of context on each side a pixel's result
depends on (the forest: its largest feature filter's reach; the U-Net: a practical receptive field), so
the streaming engine can cut windows whose stitched result equals the whole image's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.segmenter_config import (  # noqa: F401  (the bundle config, importable from here too)
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    Engine,
    SegmenterConfig,
    is_segmenter,
    read_segmenter_config,
    write_config,
)


class Segmenter(Protocol):
    """What the streaming engine, the live widget and evaluation need from any segmentation engine."""

    config: SegmenterConfig

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` normalised float32 windows -> ``(N, K, H, W)`` float32 class probabilities."""
        ...

    def save(self, path: str | Path) -> Path:
        """Write the bundle directory (config.json + safe weights)."""
        ...


def load_segmenter(path: str | Path, device: str = "cpu") -> Segmenter:
    """Load a segmentation bundle of any engine (nothing is unpickled)."""
    config = read_segmenter_config(path)
    if config.engine == "forest":
        from ncm_core.models.forest import ForestSegmenter

        return ForestSegmenter.load(path, config)
    if config.engine == "unet":
        from ncm_core.models.unet import UnetSegmenter

        return UnetSegmenter.load(path, config, device=device)
    raise NcmError(f"unknown segmentation engine {config.engine!r}", Path(path) / CONFIG)
