"""Self-supervised pretraining benchmark: throughput against supervised training, and the k-NN gain.

    make bench-pretrain   # or: .venv/bin/python benchmarks/pretraining.py [--quick] [--device cuda]

On synthetic SEM frames (12 classes, information bar left out by detection), a ResNet-10t is pretrained
with each method (``ncm_core.training.pretrain.pretrain``) on crops of ``--crop`` px given to the network
at ``--input`` px; a held-out labelled set of frames (other seeds) is the k-NN probe, scored before and
after pretraining. The same backbone is then trained with labels for the same number of epochs on the
same crops (``ncm_core.training.classify.train``, no validation, no OOD fit) to compare crops per second:
a pretraining step runs the network on two views of each crop (three passes for BYOL's momentum copy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--methods", default="simclr,byol")
    ap.add_argument("--frames", type=int, default=3, help="unlabelled frames per class")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--input", type=int, default=112)
    ap.add_argument("--crops", type=int, default=8, help="crops per frame per epoch")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    from run import machine

    from ncm_core.data import synth
    from ncm_core.training.classify import train
    from ncm_core.training.pretrain import pretrain

    classes, shape, bar = synth.CLASS_NAMES, (512 + 48, 512), 48
    if a.quick:
        classes, shape, bar = classes[:3], (144, 128), 16
        a.epochs, a.crop, a.input, a.crops, a.batch, a.frames = 2, 64, 48, 8, 32, 4
    work = Path(tempfile.mkdtemp(prefix="ncm-bench-pretrain-"))
    rows, figures = [], {}
    try:
        frames = synth.write_sem_dataset(work / "frames", a.frames, shape, info_bar=bar, seed=0, classes=classes)
        probe = synth.write_sem_dataset(work / "probe", 3, shape, info_bar=bar, seed=7, classes=classes)
        common = dict(architecture=a.arch, crops_per_image=a.crops, batch_size=a.batch, device=a.device, seed=0)
        for m in [m.strip() for m in a.methods.split(",") if m.strip()]:
            t = time.monotonic()
            r = pretrain(
                frames, work / m, method=m, epochs=a.epochs, crop_size=a.crop, input_size=a.input, probe=probe, **common
            )
            figures[m] = {
                "crops_per_second": r.images_per_second,
                "knn_initial": r.knn_initial,
                "knn": r.knn,
                "knn_per_epoch": [h["knn_accuracy"] for h in r.history],
                "seconds": time.monotonic() - t,
            }
            rows.append(
                f"| {m} pretraining | {r.images_per_second:.1f} | {r.knn_initial:.1%} -> {r.knn:.1%} "
                f"({(r.knn - r.knn_initial) * 100:+.1f} points) | {figures[m]['seconds']:.0f} s |"
            )
        t = time.monotonic()
        s = train(
            frames,
            work / "supervised",
            tile_size=a.crop,
            input_size=a.input,
            epochs=a.epochs,
            val_fraction=0,
            ood=False,
            **common,
        )
        sup = sum(h["tiles"] for h in s.history) / sum(h["train_seconds"] for h in s.history)
        figures["supervised"] = {"crops_per_second": sup, "seconds": time.monotonic() - t}
        rows.append(f"| supervised training (labels) | {sup:.1f} | | {figures['supervised']['seconds']:.0f} s |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = f"""## Self-supervised pretraining: throughput and k-NN gain

Written by `make bench-pretrain` (`benchmarks/pretraining.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine()}; device {a.device}; load average at the start {os.getloadavg()[0]:.1f} (other
  work on a shared machine lowers every rate alike: compare the rates with each other)
- Data: synthetic SEM frames, {len(classes)} classes x {a.frames} frames of {shape[1]}x{shape[0]} px (info bar
  detected and left out), {a.crops} crops of {a.crop} px per frame and epoch, given to {a.arch} at {a.input} px,
  batch {a.batch}, {a.epochs} epochs; k-NN probe: {len(classes)} classes x 3 other frames, 8 crops each,
  leave-one-frame-out k-NN (k = 10) on the backbone's pooled features, before and after pretraining

| run | crops / s | k-NN accuracy (random init -> pretrained) | wall time |
|---|---|---|---|
{chr(10).join(rows)}
"""
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    if not a.quick:
        write_section(Path(a.out), "pretraining", text)
    print(text)


if __name__ == "__main__":
    main()
