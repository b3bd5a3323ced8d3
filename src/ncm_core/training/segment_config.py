"""Options of segmenter training (:func:`ncm_core.training.segment.train_segmenter`): the one home of their
defaults, for both engines (``forest``: a LightGBM pixel classifier on multiscale features; ``unet``: an
encoder-decoder network)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ncm_core.errors import NcmError
from ncm_core.models.pixel_features import GROUPS as FEATURE_GROUPS
from ncm_core.models.segmenter_config import NORMALIZATIONS

SegmentEngine = Literal["forest", "unet"]
ENGINES: tuple[str, ...] = ("forest", "unet")


@dataclass(frozen=True)
class SegmentConfig:
    """Training a segmenter from images and label images (sparse strokes or dense).

    ``classes`` names class 1, 2, ... of the label images (None: ``classes.txt`` in DATA); ``colors`` one
    ``#rrggbb`` per class (None: :func:`ncm_core.io.colors.class_colors` of the names). ``val_fraction``
    is the share of images held out for validation when there are 2 or more, else the share of strokes
    (connected painted pieces) held out; 0 validates on nothing. ``normalization`` "training" scales every
    image by the fixed range of the training images; "image" scales each image (training image or mosaic) by
    its own robust range, measured once from a sample of it: for acquisitions whose brightness and contrast
    differ from image to image.

    Forest: Gaussian ``sigmas`` (px) of the feature stack and its ``features`` groups; ``trees`` boosting
    rounds of ``leaves`` leaves at ``learning_rate``; at most ``max_per_class`` labelled pixels per class are
    sampled; ``threads`` LightGBM threads. U-Net: ``encoder`` (a timm encoder name), ``epochs``,
    ``batch_size``, ``patch_size`` (px), ``lr``, ``pretrained`` (a local weights file or backbone folder),
    ``patience`` (None or 0: no early stopping), ``amp``, ``resume``, ``device``.
    """

    engine: SegmentEngine = "forest"
    classes: tuple[str, ...] | None = None
    colors: tuple[str, ...] | None = None
    pixel_size: float | None = None
    normalization: str = "training"  # "image": every image scaled by its own range (brightness varies between them)
    val_fraction: float = 0.25
    seed: int = 0
    overwrite: bool = False
    # forest
    sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    features: tuple[str, ...] = FEATURE_GROUPS
    trees: int = 100
    leaves: int = 31
    learning_rate: float = 0.1
    max_per_class: int = 20000
    threads: int = 2
    # unet
    encoder: str = "resnet10t"
    epochs: int = 40
    batch_size: int = 8
    patch_size: int = 256
    lr: float = 1e-3
    pretrained: str | None = None
    patience: int | None = 10
    amp: str = "auto"
    resume: bool = True
    device: str = "auto"

    #: what an explicit None keyword stands for (ncm_core.options.merge_options): no early stopping
    NONE_MEANS: ClassVar[dict[str, Any]] = {"patience": 0}

    def validate(self) -> SegmentConfig:
        if self.engine not in ENGINES:
            raise NcmError(f"engine (--engine) must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.normalization not in NORMALIZATIONS:
            raise NcmError(
                f"normalization (--normalization) must be one of {', '.join(NORMALIZATIONS)}, "
                f"got {self.normalization!r}"
            )
        if not 0 <= self.val_fraction < 1:
            raise NcmError(f"validation fraction must be at least 0 and below 1, got {self.val_fraction}")
        if self.classes is not None:
            names = [str(c).strip() for c in self.classes]
            if len(names) < 2 or not all(names) or len(set(names)) != len(names):
                raise NcmError(f"classes (--classes) must be 2 or more distinct names, got {','.join(names)!r}")
        if self.colors is not None:
            bad = [c for c in self.colors if not re.fullmatch(r"#[0-9a-fA-F]{6}", str(c))]
            if bad:
                raise NcmError(f"colours must be #rrggbb, got {bad[0]!r}")
            if self.classes is not None and len(self.colors) != len(self.classes):
                raise NcmError(f"{len(self.colors)} colours for {len(self.classes)} classes")
        if self.pixel_size is not None and not (math.isfinite(self.pixel_size) and self.pixel_size > 0):
            raise NcmError(f"pixel size must be a finite number above 0, got {self.pixel_size}")
        if not self.sigmas or not all(math.isfinite(s) and 0 < s <= 64 for s in self.sigmas):
            raise NcmError(f"feature sigmas (--sigmas) must be numbers above 0 and at most 64, got {self.sigmas}")
        unknown = [f for f in self.features if f not in FEATURE_GROUPS]
        if unknown or not self.features:
            raise NcmError(f"feature groups must be some of {', '.join(FEATURE_GROUPS)}, got {unknown or 'none'}")
        if self.trees < 1 or self.leaves < 2 or self.max_per_class < 10 or self.threads < 1:
            raise NcmError(
                "trees and threads must be at least 1, leaves at least 2, pixels per class at least 10 "
                f"(got {self.trees}, {self.threads}, {self.leaves}, {self.max_per_class})"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise NcmError(f"learning rate must be a finite number above 0, got {self.learning_rate}")
        if self.epochs < 1 or self.batch_size < 1 or self.patch_size < 32:
            raise NcmError(
                f"epochs and batch size must be at least 1 and the patch size 32 px "
                f"(got {self.epochs}, {self.batch_size}, {self.patch_size})"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise NcmError(f"learning rate (--lr) must be a finite number above 0, got {self.lr}")
        return self

    def forest_settings(self) -> dict[str, Any]:
        """The forest's part of the options, as a bundle records it (``engine_config``)."""
        return {
            "sigmas": [float(s) for s in self.sigmas],
            "features": list(self.features),
            "trees": self.trees,
            "leaves": self.leaves,
            "learning_rate": self.learning_rate,
            "max_per_class": self.max_per_class,
            "threads": self.threads,
        }
