"""Tuning benchmark: ASHA against training every configuration of a small grid to the full budget.

    make bench-tune       # or: .venv/bin/python benchmarks/tuning.py [--quick]

The same grid (learning rate x batch size) is searched twice on the same tile set of synthetic SEM
crops (12 classes, frames held out): once with every configuration trained for the full number of
epochs (no pruning), once with ASHA (Optuna's SuccessiveHalvingPruner) visiting the grid in the same
sampler order. Training is deterministic for a given configuration, so a configuration that ASHA
trains to the end reaches exactly the grid's value. Reported: the best validation accuracy of each,
their difference, and ASHA's epochs as a share of the grid's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def run(study_dir: Path, tiles: Path, grid: dict, epochs: int, pruner: str, reduction: int):
    import optuna

    from ncm_core.training.tune import tune

    space = {k: {"type": "categorical", "choices": v} for k, v in grid.items()}
    n = 1
    for v in grid.values():
        n *= len(v)
    t = time.monotonic()
    r = tune(
        tiles,
        study_dir,
        space=space,
        n_trials=n,
        max_epochs=epochs,
        min_epochs=1,
        reduction_factor=reduction,
        pruner=pruner,
        sampler=optuna.samplers.GridSampler(grid, seed=0),
        train_kwargs=dict(architecture="resnet10t", seed=0),
    )
    return r, time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--reduction", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    from ncm_core.data import synth
    from ncm_core.data.crops import build_crops

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    grid = {"lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], "batch_size": [16, 32]}
    frames, per_frame, size = 6, 32, 64
    if a.quick:
        grid, frames, per_frame, size, a.epochs = {"lr": [1e-3, 1e-2], "batch_size": [16]}, 3, 4, 32, 2
    work = Path(tempfile.mkdtemp(prefix="ncm-bench-tune-"))
    try:
        fr = synth.write_sem_dataset(work / "frames", frames, (256 + 32, 256), info_bar=32, seed=0)
        ts = build_crops(
            fr,
            work / "tiles",
            size=size,
            per_frame=per_frame,
            val_fraction=0.34,
            test_fraction=0.0,
            exclude_rows=(-32, None),
            seed=0,
        )
        full, t_full = run(work / "grid", ts.root, grid, a.epochs, "none", a.reduction)
        asha, t_asha = run(work / "asha", ts.root, grid, a.epochs, "asha", a.reduction)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n_cfg = len(grid["lr"]) * len(grid["batch_size"])
    gap = (full.best_value - asha.best_value) * 100
    share = asha.epochs_run / full.epochs_run
    text = f"""## Tuning: ASHA against a full grid

Written by `make bench-tune` (`benchmarks/tuning.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine()}
- Data: a tile set of synthetic SEM crops, 12 classes x {frames} frames ({size} px, {per_frame} crops per frame;
  whole frames held out for validation); ResNet-10t from scratch, AdamW, cosine schedule
- Grid: learning rate {grid["lr"]} x batch size {grid["batch_size"]} = {n_cfg} configurations, {a.epochs} epochs each
- ASHA: Optuna's SuccessiveHalvingPruner, minimum 1 epoch, reduction factor {a.reduction}, the same grid in the
  same order (GridSampler), trials one after another

| measure | full grid | ASHA | goal |
|---|---|---|---|
| Best validation accuracy | {full.best_value:.1%} ({json.dumps(full.best_params)}) | {asha.best_value:.1%} ({json.dumps(asha.best_params)}) | within 1 point: {gap:+.1f} points |
| Epochs trained | {full.epochs_run} | {asha.epochs_run} ({asha.n_complete} complete, {asha.n_pruned} pruned) | <= 40 %: {share:.0%} |
| Wall time | {t_full / 60:.1f} min | {t_asha / 60:.1f} min | ratio {t_asha / t_full:.2f} |
"""
    if not a.quick:
        write_section(Path(a.out), "tuning", text)
    print(text)


if __name__ == "__main__":
    main()
