"""Class-per-folder image datasets, split by source image, and random crops."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.augment import augment_tiles, change_looks, parse_augment, turn_and_zoom  # noqa: F401 (re-export)
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import PIL_SUFFIXES, TIFF_SUFFIXES, open_mosaic
from ncm_core.io.pixels import check_finite

IMAGE_SUFFIXES = PIL_SUFFIXES + TIFF_SUFFIXES


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """A name (or, below ``root``, any folder on the way) starting with ``.``: ``.x.png``, macOS ``._x.png``."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(p.startswith(".") for p in parts)


def skip_hidden(files: Iterable[Path], where: str | Path, root: Path | None = None) -> list[Path]:
    """``files`` without hidden ones (:func:`is_hidden`); their count is reported as one warning line.

    Hidden files are copies and metadata of other programs (macOS ``._frame.png`` beside ``frame.png``):
    read as data they would be a second frame of the same image, possibly in another split.
    """
    files = list(files)
    kept = [f for f in files if not is_hidden(f, root)]
    n = len(files) - len(kept)
    if n:
        first = next(f for f in files if is_hidden(f, root))
        warnings.warn(
            f"{where}: skipped {n} hidden file{'s' if n > 1 else ''} (names starting with '.', "
            f"e.g. {first.name}: copies or metadata of other programs)",
            stacklevel=3,
        )
    return kept


@dataclass
class FolderDataset:
    """Images found under ``root/<class name>/``; ``labels[i]`` indexes ``class_names``."""

    root: Path
    class_names: list[str]
    files: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)


def scan_class_folders(root: str | Path, class_names: list[str] | None = None) -> FolderDataset:
    """Find images in class sub-folders of ``root`` (sorted, so class order is stable).

    ``class_names`` fixes the class order (e.g. a bundle's) and checks that the
    folders match it.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NcmError("dataset folder not found" if not root.exists() else "dataset path is not a folder", root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise NcmError("no class folders found: expected one sub-folder of images per class", root)
    names = [p.name for p in folders]
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise NcmError(
                f"folders {unknown} are not classes of the model ({len(class_names)} classes: "
                f"{', '.join(class_names[:6])}{', ...' if len(class_names) > 6 else ''})",
                root,
            )
    else:
        class_names = names
    files, labels = [], []
    found = {f: sorted(p for p in f.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) for f in folders}
    visible = set(skip_hidden([p for v in found.values() for p in v], root))
    for folder in folders:
        imgs = [p for p in found[folder] if p in visible]
        if not imgs:
            raise NcmError(f"class folder {folder.name!r} has no images ({', '.join(IMAGE_SUFFIXES)})", folder)
        files += imgs
        labels += [class_names.index(folder.name)] * len(imgs)
    return FolderDataset(root, list(class_names), files, labels)


def split_by_image(ds: FolderDataset, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of training and validation images, stratified by class.

    Whole images go to one side, so crops of one image never feed both
    training and validation.
    """
    if not 0 < val_fraction < 1:
        raise NcmError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    labels = np.asarray(ds.labels)
    for c, name in enumerate(ds.class_names):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue
        if len(idx) < 2:
            raise NcmError(
                f"class {name!r} has only {len(idx)} image; at least 2 are needed to hold one out for validation",
                ds.root / name,
            )
        idx = rng.permutation(idx)
        n_val = min(max(1, round(val_fraction * len(idx))), len(idx) - 1)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return sorted(train), sorted(val)


def load_image(path: Path, exclude_rows: tuple[int | None, int | None] | None = None) -> np.ndarray:
    """Read a whole (frame-sized) image to memory, dropping a band of rows (e.g. an SEM info bar)."""
    from ncm_core.data.infobar import cut_band
    from ncm_core.io.pixels import read_pixels

    img = check_finite(read_pixels(open_mosaic(path)), path)
    return img if exclude_rows is None else cut_band(img, exclude_rows)


def random_crops(
    images: list[np.ndarray],
    labels: list[int],
    size: int,
    per_image: int | list[int],
    rng: np.random.Generator,
    augment: bool | tuple[str, ...] = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``per_image`` random ``size`` x ``size`` crops of every image, with flips and 90-degree turns (and the
    other augmentations selected, :func:`ncm_core.data.augment.augment_tiles`). With ``scale``, the crop is
    cut from a window of 0.8 to 1.25 times ``size`` (within the image) resized to ``size``. ``per_image``
    may be a list: crops of each image."""
    from ncm_core.data.augment import SCALE_RANGE, resize_tile

    ops = parse_augment(augment, "classify")
    counts = [per_image] * len(images) if isinstance(per_image, int) else list(per_image)
    crops, ys = [], []
    tile_ops = tuple(o for o in ops if o != "scale")
    for img, y, n in zip(images, labels, counts):
        h, w = img.shape[:2]
        if h < size or w < size:
            raise NcmError(f"crop size {size} px is larger than an image ({h}x{w} px)")
        for _ in range(n):
            s = size
            if "scale" in ops:
                f = float(np.exp(rng.uniform(-np.log(SCALE_RANGE), np.log(SCALE_RANGE))))
                s = int(min(h, w, max(2, round(size * f))))
            y0, x0 = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            c = img[y0 : y0 + s, x0 : x0 + s]
            if s != size:
                r = resize_tile(c, size)
                c = np.round(r).astype(img.dtype) if np.issubdtype(img.dtype, np.integer) else r.astype(img.dtype)
            crops.append(turn_and_zoom(c, rng, tile_ops))
            ys.append(y)
    return change_looks(np.stack(crops), rng, ops), np.asarray(ys)


def natural_key(value: Any) -> tuple[int, Any]:
    """Sort key for labels: numbers first, in numeric order (``"2"`` before ``"10"``), then other text."""
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))
