"""Data sources of classifier training: class folders of frames, or a tile set.

* **frames**: each epoch draws fresh random crops of ``tile_size`` px from every training frame;
  validation uses fixed, seeded crops of frames held out before cropping (none when
  ``val_fraction`` is 0);
* **tile set**: its ``train`` and ``val`` splits, already separated by source frame or painted region.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.datasets import augment_tiles, load_image, random_crops, scan_class_folders, split_by_image
from ncm_core.data.infobar import cut_band, resolve_band, widest
from ncm_core.data.tilesets import open_tile_set
from ncm_core.errors import NcmError
from ncm_core.models.preprocess import intensity_scale, standardize_tiles


@dataclass
class ClassifyData:
    """What the loop needs from a data source."""

    root: Path
    kind: str  # "frames" or "tiles"
    class_names: list[str]
    in_chans: int
    tile_size: int
    val_x: np.ndarray
    val_y: np.ndarray
    epoch: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
    sample: Callable[[np.random.Generator], np.ndarray]  # tiles for normalisation statistics
    train_groups: list[str]
    val_groups: list[str]
    n_train: int  # tiles per epoch
    dtype: Any = np.uint8
    bands: dict[str, Any] | None = None  # frames: the band of rows left out of each frame
    val_sources: list[str] | None = None  # the frame (or group) of each validation tile


def channels(arrays: Iterable[np.ndarray], where: Any) -> int:
    chans = {1 if a.ndim == 2 else a.shape[2] for a in arrays}
    if len(chans) > 1:
        raise NcmError("dataset mixes grayscale and colour images; convert them to one kind", where)
    return 1 if chans == {1} else 3


def bit_depths(images: list[np.ndarray], where: Any) -> np.dtype:
    """The one pixel type of a training folder's images; images of several is one error line."""
    kinds = sorted({str(a.dtype) for a in images})
    if len(kinds) > 1:
        raise NcmError(f"dataset mixes images of different bit depths ({', '.join(kinds)}); convert them to one", where)
    return images[0].dtype


def balanced_weights(labels: Any) -> np.ndarray:
    """Sampling probabilities that draw every class equally often (each item 1 / its class's count)."""
    y = np.asarray(labels)
    counts = np.bincount(y)
    w = 1.0 / counts[y]
    return w / w.sum()


def frames_pixel_size(data: Path) -> float | None:
    """The pixel size (micrometres) of the first frame of class folders, from its metadata; None if unknown."""
    from ncm_core.io.mosaic import open_mosaic

    ds = scan_class_folders(data)
    return open_mosaic(ds.files[0]).pixel_size


def frames_source(
    data: Path,
    tile_size: int,
    val_fraction: float,
    crops: int,
    val_crops: int,
    exclude_rows: Any,
    ops: tuple[str, ...],
    seed: int,
    holdout: bool = True,
    balanced: bool = False,
) -> ClassifyData:
    """Class folders of frames as a :class:`ClassifyData`; ``balanced`` draws each epoch's crops from
    frames chosen so that every class gets the same share (frames of rare classes are cropped more)."""
    ds = scan_class_folders(data)
    if len(ds.class_names) < 2:
        raise NcmError(f"found only one class ({ds.class_names[0]!r}); a classifier needs at least two", ds.root)
    if holdout and val_fraction > 0:
        train_idx, val_idx = split_by_image(ds, val_fraction, seed)
    else:
        train_idx, val_idx = list(range(len(ds.files))), []
    bands: dict[str, Any] = {}
    images = []
    for f in ds.files:  # each frame without its band (a detected information bar, or the band given)
        img = load_image(f)
        band = resolve_band(exclude_rows, img, f)
        bands[str(f.relative_to(ds.root))] = band
        images.append(img if band is None else cut_band(img, band))
    for f, img in zip(ds.files, images):
        if min(img.shape[:2]) < tile_size:
            raise NcmError(
                f"image is {img.shape[0]}x{img.shape[1]} px (without excluded rows), smaller than "
                f"the tile size {tile_size} px",
                f,
            )
    in_chans = channels(images, ds.root)
    bit_depths(images, ds.root)
    tr_img, tr_lab = [images[i] for i in train_idx], [ds.labels[i] for i in train_idx]
    n_train = len(train_idx) * crops

    def per_frame(rng: np.random.Generator) -> int | list[int]:
        if not balanced:
            return crops
        picks = rng.choice(len(tr_img), n_train, p=balanced_weights(tr_lab))
        return np.bincount(picks, minlength=len(tr_img)).tolist()

    if val_idx:
        val_x, val_y = random_crops(
            [images[i] for i in val_idx],
            [ds.labels[i] for i in val_idx],
            tile_size,
            val_crops,
            np.random.default_rng(seed + 1),
            augment=False,
        )
    else:
        val_x, val_y = np.zeros((0, tile_size, tile_size), images[0].dtype), np.zeros(0, np.int64)
    rel = lambda i: str(ds.files[i].relative_to(ds.root))  # noqa: E731
    return ClassifyData(
        ds.root,
        "frames",
        ds.class_names,
        in_chans,
        tile_size,
        val_x,
        val_y,
        epoch=lambda rng: random_crops(tr_img, tr_lab, tile_size, per_frame(rng), rng, ops),
        sample=lambda rng: random_crops(tr_img, [0] * len(tr_img), tile_size, 4, rng, False)[0],
        train_groups=[rel(i) for i in train_idx],
        val_groups=[rel(i) for i in val_idx],
        n_train=n_train,
        dtype=images[0].dtype,
        bands=bands,
        val_sources=[rel(i) for i in val_idx for _ in range(val_crops)],
    )


