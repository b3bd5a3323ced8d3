"""Out-of-distribution warning: is a tile unlike anything the model was trained on?

A classifier answers with a class for any input, often confidently, also for
a material it has never seen. The detector here is the Mahalanobis distance of
a tile's penultimate features (timm's ``forward_head(..., pre_logits=True)``)
to the nearest class mean, with one shared covariance (Lee et al., NeurIPS
2018), estimated with scikit-learn's Ledoit-Wolf shrinkage so that it stays
well conditioned with few tiles and many features. It is fitted after
training on the training tiles; the threshold is a high quantile (99 %) of the
scores of the held-out validation tiles, i.e. about 1 % of in-distribution
tiles are flagged. Predictions store the score divided by that threshold, so
values above 1 are flagged. Without enough validation tiles (a model trained
from a few annotated tiles), the threshold comes from out-of-fold scores of the
training tiles (each scored by a detector fitted without it): in hundreds of
feature dimensions a tile the detector was fitted on lies much closer to its
class mean than any new tile of the same material, so a threshold from the
fitted tiles themselves would flag nearly every tile of a new image.

The statistics are tensors in the bundle's ``extra.safetensors``; the method
and threshold are in ``config.json`` under ``ood``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

METHOD = "mahalanobis-pre-logits"

#: share of flagged tiles or crops above which the CLI and the widgets warn that an image is unlike the
#: training data (about 1 % of in-distribution tiles are flagged, so 20 % is far outside that)
OOD_WARN_FRACTION = 0.2


def forward_with_features(model: Any, x: Any) -> tuple[Any, Any]:
    """Logits and penultimate (pre-logits) features of a timm model in one trunk pass."""
    f = model.forward_features(x)
    return model.forward_head(f), model.forward_head(f, pre_logits=True)


def tile_features(model: Any, tiles: np.ndarray, spec: Any, device: Any, batch: int = 64) -> np.ndarray:
    """Penultimate features ``(N, D)`` of tiles."""
    import torch

    from ncm_core.models.preprocess import tiles_to_tensor

    model.eval()
    out = []
    with torch.inference_mode():
        for k in range(0, len(tiles), batch):
            _, f = forward_with_features(model, tiles_to_tensor(tiles[k : k + batch], spec, device))
            out.append(f.float().flatten(1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def _scores(f: Any, means: Any, transform: Any) -> Any:
    """Squared Mahalanobis distance to the nearest class mean.

    With the precision matrix factored as ``P = L L^T``, the distance is the
    Euclidean one between ``f L`` and the class means mapped the same way
    (``means`` here), computed without the ``a^2 - 2ab + b^2`` shortcut that
    loses precision in float32.
    """
    import torch

    d = torch.cdist(f @ transform, means, compute_mode="donot_use_mm_for_euclid_dist")
    return d.min(1).values ** 2


def fit_ood(
    model: Any,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    spec: Any,
    device: Any,
    n_classes: int,
    quantile: float = 0.99,
    max_tiles: int = 20000,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the detector; returns the config entry and the tensors to store in the bundle."""
    import torch

    rng = np.random.default_rng(0)
    if len(x_train) > max_tiles:  # the statistics settle long before this; keeps memory bounded
        pick = np.sort(rng.choice(len(x_train), max_tiles, replace=False))
        x_train, y_train = x_train[pick], y_train[pick]
    if len(x_val) > max_tiles // 4:
        x_val = x_val[np.sort(rng.choice(len(x_val), max_tiles // 4, replace=False))]
    f = tile_features(model, x_train, spec, device)
    t_means, t_l, shrinkage = _fit(f, y_train, n_classes)
    if len(x_val) >= MIN_CALIBRATION:
        ref = _scores(torch.as_tensor(tile_features(model, x_val, spec, device), dtype=torch.float32), t_means, t_l)
        calibrated_on = "validation tiles"
    else:
        ref = _out_of_fold(f, y_train, n_classes)
        calibrated_on = "training tiles, out of fold"
    threshold = float(np.quantile(ref.numpy(), quantile))
    cfg = {
        "method": METHOD,
        "threshold": threshold,
        "quantile": quantile,
        "calibrated_on": calibrated_on,
        "n_fit": int(len(x_train)),
        "shrinkage": shrinkage,
    }
    return cfg, {"ood.means": t_means, "ood.transform": t_l}


MIN_CALIBRATION = 20  # validation tiles below which the threshold comes from out-of-fold training scores


def _fit(f: np.ndarray, y: np.ndarray, n_classes: int) -> tuple[Any, Any, float]:
    """Class means and the Cholesky factor of the shared precision (Ledoit-Wolf), both mapped for
    :func:`_scores`, and the shrinkage."""
    import torch
    from sklearn.covariance import LedoitWolf

    present = [c for c in range(n_classes) if (y == c).any()]
    means = np.zeros((n_classes, f.shape[1]))  # rows of absent classes stay unused
    for c in present:
        means[c] = f[y == c].mean(0)
    lw = LedoitWolf(assume_centered=True).fit(f - means[y])
    chol = np.linalg.cholesky(lw.precision_)  # P = L L^T
    t_means = torch.as_tensor(means[present] @ chol, dtype=torch.float32)  # only classes with tiles
    return t_means, torch.as_tensor(chol, dtype=torch.float32), float(lw.shrinkage_)


def _out_of_fold(f: np.ndarray, y: np.ndarray, n_classes: int, folds: int = 5) -> Any:
    """Each training tile's score under a detector fitted on the other folds (scikit-learn's
    StratifiedKFold where every class has enough tiles, else KFold)."""
    import torch
    from sklearn.model_selection import KFold, StratifiedKFold

    k = max(2, min(folds, len(f)))
    counts = np.bincount(y, minlength=n_classes)
    split = (
        StratifiedKFold(k, shuffle=True, random_state=0)
        if counts[counts > 0].min() >= k
        else KFold(k, shuffle=True, random_state=0)
    )
    out = torch.zeros(len(f))
    for fit, held in split.split(f, y):
        m, t, _ = _fit(f[fit], y[fit], n_classes)
        out[held] = _scores(torch.as_tensor(f[held], dtype=torch.float32), m, t)
    return out


def has_ood(bundle: Any) -> bool:
    return bool(bundle.config.ood) and "ood.means" in bundle.extra


def ood_ratio(bundle: Any, features: Any) -> Any:
    """Score / threshold for pre-logits ``features`` (torch, ``(N, D)``): above 1 = out of distribution."""
    means = bundle.extra["ood.means"].to(features.device)
    transform = bundle.extra["ood.transform"].to(features.device)
    return _scores(features.float().flatten(1), means, transform) / bundle.config.ood["threshold"]


def ood_ratio_array(bundle: Any, features: np.ndarray) -> np.ndarray:
    """:func:`ood_ratio` in numpy (float32, no PyTorch) for pre-logits ``features`` ``(N, D)``; the
    bundle's statistics may be numpy arrays (:func:`~ncm_core.models.bundle.config_bundle`) or tensors."""

    def arr(v: Any) -> np.ndarray:
        return np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float32)

    f = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    z = f @ arr(bundle.extra["ood.transform"])
    d2 = np.square(z[:, None, :] - arr(bundle.extra["ood.means"])[None]).sum(-1)  # (N, classes), no mm shortcut
    return (d2.min(1) / bundle.config.ood["threshold"]).astype(np.float32)
