"""Learning curve of a regression report: MAPE on held-out mosaics against the number of training sections.

On each grouped fold, the descriptor model (:mod:`ncm_core.training.regression_models`: ridge on the
standardised logarithms of the descriptors) and the training mean are fitted on random subsets
of ``n`` of the fold's training sections (all their crops), ``repeats`` times per ``n``, and scored by
MAPE per held-out mosaic. It costs well under a second per point, so every report has it.

A network's curve (:func:`network_learning_curve`, ``RegressConfig.curve`` ``cnn`` / ``hybrid``, CLI
``--learning-curve descriptors,cnn``) costs one training run per point: it is drawn on the first
:data:`NETWORK_FOLDS` folds with one random subset per count, each run stopping early on a grouped
validation share of its own subset, bundles kept under ``out/learning_curve/<model>/`` (a rerun reuses
them). A curve still falling at the right end says that more sections would help; a CNN curve above the
descriptor model's everywhere says that the images, at this number of sections, teach the network less
than porosity and thickness do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.evaluation.regression import regression_metrics


def section_counts(n_max: int, points: int = 5) -> list[int]:
    """About ``points`` section counts from 3 (or fewer when there are not 3) up to ``n_max``, evenly spaced."""
    lo = min(3, n_max)
    return sorted({int(round(v)) for v in np.linspace(lo, n_max, points)})


def descriptor_predict(feats: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The descriptor model fitted on ``train`` rows, predicting ``test`` rows (in the targets' units)."""
    import torch

    from ncm_core.models.hybrid import DescriptorRegressor
    from ncm_core.training.regression_models import fit_descriptor_head, target_scaling

    mean, std = target_scaling(y[train])
    head = fit_descriptor_head(DescriptorRegressor(y.shape[1], feats.shape[1]), feats[train], (y[train] - mean) / std)
    with torch.no_grad():
        z = head(None, torch.as_tensor(feats[test])).double().numpy()
    return z * std + mean


def learning_curve(
    feats: np.ndarray,
    y: np.ndarray,
    sources: Sequence[str],
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    names: Sequence[str],
    *,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows ``{model, sections, mape, mape_std, runs}``: MAPE per held-out mosaic of ``descriptors`` and
    ``mean`` fitted on ``sections`` training sections, mean and std over folds and repeats."""
    src = np.asarray(sources)
    rng = np.random.default_rng(seed)
    n_max = min(len(set(src[tr].tolist())) for tr, _ in splits)
    scores: dict[tuple[str, int], list[float]] = {}
    for tr, test in splits:
        secs = np.array(sorted(set(src[tr].tolist())))
        test_src = src[test]
        uniq = sorted(set(test_src.tolist()))
        ym = np.stack([y[test][test_src == u].mean(0) for u in uniq])
        for n in section_counts(n_max):
            for _ in range(repeats if n < len(secs) else 1):
                pick = np.flatnonzero(np.isin(src, rng.choice(secs, n, replace=False)))
                preds = {
                    "descriptors": descriptor_predict(feats, y, pick, test),
                    "mean": np.tile(y[pick].mean(0), (len(test), 1)),
                }
                for model, p in preds.items():
                    pm = np.stack([p[test_src == u].mean(0) for u in uniq])
                    scores.setdefault((model, n), []).append(regression_metrics(ym, pm, list(names))["mape"])
    return [
        {"model": m, "sections": n, "mape": float(np.mean(v)), "mape_std": float(np.std(v)), "runs": len(v)}
        for (m, n), v in sorted(scores.items())
    ]


#: folds a network's learning curve is drawn on (one training run per fold and point)
NETWORK_FOLDS = 2


def network_learning_curve(
    data: Any,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    groups: np.ndarray,
    config: Any,
    out: str | Path,
    models: Sequence[str],
    *,
    progress: Any = None,
    cancel: Any = None,
) -> list[dict[str, Any]]:
    """Rows like :func:`learning_curve`'s for the networks ``models`` (``cnn``, ``hybrid``), each trained on
    random subsets of ``n`` training sections of the first :data:`NETWORK_FOLDS` folds."""
    from ncm_core.progress import check_cancel, report
    from ncm_core.training.regression_data import grouped_split
    from ncm_core.training.regression_fit import fit_regressor
    from ncm_core.training.regression_models import predict_crops

    src = np.asarray(data.sources)
    rng = np.random.default_rng(config.seed)
    used = list(splits)[:NETWORK_FOLDS]
    n_max = min(len(set(src[tr].tolist())) for tr, _ in used)
    counts = section_counts(n_max)
    scores: dict[tuple[str, int], list[float]] = {}
    total, done = len(used) * len(counts) * len(models), 0
    for k, (tr_all, test) in enumerate(used, start=1):
        secs = np.array(sorted(set(src[tr_all].tolist())))
        test_src = src[test]
        uniq = sorted(set(test_src.tolist()))
        ym = np.stack([data.y[test][test_src == u].mean(0) for u in uniq])
        for n in counts:
            sub = tr_all[np.isin(src[tr_all], rng.choice(secs, n, replace=False))]
            frac = config.val_fraction if len(set(groups[sub].tolist())) >= 3 else 0.0  # too few to hold one out
            tr, va = grouped_split(groups[sub], frac, config.seed + k)
            for model in models:
                check_cancel(cancel)
                fdir = Path(out) / "learning_curve" / model / f"fold_{k}_n{n}"
                fit_regressor(data, sub[tr], sub[va], fdir, config, model=model, reuse=True)
                p = predict_crops(fdir, data, test)[0]
                pm = np.stack([p[test_src == u].mean(0) for u in uniq])
                scores.setdefault((model, n), []).append(regression_metrics(ym, pm, list(data.target_names))["mape"])
                done += 1
                report(progress, done, total, f"learning curve: {model}, {n} sections, fold {k}")
    return [
        {"model": m, "sections": n, "mape": float(np.mean(v)), "mape_std": float(np.std(v)), "runs": len(v)}
        for (m, n), v in sorted(scores.items())
    ]


def write_learning_curve(rows: list[dict[str, Any]], out: str | Path) -> None:
    """``out/learning_curve.csv`` and ``out/learning_curve.png``."""
    from ncm_core.evaluation.evaluate import write_rows
    from ncm_core.viz.regression import learning_curve_figure

    write_rows(Path(out) / "learning_curve.csv", rows)
    learning_curve_figure(rows, Path(out) / "learning_curve.png")
