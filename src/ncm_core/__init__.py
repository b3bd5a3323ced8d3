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
    # io
    "Mosaic": "io.mosaic",
    "open_mosaic": "io.mosaic",
    "write_ome_zarr": "io.mosaic",
    # data
    "TileGrid": "data.tiling",
    "build_crops": "data.crops",
    "CropOptions": "data.crops",
    "tiles_from_annotations": "data.annotations",
    "detect_section": "data.sections",
    "extract_sections": "data.sections",
    "SectionOptions": "data.sections",
    "read_targets": "data.targets",
    # models
    "build_model": "models.factory",
    "BundleConfig": "models.bundle",
    "ModelBundle": "models.bundle",
    "load_bundle": "models.bundle",
    "save_bundle": "models.bundle",
    # inference
    "predict_mosaic": "inference.predict",
    "PredictOptions": "inference.options",
    "open_prediction": "inference.predict",
    "predict_section": "inference.sections",
    # explain
    "explain": "explain.methods",
    "explain_mosaic": "explain.heatmaps",
    "ExplainOptions": "explain.options",
    # evaluation
    "evaluate": "evaluation.evaluate",
    "evaluate_prediction": "evaluation.evaluate",
    "summarize_prediction": "evaluation.evaluate",
    # training
    "train": "training.classify",
    "TrainConfig": "training.config",
    "pretrain": "training.pretrain",
    "PretrainConfig": "training.config",
    "train_regressor": "training.regression",
    "RegressConfig": "training.config",
    "cross_validate": "training.cross_validation",
    "tune": "training.tune",
    "TuneConfig": "training.config",
    # workflows
    "explain_folder": "workflows.explanations",
    "run_demo": "workflows.demo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ncm_core' has no attribute {name!r}")
