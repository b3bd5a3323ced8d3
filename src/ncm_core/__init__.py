"""ncm_core: tiling, training, prediction and explanation of CNN models on
large microscopy mosaics of battery electrodes.

The package imports nothing heavy at start-up (no torch, Qt or napari); the
task functions below are loaded on first use::

    from ncm_core import open_mosaic, train, predict_mosaic
"""

from __future__ import annotations

import importlib
from typing import Any

from ncm_core._version import __version__

_EXPORTS = {
    "NcmError": "errors",
    "Mosaic": "io.mosaic",
    "open_mosaic": "io.mosaic",
    "write_ome_zarr": "io.mosaic",
    "TileGrid": "data.tiling",
    "build_model": "models.factory",
    "BundleConfig": "models.bundle",
    "ModelBundle": "models.bundle",
    "load_bundle": "models.bundle",
    "save_bundle": "models.bundle",
    "build_crops": "data.crops",
    "tiles_from_annotations": "data.annotations",
    "train": "training.classify",
    "tune": "training.tune",
    "predict_mosaic": "inference.predict",
    "open_prediction": "inference.predict",
    "evaluate": "evaluation.evaluate",
    "evaluate_prediction": "evaluation.evaluate",
    "summarize_prediction": "evaluation.evaluate",
    "run_demo": "workflows.demo",
    "detect_section": "data.sections",
    "extract_sections": "data.sections",
    "read_targets": "data.targets",
    "train_regressor": "training.regression",
    "cross_validate": "training.regression",
    "predict_section": "training.regression",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ncm_core' has no attribute {name!r}")
