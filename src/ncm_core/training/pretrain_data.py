"""Unlabelled images for self-supervised pretraining: frames read whole, mosaics sampled lazily.

A data path is a folder (searched recursively: class sub-folders are allowed and their names ignored), an
image file, or a mosaic (zarr, OME-Zarr, a large TIFF). Frames are read whole, without their information
bar (:mod:`ncm_core.data.infobar`, as classifier training does); a mosaic is never loaded whole: each
epoch reads ``tiles_per_mosaic`` random tiles of it through :func:`ncm_core.io.mosaic.open_mosaic`.
All images must share one channel count and one pixel type (one line names two that differ).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.datasets import IMAGE_SUFFIXES, load_image, random_crops, scan_class_folders, skip_hidden
from ncm_core.data.infobar import cut_band, resolve_band
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import open_mosaic
from ncm_core.io.pixels import read_pixels

#: an image file larger than this (pixels) is sampled lazily as a mosaic instead of read whole
FRAME_PIXELS = 4096 * 4096


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and (p.suffix == ".zarr" or (p / "zarr.json").is_file() or (p / ".zgroup").is_file())


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files and zarr mosaics under ``paths`` (folders searched recursively, hidden files skipped)."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise NcmError("pretraining data not found", p)
        if _is_zarr(p) or p.is_file():
            found.append(p)
            continue
        stack, here = [p], []
        while stack:
            d = stack.pop()
            for q in sorted(d.iterdir()):
                if q.name.startswith("."):
                    continue
                if _is_zarr(q):
                    here.append(q)
                elif q.is_dir():
                    stack.append(q)
                elif q.suffix.lower() in IMAGE_SUFFIXES:
                    here.append(q)
        found += skip_hidden(sorted(here), p, p)
    return found


@dataclass
class PretrainData:
    """What pretraining draws its crops from."""

    frames: list[np.ndarray]
    mosaics: list[Any]  # ncm_core.io.mosaic.Mosaic
    names: list[str]
    in_chans: int
    dtype: Any
    crop_size: int
    crops_per_image: int
    tiles_per_mosaic: int
    bands: dict[str, Any] = field(default_factory=dict)

    @property
    def per_epoch(self) -> int:
        return len(self.frames) * self.crops_per_image + len(self.mosaics) * self.tiles_per_mosaic

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """This epoch's crops ``(N, s, s[, C])`` in the images' own pixel type (frames: fresh random crops;
        mosaics: random tiles read lazily)."""
        s, parts = self.crop_size, []
        if self.frames:
            parts.append(random_crops(self.frames, [0] * len(self.frames), s, self.crops_per_image, rng, False)[0])
        for m in self.mosaics:
            h, w = m.shape
            tiles = []
            for _ in range(self.tiles_per_mosaic):
                y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
                tiles.append(read_pixels(m, (slice(y, y + s), slice(x, x + s))))
            parts.append(np.stack(tiles))
        return np.concatenate(parts)


def _kind(img: Any) -> tuple[int, str]:
    """Channel count and pixel type of an array or a mosaic."""
    chans = (1 if img.ndim == 2 else int(img.shape[2])) if isinstance(img, np.ndarray) else img.channels
    return chans, str(np.dtype(img.dtype))


def check_uniform(items: list[tuple[Path, Any]]) -> tuple[int, Any]:
    """The one channel count and pixel type of ``items`` (path, array or mosaic), or one line naming two
    images that differ."""
    first_path, first = items[0]
    c0, d0 = _kind(first)
    for path, img in items[1:]:
        c, d = _kind(img)
        if c != c0:
            raise NcmError(
                f"images of mixed channel counts: this one has {c}, {first_path.name} has {c0}; "
                "convert them to one kind (all grayscale or all colour)",
                path,
            )
        if d != d0:
            raise NcmError(
                f"images of mixed bit depths: this one is {d}, {first_path.name} is {d0}; convert them to one type",
                path,
            )
    return (1 if c0 == 1 else 3), np.dtype(d0)


def pretrain_source(
    data: str | Path | Iterable[str | Path],
    crop_size: int,
    crops_per_image: int,
    tiles_per_mosaic: int,
    exclude_rows: Any,
    batch_size: int,
) -> PretrainData:
    """The frames and mosaics under ``data``, checked: one channel count and pixel type, every image at
    least ``crop_size`` px, and at least one batch of crops per epoch."""
    paths = [data] if isinstance(data, (str, Path)) else list(data)
    files = find_images(paths)
    if not files:
        raise NcmError(f"no images found ({', '.join(IMAGE_SUFFIXES)} or zarr mosaics)", paths[0])
    frames, mosaics, names, items, bands = [], [], [], [], {}
    for f in files:
        m = open_mosaic(f)
        h, w = m.shape
        if min(h, w) < crop_size:
            raise NcmError(f"image is {h}x{w} px, smaller than the crop size {crop_size} px", f)
        if _is_zarr(f) or h * w > FRAME_PIXELS:
            mosaics.append(m)
            items.append((f, m))
        else:
            img = load_image(f)
            band = resolve_band(exclude_rows, img, f)
            bands[str(f)] = band
            img = img if band is None else cut_band(img, band)
            if min(img.shape[:2]) < crop_size:
                raise NcmError(
                    f"image is {img.shape[0]}x{img.shape[1]} px without its information bar, smaller than the "
                    f"crop size {crop_size} px",
                    f,
                )
            frames.append(img)
            items.append((f, img))
        names.append(str(f))
    in_chans, dtype = check_uniform(items)
    d = PretrainData(frames, mosaics, names, in_chans, dtype, crop_size, crops_per_image, tiles_per_mosaic, bands)
    if d.per_epoch < batch_size:
        raise NcmError(
            f"{len(files)} image{'s give' if len(files) > 1 else ' gives'} {d.per_epoch} crops per epoch, fewer "
            f"than the batch size {batch_size}; add images, or lower the batch size (--batch-size) or raise --crops",
            paths[0],
        )
    return d


def probe_crops(
    folder: str | Path, crop_size: int, per_image: int, exclude_rows: Any, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Fixed, seeded crops of a labelled folder (class sub-folders of frames) for the k-NN probe: crops,
    labels, the index of each crop's frame, and the class names."""
    ds = scan_class_folders(folder)
    images = []
    for f in ds.files:
        img = load_image(f)
        band = resolve_band(exclude_rows, img, f)
        images.append(img if band is None else cut_band(img, band))
    rng = np.random.default_rng(seed)
    x, frame = random_crops(images, list(range(len(images))), crop_size, per_image, rng, False)
    labels = np.asarray(ds.labels)[frame]
    return x, labels, frame, ds.class_names
