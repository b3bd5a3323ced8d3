"""Learning curve of a regression report: MAPE on held-out mosaics against the number of training sections.

On each grouped fold, the descriptor model (:mod:`ncm_core.training.regression_models`: ridge on the
standardised logarithms of the descriptors) and the training mean are fitted on random subsets
of ``n`` of the fold's training sections (all their crops), ``repeats`` times per ``n``, and scored by
MAPE per held-out mosaic. It costs well under a second per point, so every report has it; a CNN's
curve costs a training run per point (``benchmarks/rate_capability.py`` draws one for the benchmark).
A curve still falling at the right end says that more sections would help.
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


def write_learning_curve(rows: list[dict[str, Any]], out: str | Path) -> None:
    """``out/learning_curve.csv`` and ``out/learning_curve.png``."""
    from ncm_core.evaluation.evaluate import write_rows
    from ncm_core.viz.regression import learning_curve_figure

    write_rows(Path(out) / "learning_curve.csv", rows)
    learning_curve_figure(rows, Path(out) / "learning_curve.png")
