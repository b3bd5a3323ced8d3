"""Options of mosaic prediction: the one home of their defaults (API, ``ncm predict``, the Predict widget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ncm_core.data.infobar import BandSpec, check_band
from ncm_core.errors import NcmError
from ncm_core.inference.engine import RUN_ONLY as ENGINE_RUN_ONLY
from ncm_core.models.ood import OOD_WARN_FRACTION  # one home; re-exported for the CLI and widgets

__all__ = ["PredictOptions", "Backend", "MemoryFormat", "OOD_WARN_FRACTION", "RUN_ONLY"]

Backend = Literal["auto", "torch", "onnxruntime"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
Edge = Literal["pad", "drop"]
MissingChunks = Literal["report", "fill"]


#: options that change how a run goes, not what it writes: left out of the run fingerprint
#: (memory_format and backend are measured once and kept by a resumed run; the mask enters as tile cells)
RUN_ONLY = (*ENGINE_RUN_ONLY, "memory_format", "backend", "mask")


@dataclass(frozen=True)
class PredictOptions:
    """How :func:`~ncm_core.inference.predict.predict_mosaic` tiles, masks and runs a prediction.

    Sizes are mosaic pixels. ``None`` means "from the bundle" (tile) or "the tile" (stride).
    """

    tile: int | None = None  # tile side (None: the bundle's, rescaled to the mosaic's pixel size)
    stride: int | None = None  # tile stride (None: the tile)
    offset: tuple[int, int] = (0, 0)  # grid origin
    edge: Edge = "pad"  # "pad": tiles past the border are filled by reflection; "drop": left out
    batch_size: int = 64  # tiles per forward pass
    # band of rows to skip, e.g. (-32, None); "detect": an information bar on the mosaic's edge, where one
    # is found (a single SEM frame); "auto": one must be found; "none" (ncm_core.data.infobar)
    exclude_rows: BandSpec = "detect"
    mask: Any = None  # pixel mask (True = predict; full size or downsampled)
    foreground: bool = False  # skip empty (flat) background tiles
    min_fraction: float = 0.5  # share of a tile that must be kept by the masks
    max_block_pixels: int = 2048 * 2048  # pixels per block (memory)
    device: str = "auto"
    overwrite: bool = False
    pixel_size: float | None = None  # micrometres per mosaic pixel, when the file does not say (or says wrongly)
    resume: bool = True  # continue an interrupted run of the same prediction from <out>.partial
    retries: int = 2  # re-reads of a block whose pixels cannot be read
    retry_delay: float = 0.5  # seconds, times the attempt number
    memory_format: MemoryFormat = "auto"
    backend: Backend = "auto"
    dense: bool = False  # overlapping tiles: one trunk pass per block (ncm_core.inference.dense)
    dense_recheck: float = 0.3  # dense mode: evaluate tiles exactly whose top-2 margin is below this
    ood: bool = True  # out-of-distribution scores, when the bundle has a detector
    strict: bool = False  # NaN/inf pixels or an unreadable or missing chunk stop the run (else: tiles left out)
    allow_incomplete: bool = False  # finish with unreadable regions marked as not predicted (else: RunIncomplete)
    missing_chunks: MissingChunks = "report"  # absent zarr chunks: "report" (not predicted), "fill" (fill value)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise NcmError(f"batch size must be positive, got {self.batch_size}")
        if self.backend not in ("auto", "torch", "onnxruntime"):
            raise NcmError(f"backend must be one of auto, torch, onnxruntime, got {self.backend!r}")
        if self.memory_format not in ("auto", "channels_last", "contiguous"):
            raise NcmError(f"memory format must be 'auto', 'channels_last' or 'contiguous', got {self.memory_format!r}")
        if self.tile is not None and self.tile < 1:
            raise NcmError(f"tile size must be a positive number of pixels, got {self.tile}")
        if self.retries < 0 or self.max_block_pixels < 1:
            raise NcmError(
                f"retries must be >= 0 and max_block_pixels positive, got {self.retries} / {self.max_block_pixels}"
            )
        if self.missing_chunks not in ("report", "fill"):
            raise NcmError(f"missing_chunks must be 'report' or 'fill', got {self.missing_chunks!r}")
        if self.dense_recheck < 0:
            raise NcmError(f"dense_recheck must not be negative, got {self.dense_recheck}")
        object.__setattr__(self, "exclude_rows", check_band(self.exclude_rows))
        if not 0 <= self.min_fraction <= 1:
            raise NcmError(f"min_fraction must be between 0 and 1, got {self.min_fraction}")
        object.__setattr__(self, "offset", tuple(int(v) for v in self.offset))

    def attrs(self) -> dict[str, Any]:
        """The options as JSON-ready output attributes (the mask as ``"given"`` or None)."""
        from ncm_core.inference.engine import options_dict

        d = options_dict(self)
        d["mask"] = None if self.mask is None else "given"
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
