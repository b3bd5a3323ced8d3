"""SEM generalisation benchmark: held-out frames and held-out *sessions*, three recipes in one run.

    make bench-sem        # or: .venv/bin/python benchmarks/sem_sessions.py [--quick]

1. Synthetic SEM frames imaged in sessions (:mod:`ncm_core.data.synth_sessions`): each class in two
   training sessions with their own brightness, contrast, gamma, focus, stigmation, noise, JPEG quality
   and info-bar text, imbalanced frame counts, particle sizes that overlap between compositions; and a
   third session of every class, written apart and never seen in training (held-out sessions).
2. Whole frames of the training sessions split train/validation/test before cropping (held-out frames).
3. Three recipes, trained and evaluated in this run on the same frames:
   * **current**: the recipe before this benchmark (``recipe="basic"``), crops at the input size;
   * **new**: ``recipe="generalise"`` (percentile standardisation, intensity/blur/noise/JPEG/scale
     augmentation, class-balanced sampling, label smoothing, EMA, test-time augmentation) on crops of
     ``--context`` micrometres downscaled to the input size;
   * **SSL + new**: the same after self-supervised pretraining (``ncm pretrain``) on the training
     frames (no labels).
4. Crop and frame accuracy on held-out frames and on held-out sessions, the spread of validation
   accuracy over the last 3 epochs, pretraining throughput against a supervised epoch, the time of it all.

Writes its section of docs/benchmarks.md and docs/images/sem-sessions*.png.
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


def spread(history: list[dict], last: int = 3) -> float:
    """Max - min of validation accuracy over the last ``last`` epochs, in points."""
    acc = [h["val_accuracy"] for h in history if h.get("val_accuracy") is not None][-last:]
    return 100 * (max(acc) - min(acc)) if acc else float("nan")


def scores(bundle: Path, tiles: Path, sessions: Path, work: Path) -> dict[str, float]:
    """Crop and frame accuracy on the tile set's test split (held-out frames) and on the held-out sessions."""
    from ncm_core.evaluation.evaluate import evaluate

    f = evaluate(bundle, tiles, split="test", out=work / "eval-frames")
    s = evaluate(bundle, sessions, out=work / "eval-sessions")
    return {
        "frames_crops": f["tiles"]["accuracy"],
        "frames_frames": f["images"]["accuracy"],
        "sessions_crops": s["tiles"]["accuracy"],
        "sessions_frames": s["images"]["accuracy"],
        "sessions_crops_n": s["tiles"]["n"],
        "sessions_frames_n": s["images"]["n"],
        "frames_crops_n": f["tiles"]["n"],
        "frames_frames_n": f["images"]["n"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--input", type=int, default=64, help="network input, px")
    ap.add_argument("--context", type=float, default=9.6, help="crop context of the new recipe, micrometres")
    ap.add_argument("--frames", type=int, default=6, help="most frames per class and session")
    ap.add_argument("--size", type=int, default=384, help="frame size, px (without the info bar)")
    ap.add_argument("--per-frame", type=int, default=48, help="training crops per frame")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ssl-epochs", type=int, default=40)
    ap.add_argument("--ssl-method", default="byol")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--figures", default=str(ROOT / "docs" / "images"))
    ap.add_argument("--json", help="also write the numbers to this file")
    a = ap.parse_args()
    if a.quick:
        a.frames, a.size, a.per_frame, a.epochs, a.ssl_epochs = 2, 192, 8, 1, 1

    from ncm_core.data.crops import build_crops
    from ncm_core.data.synth import SEM_PIXEL_SIZE_UM
    from ncm_core.data.synth_sessions import write_sem_sessions
    from ncm_core.training.classify import train
    from ncm_core.training.pretrain import pretrain
    from ncm_core.viz.figures import training_curves_figure

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine

    work = Path(tempfile.mkdtemp(prefix="ncm-bench-sessions-"))
    ctx_px = int(round(a.context / SEM_PIXEL_SIZE_UM))
    common = dict(architecture=a.arch, input_size=a.input, epochs=a.epochs, batch_size=32, lr=2e-3, seed=0)
    common["device"] = a.device
    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    try:
        t0 = time.monotonic()
        frames = write_sem_sessions(work / "frames", (0, 1), a.frames, (a.size, a.size), seed=0)
        held = write_sem_sessions(work / "new-sessions", (2,), a.frames, (a.size, a.size), seed=0)
        crop = dict(per_frame=a.per_frame, val_fraction=0.2, test_fraction=0.2, seed=0)
        ts_small = build_crops(frames, work / "crops-input", size=a.input, **crop)
        ts_ctx = build_crops(frames, work / "crops-context", size=ctx_px, **crop)
        times["data"] = time.monotonic() - t0
        n_frames = sum(1 for _ in frames.rglob("*.jpg"))
        print(f"data {times['data']:.0f} s: {n_frames} training-session frames; {ts_ctx.counts()}", flush=True)

        runs = {}
        t = time.monotonic()
        runs["current"] = train(ts_small.root, work / "m-current", recipe="basic", **common)
        times["current"] = time.monotonic() - t
        t = time.monotonic()
        runs["new"] = train(ts_ctx.root, work / "m-new", recipe="generalise", **common)
        times["new"] = time.monotonic() - t
        t = time.monotonic()
        # pretraining sees the frames of the training split only (no labels, no held-out frame or session)
        train_frames = work / "ssl-frames"
        for g in ts_ctx.groups("train"):
            src = frames / g
            dst = train_frames / g
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
        p = pretrain(
            train_frames,
            work / "ssl",
            architecture=a.arch,
            method=a.ssl_method,
            epochs=a.ssl_epochs,
            input_size=a.input,
            crop_size=ctx_px,
            device=a.device,
            seed=0,
        )
        times["pretrain"] = time.monotonic() - t
        t = time.monotonic()
        runs["ssl"] = train(ts_ctx.root, work / "m-ssl", recipe="generalise", pretrained=p.backbone, **common)
        times["ssl"] = time.monotonic() - t
        for k, r in runs.items():
            t = time.monotonic()
            results[k] = scores(r.bundle, ts_ctx.root if k != "current" else ts_small.root, held, work / k)
            results[k]["spread"] = spread(r.history)
            results[k]["best_epoch"] = r.best_epoch
            times[f"eval-{k}"] = time.monotonic() - t
            print(k, json.dumps(results[k]), flush=True)
        sup_rate = float(np.median([h["tiles"] / h["train_seconds"] for h in runs["ssl"].history]))
        ssl_rate = float(p.images_per_second)
        figs = Path(a.figures)
        figs.mkdir(parents=True, exist_ok=True)
        if not a.quick:
            for k, r in runs.items():
                training_curves_figure(r.history, figs / f"sem-sessions-{k}.png", title=f"{k} recipe, {a.arch}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total = sum(v for k, v in times.items())
    names = {"current": "current recipe", "new": "new recipe", "ssl": "SSL + new recipe"}
    rows = "".join(
        f"| {names[k]} | {r['frames_crops']:.1%} | {r['frames_frames']:.1%} | {r['sessions_crops']:.1%} | "
        f"{r['sessions_frames']:.1%} | {r['spread']:.1f} | {times[k] / 60:.1f} |\n"
        for k, r in results.items()
    )
    gain = 100 * (results["ssl"]["sessions_crops"] - results["current"]["sessions_crops"])
    text = f"""## SEM generalisation: held-out frames and held-out sessions

Written by `make bench-sem` (`benchmarks/sem_sessions.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine()}
- Data: 12 classes, each imaged in 2 training sessions and 1 held-out session (its own brightness,
  contrast, gamma, focus, stigmation, noise, JPEG quality 35-91 and info-bar text), up to {a.frames} frames
  per class and session, imbalanced 3:1, {a.size} x {a.size} px + 32-row info bar, particle sizes overlapping
  between compositions ({n_frames} training-session frames, {results["current"]["sessions_frames_n"]}
  held-out-session frames). Training-session frames split train/validation/test by whole frames.
- Model: {a.arch} from scratch (nothing downloaded), input {a.input} px, {a.epochs} epochs, batch 32, AdamW lr 2e-3.
  Current recipe: {a.input} px crops, flips and turns. New recipe: {a.context:g} um ({ctx_px} px) crops downscaled
  to {a.input} px, `recipe="generalise"`. SSL: {a.ssl_method}, {a.ssl_epochs} epochs on the training frames.

| recipe | held-out frames: crops | frames | held-out sessions: crops | frames | val. spread, last 3 epochs (points) | training time (min) |
|---|---|---|---|---|---|---|
{rows}
- SSL + new recipe against the current recipe on held-out-session crops: {gain:+.1f} points (goal >= +15;
  goals: >= 95 % crops and >= 99 % frames on held-out sessions, spread <= 2 points).
- Pretraining throughput: {ssl_rate:.0f} images/s against {sup_rate:.0f} tiles/s for a supervised epoch of
  the same backbone ({ssl_rate / sup_rate:.2f}); pretraining took {times["pretrain"] / 60:.1f} min.
- Whole benchmark: {total / 60:.1f} min (goal < 40 min on 2 CPU cores).

Figures: `docs/images/sem-sessions-current.png`, `sem-sessions-new.png`, `sem-sessions-ssl.png` (training curves).
"""
    if not a.quick:
        write_section(Path(a.out), "sem-sessions", text)
    print(text)
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "times": times}, indent=2))


if __name__ == "__main__":
    main()
