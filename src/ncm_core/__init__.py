"""ncm_core: tiling, training, prediction and explanation of CNN models on
large microscopy mosaics of battery electrodes.

The package imports nothing heavy at start-up (no torch, Qt or napari); the
task functions below are loaded on first use::

    from ncm_core import open_mosaic, train, predict_mosaic
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "NcmError": "errors",
    "Mosaic": "mosaic",
    "open_mosaic": "mosaic",
    "write_ome_zarr": "mosaic",
    "TileGrid": "tiling",
    "build_model": "models",
    "BundleConfig": "bundle",
    "ModelBundle": "bundle",
    "load_bundle": "bundle",
    "save_bundle": "bundle",
    "build_crops": "crops",
    "tiles_from_annotations": "annotations",
    "train": "train",
    "tune": "tune",
    "predict_mosaic": "predict",
    "open_prediction": "predict",
    "evaluate": "evaluate",
    "evaluate_prediction": "evaluate",
    "summarize_prediction": "evaluate",
    "run_demo": "demo",
    "detect_section": "sections",
    "extract_sections": "sections",
    "read_targets": "targets",
    "train_regressor": "regression",
    "cross_validate": "regression",
    "predict_section": "regression",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ncm_core' has no attribute {name!r}")
