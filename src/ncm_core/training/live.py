"""Live segmentation while a user paints: retrain the forest on the strokes, repredict the part in view.

:class:`LiveSegmenter` holds an image (numpy, zarr or dask; read tile by tile), its fixed normalisation
and a cache of the multiscale features of the tiles it has seen (each computed with the features' halo, so
a tile's features equal the whole image's). After a stroke, :meth:`LiveSegmenter.update` fits a small
forest on the features of the labelled pixels (those of tiles whose labels did not change are reused) and
:meth:`LiveSegmenter.predict_view` classifies a rectangle, tile by tile, at full or reduced resolution.
:meth:`LiveSegmenter.segmenter` is the forest as a bundle-ready :class:`~ncm_core.models.forest.ForestSegmenter`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.forest import ForestSegmenter, fit_booster
from ncm_core.models.pixel_features import feature_halo, feature_names, pixel_features
from ncm_core.models.segmenter import SegmenterConfig
from ncm_core.training.segment_config import SegmentConfig

#: a lighter forest than training's default, so a retrain and a repredict take about a second
LIVE_FOREST = {"trees": 30, "leaves": 15, "max_per_class": 4000}
#: at most this many label pixels are read at once when all the strokes are rescanned
SCAN_PIXELS = 16 * 2**20


def label_tiles(
    labels: Any, tile: int, tiles: Iterable[tuple[int, int]] | None = None, *, count: Any = None
) -> Iterator[tuple[tuple[int, int], np.ndarray]]:
    """``((ty, tx), labels of that tile)`` of a label array ``(H, W)`` (numpy, zarr or dask) cut in
    ``tile``-sized tiles: the given ``tiles``, or (``None``) every tile holding a label, found by reading
    the array a band of tile rows at a time (at most :data:`SCAN_PIXELS` pixels per read, never the whole
    array). ``count(n)`` is told how many tiles each read covers."""
    h, w = (int(v) for v in labels.shape[-2:])
    t = int(tile)
    if tiles is not None:
        ny, nx = -(-h // t), -(-w // t)
        for ty, tx in sorted({(int(a), int(b)) for a, b in tiles if 0 <= a < ny and 0 <= b < nx}):
            if count is not None:
                count(1)
            yield (ty, tx), np.asarray(labels[ty * t : (ty + 1) * t, tx * t : (tx + 1) * t])
        return
    step = max(1, SCAN_PIXELS // (t * t)) * t  # columns per read
    for y0 in range(0, h, t):
        for b0 in range(0, w, step):
            band = np.asarray(labels[y0 : y0 + t, b0 : b0 + step])
            if count is not None:
                count(-(-band.shape[1] // t))
            for c in np.unique(np.flatnonzero(band.any(axis=0)) // t):
                yield (y0 // t, b0 // t + int(c)), band[:, int(c) * t : (int(c) + 1) * t]


class LiveSegmenter:
    """Retrain-and-repredict for one image ``(C, H, W)`` (or ``(H, W)``) and its ``classes``.

    ``config`` gives the feature sigmas and groups, threads and seed (:class:`SegmentConfig`); ``forest``
    overrides the live forest's ``trees``, ``leaves`` and ``max_per_class`` (:data:`LIVE_FOREST`).
    ``tile`` is the side of the cached feature tiles; at most ``cache_mb`` MB of features are kept.
    ``norm`` is the raw ``(low, high)`` intensity range (default: robust percentiles of a subsample of the
    image; give it for a large lazy mosaic, e.g. from a coarse pyramid level).
    """

    def __init__(
        self,
        image: Any,
        classes: Sequence[str],
        config: SegmentConfig | None = None,
        *,
        forest: dict[str, Any] | None = None,
        tile: int = 512,
        cache_mb: float = 1500,
        norm: tuple[float, float] | None = None,
    ) -> None:
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3:
            raise NcmError(f"live segmentation needs a 2D image (grey or channels first), got shape {image.shape}")
        if len(classes) < 2:
            raise NcmError("live segmentation needs at least two classes")
        self.image = image
        self.classes = list(classes)
        self.options = (config or SegmentConfig()).validate()
        self.settings = {**self.options.forest_settings(), **LIVE_FOREST, **(forest or {})}
        self.sigmas = [float(s) for s in self.options.sigmas]
        self.groups = list(self.options.features)
        self.halo = feature_halo(self.sigmas)
        self.tile = int(tile)
        self.shape = tuple(int(s) for s in image.shape[1:])
        n_feat = len(feature_names(image.shape[0], self.sigmas, self.groups))
        self._max_tiles = max(2, int(cache_mb * 2**20 // (n_feat * self.tile * self.tile * 4)))
        self._features: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._samples: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.config = self._segmenter_config(norm)
        self.booster: Any = None
        self.timing: dict[str, float] = {}
        #: label tiles read by :meth:`update` so far (a rescan counts every tile it reads)
        self.tile_reads = 0

    def _segmenter_config(self, norm: tuple[float, float] | None) -> SegmenterConfig:
        from ncm_core.data.label_images import image_range

        if norm is None:
            norm = image_range(self.image)
        low, high = (float(v) for v in norm)
        from ncm_core.io.colors import class_colors

        hexes = ["#" + "".join(f"{round(v * 255):02x}" for v in c[:3]) for c in class_colors(self.classes)]
        colors = list(self.options.colors or hexes)
        return SegmenterConfig(
            engine="forest",
            classes=self.classes,
            colors=colors,
            channels=int(self.image.shape[0]),
            norm_low=low,
            norm_high=high,
            halo=self.halo,
            pixel_size=self.options.pixel_size,
            engine_config=dict(self.settings),
        )

    # ------------------------------------------------------------------------------------------ features
    def _tile_box(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        t = self.tile
        return ty * t, min((ty + 1) * t, self.shape[0]), tx * t, min((tx + 1) * t, self.shape[1])

    def tile_features(self, ty: int, tx: int) -> np.ndarray:
        """Features ``(F, h, w)`` of tile ``(ty, tx)``, computed with the halo around it (cached)."""
        key = (ty, tx)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        y0, y1, x0, x1 = self._tile_box(ty, tx)
        r = self.halo
        a0, a1, b0, b1 = max(y0 - r, 0), min(y1 + r, self.shape[0]), max(x0 - r, 0), min(x1 + r, self.shape[1])
        window = self.config.normalize(np.asarray(self.image[:, a0:a1, b0:b1]))
        feats = pixel_features(window, self.sigmas, self.groups)[:, y0 - a0 : y1 - a0, x0 - b0 : x1 - b0]
        feats = np.ascontiguousarray(feats)
        self._features[key] = feats
        while len(self._features) > self._max_tiles:
            self._features.popitem(last=False)
        return feats

    def _tiles(self, y0: int, y1: int, x0: int, x1: int) -> list[tuple[int, int]]:
        t = self.tile
        return [(ty, tx) for ty in range(y0 // t, (y1 - 1) // t + 1) for tx in range(x0 // t, (x1 - 1) // t + 1)]

    # ------------------------------------------------------------------------------------------ training
    def tile_boxes(self, tiles: Iterable[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, int, int, int]]:
        """Rows and columns ``(y0, y1, x0, x1)`` of each tile key ``(ty, tx)`` inside the image."""
        ny, nx = -(-self.shape[0] // self.tile), -(-self.shape[1] // self.tile)
        return {(int(a), int(b)): self._tile_box(int(a), int(b)) for a, b in tiles if 0 <= a < ny and 0 <= b < nx}

    def _read_tiles(self, labels: Any, tiles: Iterable[tuple[int, int]] | None) -> Iterator[tuple[Any, np.ndarray]]:
        def count(n: int) -> None:
            self.tile_reads += n

        if isinstance(labels, Mapping):  # tiles copied by the caller
            for key in tiles if tiles is not None else list(labels):
                count(1)
                yield tuple(key), np.asarray(labels[key])
            return
        yield from label_tiles(labels, self.tile, tiles, count=count)

    def update(self, labels: Any, tiles: Iterable[tuple[int, int]] | None = None) -> bool:
        """Refit the forest on ``labels`` (``(H, W)``: 0 unlabelled, k = class k; numpy, zarr or dask); the
        same strokes as last time keep the forest. False (and no forest) while fewer than two classes are
        painted.

        ``tiles`` (keys ``(ty, tx)`` of :attr:`tile`-sized tiles) are the only tiles read, the others keep
        their samples; a tile with no label left drops out. ``None`` rescans the whole array, a band of
        tiles at a time. ``labels`` may also be a mapping ``{(ty, tx): labels of that tile}`` (copies made
        while painting goes on): of the given ``tiles``, or of every painted tile when ``tiles`` is None.
        """
        t0 = time.perf_counter()
        if not isinstance(labels, Mapping) and tuple(labels.shape) != self.shape:
            raise NcmError(f"labels are {tuple(labels.shape)}, the image {self.shape}")
        seen: set[tuple[int, int]] = set()
        old_keys = set(self._samples)
        changed = False
        t_feat = 0.0
        for key, lab in self._read_tiles(labels, tiles):
            seen.add(key)
            y0, y1, x0, x1 = self._tile_box(*key)
            if lab.shape != (y1 - y0, x1 - x0):
                raise NcmError(f"labels of tile {key} are {lab.shape}, the tile {(y1 - y0, x1 - x0)}")
            old = self._samples.get(key)
            if not lab.any():
                changed |= self._samples.pop(key, None) is not None
                continue
            if old is not None and np.array_equal(old[0], lab):
                continue
            changed = True
            tf = time.perf_counter()
            feats = self.tile_features(*key)
            t_feat += time.perf_counter() - tf
            m = lab > 0
            self._samples[key] = (lab.copy(), feats[:, m].T.copy(), lab[m].astype(np.int32) - 1)
        if tiles is None:  # a full rescan: unseen tiles hold no label
            for key in old_keys - seen:
                del self._samples[key]
                changed = True
        if not self._samples:
            self.booster = None
            return False
        if not changed and self.booster is not None:  # the same strokes: the forest stands
            self.timing = {"features_s": 0.0, "train_s": 0.0, "update_s": time.perf_counter() - t0}
            return True
        y = np.concatenate([s[2] for s in self._samples.values()])
        top = len(self.classes)
        if y.max(initial=-1) >= top:
            raise NcmError(f"label value {int(y.max()) + 1} has no class: there are {top} classes")
        if len(np.unique(y)) < 2:
            self.booster = None
            return False
        x = np.concatenate([s[1] for s in self._samples.values()])
        cap = int(self.settings["max_per_class"])
        rng = np.random.default_rng([self.options.seed, 7])
        keep = []
        for c in range(top):
            idx = np.flatnonzero(y == c)
            keep.append(np.sort(rng.choice(idx, cap, replace=False)) if len(idx) > cap else idx)
        keep = np.concatenate(keep)
        tt = time.perf_counter()
        # one thread: a few thousand pixels train faster alone than with threads that wait on each other
        settings = {**self.settings, "threads": 1}
        self.booster = fit_booster(np.ascontiguousarray(x[keep]), y[keep], top, settings, self.options.seed)
        now = time.perf_counter()
        self.timing = {"features_s": t_feat, "train_s": now - tt, "update_s": now - t0}
        return True

    # ------------------------------------------------------------------------------------------ prediction
    def predict_view(self, y0: int, y1: int, x0: int, x1: int, stride: int = 1, *, full: bool = True) -> np.ndarray:
        """Class map (uint8, k + 1 = class k) of rows ``y0:y1``, columns ``x0:x1`` (clipped to the image);
        ``stride`` > 1 classifies every ``stride``-th pixel of the image grid (a preview) and repeats it
        (``full``), or returns only those pixels (``full=False``: one value per ``stride`` x ``stride``
        block whose top-left pixel is at a multiple of ``stride``, from the first at or after ``(y0, x0)``)."""
        if self.booster is None:
            raise NcmError("paint strokes of at least two classes first")
        t0 = time.perf_counter()
        h, w = self.shape
        y0, y1, x0, x1 = max(int(y0), 0), min(int(y1), h), max(int(x0), 0), min(int(x1), w)
        s = max(int(stride), 1)
        g0, h0 = -(-y0 // s) * s, -(-x0 // s) * s  # the first pixels of the image grid in the rectangle
        grid = np.zeros((len(range(g0, y1, s)), len(range(h0, x1, s))), np.uint8)
        if grid.size == 0:
            return grid if not full else np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        threads = int(self.settings.get("threads", 2))
        for key in self._tiles(y0, y1, x0, x1):
            ty0, ty1, tx0, tx1 = self._tile_box(*key)
            a0, a1, b0, b1 = max(ty0, y0), min(ty1, y1), max(tx0, x0), min(tx1, x1)
            # the pixels of the image grid (multiples of s) in this part, in tile coordinates
            r0, c0 = -(-a0 // s) * s, -(-b0 // s) * s
            if r0 >= a1 or c0 >= b1:
                continue
            feats = self.tile_features(*key)
            part = feats[:, r0 - ty0 : a1 - ty0 : s, c0 - tx0 : b1 - tx0 : s]
            f, ph, pw = part.shape
            p = self.booster.predict(np.ascontiguousarray(part.reshape(f, -1).T), num_threads=threads)
            cls = (np.asarray(p).argmax(1) + 1).astype(np.uint8).reshape(ph, pw)
            i, j = (r0 - g0) // s, (c0 - h0) // s
            grid[i : i + ph, j : j + pw] = cls
        self.timing["predict_s"] = time.perf_counter() - t0
        if not full:
            return grid
        out = np.repeat(np.repeat(grid, s, 0), s, 1)
        # the repeated grid starts at (g0, h0); pixels before it take its first row/column
        return np.pad(out, ((g0 - y0, 0), (h0 - x0, 0)), mode="edge")[: y1 - y0, : x1 - x0]

    def segmenter(self) -> ForestSegmenter:
        """The current forest with its config (normalisation, classes, halo): save it as a bundle, or
        segment a mosaic with it."""
        if self.booster is None:
            raise NcmError("paint strokes of at least two classes first")
        cfg = SegmenterConfig(**{**self.config.__dict__, "engine_config": dict(self.config.engine_config)})
        cfg.engine_config["n_features"] = len(feature_names(cfg.channels, self.sigmas, self.groups))
        return ForestSegmenter(cfg, self.booster)


def strokes_label_set(
    image: Any,
    labels: Any,
    classes: Sequence[str],
    *,
    name: str = "image",
    where: str | None = None,
    pixel_size: float | None = None,
    tile: int = 512,
    margin: int = 256,
    lazy_above: int = 16 * 2**20,
    tiles: Iterable[tuple[int, int]] | None = None,
) -> Any:
    """Strokes painted over ``image`` (``(C, H, W)``, numpy, zarr or dask) as a checked
    :class:`~ncm_core.data.label_images.LabelSet` to train from, reading only around the strokes.

    Up to ``lazy_above`` pixels: one part, the strokes' bounding box with ``margin`` pixels of context.
    Above: one part per group of touching painted ``tile`` x ``tile`` tiles (its bounding box, or each
    tile alone when the box would be mostly unpainted), each with ``margin`` pixels of context whose
    labels are left out (they belong to another part), so memory follows the painted area, not the
    image. ``name`` names the parts, ``where`` the strokes in errors (default ``name``). ``tiles``
    lists the tiles that may hold strokes (e.g. a zarr store's written chunks; None: scanned)."""
    from scipy import ndimage

    from ncm_core.data.label_images import LabelSet, check_labels

    names = list(classes)
    h, w = image.shape[1:]
    if h * w <= lazy_above:
        lab = np.asarray(labels)
        check_labels([lab], names, where or name)
        rows, cols = np.flatnonzero(lab.any(1)), np.flatnonzero(lab.any(0))
        y0, y1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, h)
        x0, x1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, w)
        pixels = np.asarray(image[:, y0:y1, x0:x1], np.float32)
        return LabelSet([pixels], [lab[y0:y1, x0:x1].astype(np.int32)], [name], names, None, pixel_size)
    painted = {key: lab for key, lab in label_tiles(labels, tile, tiles) if lab.any()}
    images: list[np.ndarray] = []
    parts: list[np.ndarray] = []
    stems: list[str] = []
    if painted:
        keys = np.array(sorted(painted))
        lo = keys.min(0)
        grid = np.zeros(tuple(keys.max(0) - lo + 1), bool)
        grid[tuple((keys - lo).T)] = True
        groups, _ = ndimage.label(grid, structure=np.ones((3, 3), bool))
        of_group = groups[tuple((keys - lo).T)]
        boxes = []  # per group: boxes of tiles (ty0, ty1, tx0, tx1)
        for g, (rs, cs) in enumerate(ndimage.find_objects(groups), start=1):
            members = keys[of_group == g]
            if (rs.stop - rs.start) * (cs.stop - cs.start) <= 2 * len(members):
                boxes.append([(rs.start + lo[0], rs.stop + lo[0], cs.start + lo[1], cs.stop + lo[1])])
            else:
                boxes.append([(ky, ky + 1, kx, kx + 1) for ky, kx in members])
        for group in boxes:
            for ty0, ty1, tx0, tx1 in (tuple(int(v) for v in box) for box in group):
                y0, y1 = max(ty0 * tile - margin, 0), min(ty1 * tile + margin, h)
                x0, x1 = max(tx0 * tile - margin, 0), min(tx1 * tile + margin, w)
                part = np.zeros((y1 - y0, x1 - x0), np.int32)
                for (ky, kx), lab in painted.items():
                    if ty0 <= ky < ty1 and tx0 <= kx < tx1:
                        a, c = ky * tile - y0, kx * tile - x0
                        part[a : a + lab.shape[0], c : c + lab.shape[1]] = lab
                images.append(np.asarray(image[:, y0:y1, x0:x1], np.float32))
                parts.append(part)
                stems.append(f"{name} [{y0}:{y1}, {x0}:{x1}]")
    check_labels(parts, names, where or name)
    return LabelSet(images, parts, stems, names, None, pixel_size)
