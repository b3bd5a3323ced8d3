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
from collections.abc import Sequence
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.forest import ForestSegmenter, fit_booster
from ncm_core.models.pixel_features import feature_halo, feature_names, pixel_features
from ncm_core.models.segmenter import SegmenterConfig
from ncm_core.training.segment_config import SegmentConfig

#: a lighter forest than training's default, so a retrain and a repredict take about a second
LIVE_FOREST = {"trees": 30, "leaves": 15, "max_per_class": 4000}


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

    def _segmenter_config(self, norm: tuple[float, float] | None) -> SegmenterConfig:
        from ncm_core.data.label_images import fit_normalization

        if norm is None:
            h, w = self.shape
            step = max(1, int(np.ceil(np.sqrt(h * w / 1_000_000))))
            norm = fit_normalization([np.asarray(self.image[:, ::step, ::step], np.float32)])
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
    def update(self, labels: np.ndarray) -> bool:
        """Refit the forest on ``labels`` (``(H, W)``: 0 unlabelled, k = class k); the same strokes as last
        time keep the forest. False (and no forest) while fewer than two classes are painted."""
        t0 = time.perf_counter()
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise NcmError(f"labels are {labels.shape}, the image {self.shape}")
        t = self.tile
        painted = set()
        for ty in sorted({int(r) // t for r in np.flatnonzero(labels.any(axis=1))}):
            cols = np.flatnonzero(labels[ty * t : (ty + 1) * t].any(axis=0))
            painted |= {(ty, int(c) // t) for c in cols}
        changed = set(self._samples) != painted
        self._samples = {k: v for k, v in self._samples.items() if k in painted}
        t_feat = 0.0
        for key in sorted(painted):
            y0, y1, x0, x1 = self._tile_box(*key)
            lab = labels[y0:y1, x0:x1]
            old = self._samples.get(key)
            if old is not None and np.array_equal(old[0], lab):
                continue
            changed = True
            tf = time.perf_counter()
            feats = self.tile_features(*key)
            t_feat += time.perf_counter() - tf
            m = lab > 0
            self._samples[key] = (lab.copy(), feats[:, m].T.copy(), lab[m].astype(np.int32) - 1)
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
    def predict_view(self, y0: int, y1: int, x0: int, x1: int, stride: int = 1) -> np.ndarray:
        """Class map (uint8, k + 1 = class k) of rows ``y0:y1``, columns ``x0:x1`` (clipped to the image);
        ``stride`` > 1 classifies every ``stride``-th pixel of the image grid and repeats it (a preview)."""
        if self.booster is None:
            raise NcmError("paint strokes of at least two classes first")
        t0 = time.perf_counter()
        h, w = self.shape
        y0, y1, x0, x1 = max(int(y0), 0), min(int(y1), h), max(int(x0), 0), min(int(x1), w)
        out = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
        if out.size == 0:
            return out
        s = max(int(stride), 1)
        threads = int(self.settings.get("threads", 2))
        for key in self._tiles(y0, y1, x0, x1):
            ty0, ty1, tx0, tx1 = self._tile_box(*key)
            a0, a1, b0, b1 = max(ty0, y0), min(ty1, y1), max(tx0, x0), min(tx1, x1)
            feats = self.tile_features(*key)
            # the pixels of the image grid (multiples of s) in this part, in tile coordinates
            r0, c0 = -(-a0 // s) * s, -(-b0 // s) * s
            part = feats[:, r0 - ty0 : a1 - ty0 : s, c0 - tx0 : b1 - tx0 : s]
            if part.shape[1] == 0 or part.shape[2] == 0:
                continue
            f, ph, pw = part.shape
            p = self.booster.predict(np.ascontiguousarray(part.reshape(f, -1).T), num_threads=threads)
            cls = (np.asarray(p).argmax(1) + 1).astype(np.uint8).reshape(ph, pw)
            if s > 1:
                cls = np.repeat(np.repeat(cls, s, 0), s, 1)
            # the repeated block starts at (r0, c0); pixels before it (a0 < r0) take its first row/column
            block = np.pad(cls, ((r0 - a0, 0), (c0 - b0, 0)), mode="edge")[: a1 - a0, : b1 - b0]
            out[a0 - y0 : a1 - y0, b0 - x0 : b1 - x0] = block
        self.timing["predict_s"] = time.perf_counter() - t0
        return out

    def segmenter(self) -> ForestSegmenter:
        """The current forest with its config (normalisation, classes, halo): save it as a bundle, or
        segment a mosaic with it."""
        if self.booster is None:
            raise NcmError("paint strokes of at least two classes first")
        cfg = SegmenterConfig(**{**self.config.__dict__, "engine_config": dict(self.config.engine_config)})
        cfg.engine_config["n_features"] = len(feature_names(cfg.channels, self.sigmas, self.groups))
        return ForestSegmenter(cfg, self.booster)
