"""SEM classification benchmark: 12 classes, frames held out, accuracy and training throughput.

    make bench-sem-frames # or: .venv/bin/python benchmarks/sem_classification.py [--quick]

1. Synthetic SEM frames of the 12 NCM classes (composition x state).
2. ``build_crops``: frames split train/validation/test (whole frames), then random crops.
3. ``train`` on the tile set, on the CPU cores this machine has.
4. ``evaluate`` on the test frames' crops: tile and frame accuracy, composition-only and
   state-only accuracy, the confusion matrix (docs/images/sem-confusion.png).
5. Training throughput of ``train`` next to a plain timm/PyTorch loop on the same tiles
   (tiles already converted to one tensor, no augmentation, no validation), measured in this run.

Writes its section of docs/benchmarks.md; the tutorial docs/sem-classification.md shows the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def plain_loop_rate(x: np.ndarray, y: np.ndarray, arch: str, batch: int, lr: float, n_classes: int) -> float:
    """Tiles/s of the simplest timm training loop: one tensor in memory, model, AdamW, cross-entropy."""
    import timm
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=n_classes, in_chans=1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    xt = torch.from_numpy(x.astype(np.float32) / 255.0)[:, None]
    yt = torch.from_numpy(y)
    model.train()
    t = time.perf_counter()
    for k in range(0, len(xt), batch):
        loss = F.cross_entropy(model(xt[k : k + batch]), yt[k : k + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return len(xt) / (time.perf_counter() - t)


def ood_check(bundle, size: int) -> dict[str, float]:
    """Share of tiles flagged out of distribution on images the model has never seen the like of."""
    from ncm_core.data import synth
    from ncm_core.data.datasets import random_crops
    from ncm_core.inference.predict import classify_tensor
    from ncm_core.models.bundle import load_bundle
    from ncm_core.models.preprocess import tiles_to_tensor

    b = load_bundle(bundle)
    rng = np.random.default_rng(0)
    lm = synth.cross_section(0.35, (600, 900), seed=0).image.mean(-1).astype(np.uint8)
    foreign = {
        "light-microscopy cross-section (grey)": lm,
        "SEM frame at 2x the training magnification (NCM622, 100 cycles)": np.kron(
            synth.sem_frame("NCM622", "cycled100", (256, 256), info_bar=0, seed=77), np.ones((2, 2), np.uint8)
        ),
        "uniform noise": rng.integers(0, 255, (512, 512)).astype(np.uint8),
    }
    out = {}
    for name, img in foreign.items():
        tiles = random_crops([img], [0], size, 256, rng, False)[0]
        _, ratio = classify_tensor(b, tiles_to_tensor(tiles, b.config.input), ood=True)
        out[name] = float((ratio > 1).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--size", type=int, default=96, help="crop size in pixels")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--frames", type=int, default=10, help="frames per class")
    ap.add_argument("--per-frame", type=int, default=96, help="crops per frame")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--figures", default=str(ROOT / "docs" / "images"))
    a = ap.parse_args()
    if a.quick:
        a.frames, a.per_frame, a.epochs, a.size = 3, 8, 1, 32

    from ncm_core.data import synth
    from ncm_core.data.crops import build_crops
    from ncm_core.evaluation.evaluate import evaluate
    from ncm_core.training.classify import train
    from ncm_core.viz.figures import confusion_matrix_figure, training_curves_figure

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="ncm-bench-sem-"))
    try:
        t0 = time.monotonic()
        frames = synth.write_sem_dataset(work / "frames", a.frames, (512 + 32, 512), info_bar=32, seed=0)
        t_data = time.monotonic() - t0
        t1 = time.monotonic()
        ts = build_crops(
            frames,
            work / "crops",
            size=a.size,
            per_frame=a.per_frame,
            val_fraction=0.2,
            test_fraction=0.2,
            exclude_rows=(-32, None),
            seed=0,
        )
        t_crops = time.monotonic() - t1
        print(f"data {t_data:.0f} s, crops {t_crops:.0f} s: {ts.counts()}", flush=True)
        x, y, _ = ts.load("train")
        plain = [plain_loop_rate(x, y, a.arch, 32, 2e-3, 12)]
        t2 = time.monotonic()
        r = train(
            ts.root,
            work / "model",
            architecture=a.arch,
            epochs=a.epochs,
            batch_size=32,
            lr=2e-3,
            optimizer="adamw",
            seed=0,
            progress=None,
        )
        t_train = time.monotonic() - t2
        plain.append(plain_loop_rate(x, y, a.arch, 32, 2e-3, 12))
        print(f"trained {t_train:.0f} s, best val {r.best_val_accuracy:.3f} at epoch {r.best_epoch}", flush=True)
        t3 = time.monotonic()
        m = evaluate(r.bundle, ts.root, split="test", out=work / "eval")
        t_eval = time.monotonic() - t3
        ood_rows = ood_check(r.bundle, a.size)
        ours = float(np.median([h["tiles"] / h["train_seconds"] for h in r.history]))
        plain_rate = float(np.mean(plain))
        figs = Path(a.figures)
        figs.mkdir(parents=True, exist_ok=True)
        tm = m["tiles"]
        confusion_matrix_figure(
            tm["confusion_matrix"],
            tm["class_names"],
            figs / "sem-confusion.png",
            title=f"Test-frame crops: accuracy {tm['accuracy']:.1%} (n = {tm['n']})",
        )
        training_curves_figure(r.history, figs / "sem-training.png", title=f"{a.arch}, {a.size} px crops")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = t_data + t_crops + t_train
    counts = {s: sum(v.values()) for s, v in ts.counts().items()}
    ood_table = "".join(f"| Out-of-distribution flags: {k} | {v:.1%} | high |\n" for k, v in ood_rows.items())
    text = f"""## SEM classification (12 classes, held-out frames)

