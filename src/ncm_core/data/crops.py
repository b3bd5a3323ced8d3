"""``ncm crops``: random crops of source frames into a tile set, frames held out before cropping.

The published SEM workflow trains on random crops of frames. Here the frames
are first split into train/validation/test (stratified by class, whole frames
only), and only then cropped, so no frame feeds two splits. Crops avoid a band
of rows (the SEM information bar) and, optionally, masked pixels. The same
seed gives the same crops; ``manifest.csv`` records every crop's frame and
rectangle.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ncm_core.batch import Batch, BatchFailed
from ncm_core.data.infobar import BandSpec, band_text, check_band, resolve_band, spec_text, widest
from ncm_core.errors import NcmError
from ncm_core.options import merge_options
from ncm_core.outputs import check_output
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

if TYPE_CHECKING:
    from ncm_core.data.tilesets import TileSet


@dataclass(frozen=True)
class CropOptions:
    """Options of :func:`build_crops`.

    ``size`` crop side in px; ``per_frame`` crops per frame; ``val_fraction``, ``test_fraction`` shares
    of each class's frames held out (whole frames, before cropping); ``exclude_rows`` a band of rows no
    crop may touch, e.g. ``(-32, None)`` for an SEM info bar, ``"detect"`` (default) the information bar
    of each frame where one is found, ``"auto"`` the same but a frame without one fails, ``"none"`` no
    band (:mod:`ncm_core.data.infobar`); ``masks`` an optional folder mirroring the
    data, ``masks/<class>/<frame stem>.png``, non-zero where crops must not go; ``max_masked`` the
    largest share of masked pixels a crop may contain. ``context_um`` (micrometres) replaces ``size``:
    crops ``context_um / pixel_size`` px wide, the pixel size given or from the frames' metadata
    (training resizes them to the model input).
    """

    size: int = 224
    per_frame: int = 32
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    exclude_rows: BandSpec = "detect"
    masks: str | Path | None = None
    max_masked: float = 0.0
    seed: int = 0
    overwrite: bool = False
    strict: bool = False  # stop at the first frame that fails (default: skip it, record why in failures.csv)
    context_um: float | None = None
    pixel_size: float | None = None

    def validate(self) -> CropOptions:
        for name, v in (("context (--context-um, micrometres)", self.context_um), ("pixel size", self.pixel_size)):
            if v is not None and not (np.isfinite(v) and v > 0):
                raise NcmError(f"{name} must be a finite number above 0, got {v!r}")
        if self.size < 8:
            raise NcmError(f"crop size must be at least 8 px, got {self.size}")
        if self.per_frame < 1:
            raise NcmError(f"crops per frame must be at least 1, got {self.per_frame}")
        if self.seed < 0:
            raise NcmError(f"seed must be a non-negative whole number, got {self.seed}")
        from ncm_core.data.tilesets import check_fractions

        check_fractions(self.val_fraction, self.test_fraction)
        check_band(self.exclude_rows)
        if not 0 <= self.max_masked <= 1:
            raise NcmError(f"the largest masked share of a crop must be between 0 and 1, got {self.max_masked}")
        return self


def _valid_mask(shape: tuple[int, int], exclude_rows, mask: np.ndarray | None) -> np.ndarray:
    """Pixels a crop may cover: everything except the band and masked pixels."""
    ok = np.ones(shape, bool)
    if exclude_rows is not None:
        a, b, _ = slice(*exclude_rows).indices(shape[0])
        ok[a:b] = False
    if mask is not None:
        if mask.shape[:2] != shape:
            raise NcmError(f"mask is {mask.shape[0]}x{mask.shape[1]} px but its frame is {shape[0]}x{shape[1]} px")
        ok &= ~(mask.reshape(shape + (-1,)).any(-1) if mask.ndim == 3 else mask.astype(bool))
    return ok


def crop_positions(
    valid: np.ndarray, size: int, n: int, rng: np.random.Generator, max_invalid: float = 0.0
) -> np.ndarray:
    """``n`` random top-left corners of ``size`` px crops whose share of invalid pixels is at most ``max_invalid``.

    Uses a summed-area table, so every allowed position is equally likely.
    """
    h, w = valid.shape
    if h < size or w < size:
        raise NcmError(f"crop size {size} px is larger than the frame ({h}x{w} px)")
    bad = np.pad((~valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    s = size
    counts = bad[s:, s:] - bad[:-s, s:] - bad[s:, :-s] + bad[:-s, :-s]  # invalid pixels per crop position
    ys, xs = np.nonzero(counts <= max_invalid * s * s)
    if len(ys) == 0:
        raise NcmError(f"no {size} px crop fits in the frame outside the excluded band and mask")
    pick = rng.integers(0, len(ys), n)
    return np.stack([ys[pick], xs[pick]], 1)


def build_crops(
    data: str | Path,
    out: str | Path,
    options: CropOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> TileSet:
    """Cut ``per_frame`` random ``size`` px crops from every frame of ``data/<class>/*`` into a tile set.

    Settings: ``options`` or keyword ``overrides`` of :class:`CropOptions` fields (``size=96``, ...).
    A frame that fails (unreadable, too small for a crop, unlike the others in channels or bit depth) is
    skipped before the frames are split, so the set equals one built without it; it is listed with its
    reason in ``failures.csv``, under ``params.failures`` in ``manifest.json`` and in the returned set's
    ``failures`` (:mod:`ncm_core.batch`). ``strict=True`` stops at the first failure instead.
    """
    from ncm_core.data.datasets import load_image, scan_class_folders  # reads images with dask: loaded on use
    from ncm_core.data.tilesets import TileSetWriter, split_groups

    o = merge_options(CropOptions, options, overrides).validate()
    check_output(out, o.overwrite, (data, o.masks))  # before any frame is read
    size, per_frame, val_fraction, test_fraction, seed = o.size, o.per_frame, o.val_fraction, o.test_fraction, o.seed
    ds = scan_class_folders(data)
    if len(ds.class_names) < 2:
        raise NcmError(f"found only one class ({ds.class_names[0]!r}); a classifier needs at least two", ds.root)
    if o.context_um is not None:
        o = _context_size(o, ds.files[0])
        size = o.size
    mask_root = None if o.masks is None else Path(o.masks).expanduser()
    if mask_root is not None and not mask_root.is_dir():
        raise NcmError("mask folder not found", mask_root)
    batch = Batch(len(ds.files), strict=o.strict, what="frames")
    # first pass: where each frame's crops go (reads every frame once); frames that fail are left out
    plan: dict[str, tuple[Path, int, np.ndarray]] = {}
    bands: dict[str, tuple[int | None, int | None] | None] = {}
    shapes: set[tuple[int, int]] = set()
    kinds: set[tuple[int, int, str]] = set()
    for k, (f, y) in enumerate(zip(ds.files, ds.labels)):
        check_cancel(cancel)
        with batch.attempt(f):
            rel = str(f.relative_to(ds.root))
            img, pos, band = _frame_crops(f, rel, ds.class_names[y], mask_root, o)
            kind = (img.ndim, img.shape[2] if img.ndim == 3 else 1, img.dtype.str)
            if kinds and kind not in kinds:
                raise NcmError(
                    f"the frame differs in channels or bit depth from the earlier frames ({kind} vs "
                    f"{sorted(kinds)[0]}); convert them to one kind",
                    f,
                )
            kinds.add(kind)
            shapes.add(img.shape[:2])
            plan[rel] = (f, y, pos)
            bands[rel] = band
        report(progress, k + 1, 2 * len(ds.files), f.name)
    batch.check()
    groups = {rel: y for rel, (_, y, _) in plan.items()}
    empty = [n for c, n in enumerate(ds.class_names) if c not in groups.values()]
    try:
        if empty:
            raise NcmError(f"no frame of class {empty[0]!r} could be used", ds.root)
        splits = split_groups(
            groups, ds.class_names, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, where=ds.root
        )
    except NcmError as exc:  # too few frames left in a class: say why they are missing
        if not batch.failures:
            raise
        raise BatchFailed(
            f"{exc}; {len(batch.failures)} of {batch.total} frames failed, the first: {batch.failures[0].line()}",
            batch.failures,
        ) from None
    writer = TileSetWriter(out, ds.class_names, size, overwrite=o.overwrite)
    try:
        for k, (rel, (f, y, pos)) in enumerate(plan.items()):  # second pass: write the crops
            check_cancel(cancel)
            img = load_image(f)
            for j, (y0, x0) in enumerate(pos):
                c = img[y0 : y0 + size, x0 : x0 + size]
                writer.add(
                    c, splits[rel], ds.class_names[y], rel, rel, (y0, x0, y0 + size, x0 + size), f"{f.stem}_{j:04d}"
                )
            report(progress, len(ds.files) + len(batch.failures) + k + 1, 2 * len(ds.files), f.name)
        if len(shapes) > 1:
            warnings.warn(
                f"{ds.root}: frames have {len(shapes)} different sizes; crops are all {size} px, "
                "but check that the frames share one pixel size",
                stacklevel=2,
            )
        params = {
            "kind": "crops",
            "data": str(ds.root),
            "size": size,
            "per_frame": per_frame,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "exclude_rows": _band_param(o.exclude_rows, [bands[r] for r in plan]),
            "exclude_rows_setting": spec_text(o.exclude_rows),
            "info_bars": {
                r: band_text(bands[r]) for r in plan if bands[r] is not None and isinstance(o.exclude_rows, str)
            },
            "masks": None if mask_root is None else str(mask_root),
            "max_masked": o.max_masked,
            "context_um": o.context_um,
            "pixel_size": o.pixel_size,
        }
        if batch.failures:
            params["failures"] = batch.records()
            batch.write(writer.tmp)
        ts = writer.finish(params, splits)
    except BaseException:
        writer.abort()
        raise
    ts.failures = tuple(batch.failures)
    batch.warn(ts.root)
    return ts


def _context_size(o: CropOptions, first: Path) -> CropOptions:
    """``o`` with ``size`` covering ``context_um`` (and the pixel size used), the pixel size given or read from
    the metadata of the first frame."""
    from dataclasses import replace

    from ncm_core.io.mosaic import open_mosaic

    ps = o.pixel_size or open_mosaic(first).pixel_size
    if not ps:
        raise NcmError(
            "--context-um needs the pixel size: the frames' metadata does not give it; give --pixel-size "
            "(micrometres per pixel)",
            first,
        )
    size = round(o.context_um / ps)  # type: ignore[operator]
    if size < 8:
        raise NcmError(f"a context of {o.context_um:g} um is only {size} px at {ps:g} um per pixel", first)
    return replace(o, size=size, pixel_size=ps)


def _band_param(spec: BandSpec, bands: list) -> list | None:
    """The band a tile set records (evaluation and training skip it): the one given, or the widest detected."""
    band = widest(bands) if isinstance(spec, str) else spec
    return None if band is None else list(band)


def _detected(spec: BandSpec, bands: dict[str, Any]) -> dict[str, str]:
    """The frames whose bar was detected (not given), with its rows."""
    return {r: band_text(b) for r, b in bands.items() if b is not None} if isinstance(spec, str) else {}


def _frame_crops(
    f: Path, rel: str, cls: str, mask_root: Path | None, o: CropOptions
) -> tuple[np.ndarray, np.ndarray, tuple[int | None, int | None] | None]:
    """A frame, the top-left corners of its crops (random, but the same for the same seed and frame name) and
    the band of rows they avoid."""
    from ncm_core.data.datasets import load_image

    img = load_image(f)
    mask = None
    if mask_root is not None:
        mf = mask_root / cls / (f.stem + ".png")
        mask = load_image(mf) if mf.is_file() else None
    try:
        band = resolve_band(o.exclude_rows, img)  # the file is named below
        valid = _valid_mask(img.shape[:2], band, mask)
        # one generator per frame, seeded by its name: adding a frame does not move the others' crops
        rng = np.random.default_rng([o.seed, *rel.encode()])
        return img, crop_positions(valid, o.size, o.per_frame, rng, o.max_masked), band
    except NcmError as exc:
        raise NcmError(str(exc), f) from None
