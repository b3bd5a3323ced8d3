"""Options of mosaic prediction: the one home of their defaults (API, ``ncm predict``, the Predict widget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ncm_core.data.infobar import BandSpec, check_band
from ncm_core.errors import NcmError
from ncm_core.inference.engine import RUN_ONLY as ENGINE_RUN_ONLY
from ncm_core.models.ood import OOD_WARN_FRACTION  # one home; re-exported for the CLI and widgets

__all__ = ["PredictOptions", "SegmentOptions", "Backend", "MemoryFormat", "OOD_WARN_FRACTION", "RUN_ONLY"]

Backend = Literal["auto", "torch", "onnxruntime"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
Edge = Literal["pad", "drop"]
MissingChunks = Literal["report", "fill"]
Blend = Literal["cosine", "gaussian", "constant"]


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
    tta: bool = False  # average each tile's probabilities over flips and a quarter turn (4x the model's work)

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


@dataclass(frozen=True)
class SegmentOptions:
    """How :func:`~ncm_core.inference.segment.segment_mosaic` cuts, blends and runs a segmentation.

    Sizes are mosaic pixels. ``None`` means "from the bundle" (halo) or "chosen from the window" (chunk).
    """

    window: int = 1024  # window side fed to the segmenter (rounded up to the network's multiple; the halo is paid
    # in every window: at 1024 px and an 80 px halo, 71 % of a window's pixels are kept, at 512 px 47 %)
    halo: int | None = None  # context dropped at each side of a window (None: the bundle's; never less)
    overlap: int = 0  # pixels shared by neighbouring window cores, blended
    blend: Blend = "cosine"  # weight of overlapping cores: "cosine", "gaussian" or "constant"
    batch_size: int = 2  # windows per forward pass
    chunk: int | None = None  # output chunk and block side (None: whole strides near 1024 px)
    probabilities: bool = False  # also write the class probabilities, at a coarser scale
    probability_factor: int = 4  # mosaic pixels per probability pixel along each axis
    name: str = "segmentation"  # the label image: labels/<name>
    pixel_size: float | None = None  # micrometres per mosaic pixel, when the file does not say
    device: str = "auto"
    overwrite: bool = False
    resume: bool = True  # continue an interrupted run of the same segmentation from <out>.partial
    retries: int = 2  # re-reads of a block whose pixels cannot be read
    retry_delay: float = 0.5  # seconds, times the attempt number
    strict: bool = False  # NaN/inf pixels or an unreadable or missing chunk stop the run (else: windows left out)
    allow_incomplete: bool = False  # finish with unreadable regions marked 0, not predicted (else: RunIncomplete)
    missing_chunks: MissingChunks = "report"  # absent zarr chunks: "report" (not predicted), "fill" (fill value)

    def __post_init__(self) -> None:
        if self.window < 1 or self.batch_size < 1:
            raise NcmError(f"window and batch size must be positive, got {self.window} / {self.batch_size}")
        if (self.halo is not None and self.halo < 0) or self.overlap < 0:
            raise NcmError(f"halo and overlap must not be negative, got {self.halo} / {self.overlap}")
        if self.blend not in ("cosine", "gaussian", "constant"):
            raise NcmError(f"blend must be 'cosine', 'gaussian' or 'constant', got {self.blend!r}")
        if self.chunk is not None and self.chunk < 16:
            raise NcmError(f"chunk must be at least 16 px, got {self.chunk}")
        if self.probability_factor < 1:
            raise NcmError(f"probability factor must be positive, got {self.probability_factor}")
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise NcmError(f"the label image name must be a plain name (no '/'), got {self.name!r}")
        if self.retries < 0:
            raise NcmError(f"retries must be >= 0, got {self.retries}")
        if self.missing_chunks not in ("report", "fill"):
            raise NcmError(f"missing_chunks must be 'report' or 'fill', got {self.missing_chunks!r}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            raise NcmError(f"pixel size must be positive, got {self.pixel_size}")