Written by `make bench-sem-frames` (`benchmarks/sem_classification.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine()}
- Data: {a.frames} synthetic SEM frames per class (512 x 512 px + 32-row info bar); whole frames split
  train/validation/test = {len(ts.groups("train"))}/{len(ts.groups("val"))}/{len(ts.groups("test"))} (all classes) before cropping;
  {a.per_frame} random {a.size} px crops per frame outside the info bar ({counts.get("train", 0)} train,
  {counts.get("val", 0)} validation, {counts.get("test", 0)} test crops)
- Model: {a.arch} from scratch (no pretrained weights: nothing is downloaded), input {a.size} px, AdamW lr 2e-3,
  cosine schedule, batch 32, flips and 90-degree turns, {a.epochs} epochs, best epoch by validation accuracy
  ({r.best_epoch})

| measure | value | goal |
|---|---|---|
| Test accuracy, crops of held-out frames | {tm["accuracy"]:.1%} ({tm["n"]} crops) | >= 95 % |
| Test accuracy, held-out frames (mean crop probability) | {m["images"]["accuracy"]:.1%} ({m["images"]["n"]} frames) | |
| Composition-only / state-only accuracy (crops) | {tm.get("composition_accuracy", float("nan")):.1%} / {tm.get("state_accuracy", float("nan")):.1%} | |
| Balanced accuracy (crops) | {tm["balanced_accuracy"]:.1%} | |
| Out-of-distribution flags on test crops (threshold: 99th percentile of validation) | {m.get("ood_fraction", float("nan")):.1%} | about 1 % |
| Time: sample data + crops + training (2 CPU cores) | {total / 60:.1f} min ({t_data:.0f} + {t_crops:.0f} + {t_train:.0f} s); evaluation {t_eval:.0f} s | <= 20 min |
{ood_table}| Training throughput, `train` vs a plain timm loop on the same tiles | {ours:.0f} vs {plain_rate:.0f} tiles/s | {ours / plain_rate:.2f} |

The plain loop is the most any trainer can do on these tiles (tiles already one float tensor in memory, no
augmentation, no validation, no checkpoint); `train` converts, resizes and augments each batch from the
uint8 tiles and writes a checkpoint every epoch. Figures: `docs/images/sem-confusion.png`,
`docs/images/sem-training.png`.
"""
    if not a.quick:
        write_section(Path(a.out), "sem-classification", text)
    print(text)
    print(json.dumps({"test_accuracy": tm["accuracy"], "minutes": total / 60, "ratio": ours / plain_rate}))


if __name__ == "__main__":
    main()
