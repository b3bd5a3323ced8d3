"""The forest segmenter: gradient-boosted trees (LightGBM) on multiscale pixel features.

A pixel's class comes from :func:`~ncm_core.models.pixel_features.pixel_features` of the normalised image
around it, so it depends on the pixels within ``config.halo`` (the largest filter's reach) only: windows
cut with that halo give exactly the whole image's result. The bundle holds ``config.json`` and
``forest.txt``, LightGBM's own text model; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.models.pixel_features import GROUPS, feature_halo, feature_names, pixel_features
from ncm_core.models.segmenter_config import CONFIG, SegmenterConfig, write_config

MODEL = "forest.txt"


def sample_pixels(
    features: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    n_classes: int,
    max_per_class: int = 20000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labelled pixels' features ``X`` ``(n, F)`` and classes ``y`` (0-based), at most ``max_per_class`` a
    class (an even random sample where a class has more). ``labels``: 0 unlabelled, k = class k."""
    rng = np.random.default_rng([seed, 5])
    per_class: list[list[np.ndarray]] = [[] for _ in range(n_classes)]
    for f, lab in zip(features, labels, strict=True):
        flat = f.reshape(f.shape[0], -1)
        lab = lab.ravel()
        for k in range(n_classes):
            idx = np.flatnonzero(lab == k + 1)
            if len(idx):
                per_class[k].append(flat[:, idx].T)
    xs, ys = [], []
    for k, parts in enumerate(per_class):
        if not parts:
            continue
        x = np.concatenate(parts)
        if len(x) > max_per_class:
            x = x[np.sort(rng.choice(len(x), max_per_class, replace=False))]
        xs.append(x)
        ys.append(np.full(len(x), k, np.int32))
    return np.ascontiguousarray(np.concatenate(xs), np.float32), np.concatenate(ys)


def fit_booster(x: np.ndarray, y: np.ndarray, n_classes: int, settings: dict[str, Any], seed: int = 0) -> Any:
    """A LightGBM multiclass booster on ``x``, ``y``, classes weighted to count equally; ``settings`` as
    :meth:`~ncm_core.training.segment_config.SegmentConfig.forest_settings`."""
    import lightgbm as lgb

    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    weight = (len(y) / (present * np.maximum(counts, 1)))[y]
    params = {
        "objective": "multiclass",
        "num_class": n_classes,
        "num_leaves": int(settings.get("leaves", 31)),
        "learning_rate": float(settings.get("learning_rate", 0.1)),
        "min_data_in_leaf": 10,
        "max_bin": 63,
        "num_threads": int(settings.get("threads", 2)),
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbose": -1,
    }
    data = lgb.Dataset(x, y, weight=weight, free_raw_data=True)
    return lgb.train(params, data, num_boost_round=int(settings.get("trees", 100)))


class ForestSegmenter:
    """A :class:`~ncm_core.models.segmenter.Segmenter` of boosted trees on multiscale features."""

    def __init__(self, config: SegmenterConfig, booster: Any) -> None:
        self.config = config
        self.booster = booster

    @property
    def sigmas(self) -> list[float]:
        return [float(s) for s in self.config.engine_config.get("sigmas", (1, 2, 4, 8, 16))]

    @property
    def groups(self) -> list[str]:
        return list(self.config.engine_config.get("features", GROUPS))

    @property
    def threads(self) -> int:
        return int(self.config.engine_config.get("threads", 2))

    def features(self, window: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` normalised window -> ``(F, H, W)`` features."""
        return pixel_features(window, self.sigmas, self.groups)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """``(F, H, W)`` features -> ``(K, H, W)`` float32 class probabilities."""
        f, h, w = features.shape
        x = np.ascontiguousarray(features.reshape(f, -1).T)
        p = self.booster.predict(x, num_threads=self.threads)
        return np.ascontiguousarray(np.asarray(p, np.float32).T.reshape(-1, h, w))

    def predict_proba(self, windows: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` normalised windows -> ``(N, K, H, W)`` class probabilities."""
        return np.stack([self.predict_features(self.features(w)) for w in np.asarray(windows, np.float32)])

    def predict_image(self, raw: np.ndarray) -> np.ndarray:
        """A whole raw ``(C, H, W)`` image (or ``(H, W)``) -> ``(H, W)`` class index (0-based)."""
        raw = raw[None] if raw.ndim == 2 else raw
        return self.predict_features(self.features(self.config.normalize_image(raw))).argmax(0)

    def save(self, path: str | Path) -> Path:
        path = write_config(path, self.config)
        (path / MODEL).write_text(self.booster.model_to_string())
        return path

    @classmethod
    def load(cls, path: str | Path, config: SegmenterConfig | None = None) -> ForestSegmenter:
        import lightgbm as lgb

        from ncm_core.models.segmenter_config import read_segmenter_config

        path = Path(path)
        config = config or read_segmenter_config(path)
        model = path / MODEL
        if not model.is_file():
            raise NcmError(f"forest bundle without its model ({MODEL} is missing)", path)
        try:
            booster = lgb.Booster(model_str=model.read_text())
        except Exception as exc:
            raise NcmError(f"unreadable forest model ({type(exc).__name__}: {exc})", model) from None
        if booster.num_model_per_iteration() != len(config.classes):
            raise NcmError(
                f"the forest predicts {booster.num_model_per_iteration()} classes, {CONFIG} names "
                f"{len(config.classes)}",
                path,
            )
        return cls(config, booster)


def train_forest(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    config: SegmenterConfig,
    *,
    seed: int = 0,
    cancel: Callable[[], bool] | None = None,
) -> ForestSegmenter:
    """Fit a forest on normalised ``(C, H, W)`` images and their label images (0 unlabelled, k = class k).

    ``config`` gives the classes, normalisation and ``engine_config`` (sigmas, features, trees, leaves,
    learning_rate, max_per_class, threads); its ``halo`` is set from the sigmas. ``cancel()`` True stops
    between images' features."""
    settings = dict(config.engine_config)
    sigmas = [float(s) for s in settings.setdefault("sigmas", [1.0, 2.0, 4.0, 8.0, 16.0])]
    groups = list(settings.setdefault("features", list(GROUPS)))
    config.engine_config = settings
    config.halo = feature_halo(sigmas)
    config.engine_config["n_features"] = len(feature_names(config.channels, sigmas, groups))
    k = len(config.classes)
    cap = int(settings.get("max_per_class", 20000))
    xs, ys = [], []
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        if cancel is not None and cancel():
            from ncm_core.errors import Cancelled

            raise Cancelled()
        if not (lab > 0).any():
            continue
        x, y = sample_pixels([pixel_features(img, sigmas, groups)], [lab], k, cap, seed + i)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    keep = np.concatenate([_cap(np.flatnonzero(y == c), cap, seed) for c in range(k)])
    return ForestSegmenter(config, fit_booster(x[keep], y[keep], k, settings, seed))


def _cap(idx: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` of the indices ``idx``, an even random sample (sorted)."""
    if len(idx) <= cap:
        return idx
    return np.sort(np.random.default_rng([seed, 6]).choice(idx, cap, replace=False))