def trained_band(spec: Any, d: ClassifyData, src: Path) -> tuple[int | None, int | None] | None:
    """The band of rows a bundle remembers (evaluation and prediction of frames default to it): the band
    given; for frames with ``"detect"``/``"auto"`` the widest bar detected; for a tile set, unless a band
    or ``"none"`` is given, the band its crops avoided."""
    if spec == "none":
        return None
    if spec is not None and not isinstance(spec, str):
        return tuple(spec)
    if d.kind == "frames":
        return widest(list((d.bands or {}).values()))
    band = open_tile_set(src).params.get("exclude_rows")
    return tuple(band) if band else None


def tile_set_source(
    data: Path, tile_size: int | None, ops: tuple[str, ...], holdout: bool = True, balanced: bool = False
) -> ClassifyData:
    """A tile set's splits as a :class:`ClassifyData`; ``balanced`` draws each epoch's tiles (with
    replacement) so that every class is drawn equally often."""
    ts = open_tile_set(data)
    if tile_size is not None and tile_size != ts.tile_size:
        raise NcmError(
            f"the tile set's tiles are {ts.tile_size} px; train with tile size {ts.tile_size} "
            f"(or leave it unset), not {tile_size}",
            data,
        )
    x, y, groups = ts.load("train")
    if len(x) == 0:
        raise NcmError("the tile set has no training tiles", data)
    present = sorted(set(y.tolist()))
    if len(present) < 2:
        raise NcmError(f"the tile set's training split holds one class only ({ts.class_names[present[0]]!r})", data)
    vx, vy, vgroups = ts.load("val")
    if not holdout and len(vx):  # train on train + validation tiles (e.g. the final model after tuning)
        x, y, groups = np.concatenate([x, vx]), np.concatenate([y, vy]), groups + vgroups
        vx, vy, vgroups = vx[:0], vy[:0], []
    in_chans = channels([x[0]] + ([vx[0]] if len(vx) else []), data)
    if len(vx) and vx.shape[1:] != x.shape[1:]:
        raise NcmError(f"validation tiles are {vx.shape[1:]} but training tiles {x.shape[1:]}", data)

    def epoch(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if not balanced:
            return augment_tiles(x, rng, ops), y
        idx = rng.choice(len(x), len(x), p=balanced_weights(y))
        return augment_tiles(x[idx], rng, ops), y[idx]

    return ClassifyData(
        ts.root,
        "tiles",
        ts.class_names,
        in_chans,
        ts.tile_size,
        vx,
        vy,
        epoch=epoch,
        sample=lambda rng: x[rng.permutation(len(x))[:512]],
        train_groups=sorted(set(groups)),
        val_groups=sorted(set(vgroups)),
        n_train=len(x),
        dtype=x.dtype,
        val_sources=list(vgroups),
    )


def normalisation(
    data: ClassifyData, rng: np.random.Generator, standardize: tuple[float, float] | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and standard deviation per channel of a sample of training tiles (after per-tile
    ``standardize``, when given)."""
    s = data.sample(rng).astype(np.float64) / intensity_scale(data.dtype)
    if standardize is not None:
        s = standardize_tiles(s if s.ndim == 4 else s[..., None], standardize)
    axes = tuple(range(3))
    m, sd = np.atleast_1d(s.mean(axis=axes)), np.atleast_1d(s.std(axis=axes)) + 1e-6
    if data.in_chans == 3 and len(m) == 1:
        m, sd = np.repeat(m, 3), np.repeat(sd, 3)
    return tuple(m.tolist()), tuple(sd.tolist())
