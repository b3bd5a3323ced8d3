"""The configuration of a segmentation bundle (``config.json``), read and written without importing any engine.

:mod:`ncm_core.models.segmenter` (the :class:`~ncm_core.models.segmenter.Segmenter` interface and
``load_segmenter``) re-exports these names; the engines (``forest``, ``unet``) import them from here, so that
the loader can import the engines without an import cycle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ncm_core.errors import NcmError

FORMAT = "ncm-segmenter"
FORMAT_VERSION = 1
CONFIG = "config.json"
Engine = Literal["forest", "unet"]
#: how a segmenter scales raw pixels: "training": by the fixed range measured on its training images;
#: "image": each image (mosaic) by its own robust range, measured once from a sample of it
NORMALIZATIONS: tuple[str, ...] = ("training", "image")


@dataclass
class SegmenterConfig:
    """Everything needed to rebuild a segmenter and feed it the right input."""

    engine: Engine
    classes: list[str]  # class k is label value k + 1 in label images and outputs (0 = unlabelled / not predicted)
    colors: list[str] = field(default_factory=list)  # "#rrggbb" per class
    channels: int = 1
    norm_low: float = 0.0  # raw value mapped to 0 (a low percentile of the training images)
    norm_high: float = 1.0  # raw value mapped to 1
    normalization: str = "training"  # one of NORMALIZATIONS ("image": :meth:`input_range` of each image)
    halo: int = 16  # pixels of context each side that a pixel's class depends on
    min_size: int = 1  # smallest window side the engine accepts
    multiple: int = 1  # window sides must be a multiple of this (U-Net: 2 ** depth)
    pixel_size: float | None = None  # micrometres per pixel of the training images
    engine_config: dict[str, Any] = field(default_factory=dict)  # the engine's own settings (features, encoder)
    training: dict[str, Any] = field(default_factory=dict)  # what training measured (mIoU, epochs, ...)
    versions: dict[str, str] = field(default_factory=dict)

    def normalize(self, raw: np.ndarray, norm: tuple[float, float] | None = None) -> np.ndarray:
        """Raw pixels (any dtype) -> float32 scaled by ``norm`` = ``(low, high)`` (:meth:`input_range` of the
        image they come from), or by default by the bundle's fixed low/high values."""
        low, high = (self.norm_low, self.norm_high) if norm is None else (float(v) for v in norm)
        span = max(high - low, 1e-12)
        return ((np.asarray(raw, np.float32) - np.float32(low)) / np.float32(span)).astype(np.float32)

    def normalize_image(self, raw: np.ndarray) -> np.ndarray:
        """A whole raw image ``(C, H, W)`` scaled as its windows are: :meth:`normalize` by its :meth:`input_range`."""
        return self.normalize(raw, self.input_range(raw))

    def input_range(self, image: Any) -> tuple[float, float] | None:
        """What :meth:`normalize` scales ``image`` ``(C, H, W)`` (numpy, zarr or dask: only a sample is read)
        and every window of it by: None (the bundle's fixed range), or with ``normalization="image"`` the
        image's own robust range (:func:`ncm_core.data.label_images.image_range`)."""
        if self.normalization != "image":
            return None
        from ncm_core.data.label_images import image_range

        return image_range(image)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = CONFIG) -> SegmenterConfig:
        if d.get("format") != FORMAT:
            raise NcmError(f"not a napari-ncm segmentation bundle (format is {d.get('format')!r})", where)
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise NcmError("segmentation bundle written by a newer napari-ncm: upgrade to read it", where)
        known = set(cls.__dataclass_fields__)
        try:
            cfg = cls(**{k: v for k, v in d.items() if k in known})
        except TypeError as e:
            raise NcmError(f"segmentation bundle config is incomplete: {e}", where) from None
        if cfg.normalization not in NORMALIZATIONS:
            raise NcmError(f"unknown normalization {cfg.normalization!r}; upgrade napari-ncm to read it", where)
        return cfg


def is_segmenter(path: str | Path) -> bool:
    """Whether ``path`` is a segmentation bundle directory (reads only its config.json)."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_segmenter_config(path: str | Path) -> SegmenterConfig:
    """The :class:`SegmenterConfig` of a bundle directory (one-line :class:`NcmError` when unreadable)."""
    cfg = Path(path) / CONFIG
    if not cfg.is_file():
        raise NcmError("not a segmentation bundle: config.json is missing", path)
    try:
        d = json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise NcmError(f"unreadable config.json: {e}", cfg) from None
    return SegmenterConfig.from_dict(d, str(cfg))


def write_config(path: str | Path, config: SegmenterConfig) -> Path:
    """Write ``config.json`` into a bundle directory (created if needed)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(json.dumps(config.to_dict(), indent=2))
    return path
