"""Options of explanations: the one home of their defaults (mosaic heatmaps and folders of tiles).

:func:`ncm_core.explain.heatmaps.explain_mosaic` takes an :class:`ExplainOptions` (or its field names as
keywords); the ``ncm explain`` parser and the napari widgets read their defaults from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ncm_core.errors import NcmError

__all__ = ["ExplainOptions", "Method", "DEFAULT_METHOD"]

Method = Literal[
    "gradcam", "gradcam++", "scorecam", "layercam", "gradram", "guided-backprop", "guided-gradcam", "occlusion"
]
DEFAULT_METHOD: Method = "gradcam"


@dataclass(frozen=True)
class ExplainOptions:
    """How a mosaic (or a folder of tiles) is explained. ``None`` means "chosen from the model and method"."""

    method: str = DEFAULT_METHOD  # a Method or an alias (check_method normalises it)
    target: Any = None  # "predicted" (classifiers), "all" (regression), "top-K", a class/target, or a list
    layer: str | None = None  # CAM methods: the last layer with a spatial output
    overlap: int | None = None  # mosaic pixels shared by neighbouring tiles (None: a quarter tile)
    factor: int | None = None  # mosaic pixels per heatmap pixel (None: 4; 1 for guided backpropagation)
    batch_size: int = 16  # tiles per forward pass
    window: tuple[int, int] = (7, 7)  # occlusion window, model-input pixels
    stride: tuple[int, int] | None = None  # occlusion stride (None: the window)
    fill: Any = "mean"  # occlusion fill value ("mean" = the dataset mean)
    block_pixels: int = 2048  # side of an output block, mosaic pixels (memory vs. border overhead)
    device: str = "auto"
    overwrite: bool = False
    resume: bool = True  # continue an interrupted run of the same heatmap from <out>.partial
    retries: int = 2  # re-reads of a block whose pixels cannot be read
    retry_delay: float = 0.5  # seconds, times the attempt number
    check_images: int = 8  # folders of tiles: tiles used by the sanity checks
    strict: bool = False  # NaN/inf pixels or an unreadable or missing chunk stop the run (else: windows left out)
    allow_incomplete: bool = False  # finish with unreadable regions left as NaN (else: RunIncomplete)
    missing_chunks: str = "report"  # absent zarr chunks: "report" (not computed) or "fill" (the fill value)

    def __post_init__(self) -> None:
        from ncm_core.explain.methods import check_method

        object.__setattr__(self, "method", check_method(self.method))
        object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        if self.stride is not None:
            object.__setattr__(self, "stride", tuple(int(v) for v in self.stride))
        if self.batch_size < 1:
            raise NcmError(f"batch size must be positive, got {self.batch_size}")
        if self.factor is not None and self.factor < 1:
            raise NcmError(f"factor must be positive, got {self.factor}")
        if self.overlap is not None and self.overlap < 0:
            raise NcmError(f"overlap must not be negative, got {self.overlap}")
        if min(self.window) < 1 or (self.stride is not None and min(self.stride) < 1):
            raise NcmError(f"occlusion window and stride must be positive, got {self.window} / {self.stride}")
        if self.missing_chunks not in ("report", "fill"):
            raise NcmError(f"missing_chunks must be 'report' or 'fill', got {self.missing_chunks!r}")
        if self.retries < 0 or self.block_pixels < 1:
            raise NcmError(f"retries must be >= 0 and block_pixels positive, got {self.retries} / {self.block_pixels}")
