"""Segmentation benchmark: engines trained from ~1 % painted strokes against thresholding, and live-mode speed.

    make bench-segment      # or: .venv/bin/python benchmarks/segment.py [--quick]

For each kind of synthetic electrode image (``sem``: pores, active particles, carbon-binder; ``section``:
resin-filled pores, particles, binder, collector; :mod:`ncm_core.data.synth_phases`), a training folder of
images with stroke labels covering about 1 % of the pixels is written, and held-out images with dense truth.
Each row of :data:`ROWS` turns the training folder into a function from a raw ``(C, H, W)`` image to a class
map; the mean IoU over the classes (dense truth of the held-out images) is reported side by side with
multi-Otsu thresholding (its bins given the classes in the best order for each image: an upper bound for
thresholding). A new engine is one more entry of ``ROWS``. The live rows time a retrain and repredict of a
1024 x 1024 view after one more stroke (:class:`ncm_core.training.live.LiveSegmenter`), at full resolution
and at stride 2 (a preview), on the threads given (default 2).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402

Predictor = Callable[[np.ndarray], np.ndarray]


def _raw(image: np.ndarray) -> np.ndarray:
    return (image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)).astype(np.float32)


def miou(pred: np.ndarray, truth: np.ndarray, k: int) -> tuple[float, list[float]]:
    per = [float(((pred == c) & (truth == c)).sum() / max(((pred == c) | (truth == c)).sum(), 1)) for c in range(k)]
    return float(np.mean(per)), per


def otsu_row(train: Path, work: Path, quick: bool, k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Multi-Otsu on the grey image, its bins mapped to the classes in the order best for this image."""
    from skimage.filters import threshold_multiotsu

    def predict(raw: np.ndarray, truth: np.ndarray) -> np.ndarray:
        grey = raw.mean(0)
        bins = np.digitize(grey, threshold_multiotsu(grey, k))
        best = max(itertools.permutations(range(k)), key=lambda p: miou(np.array(p)[bins], truth, k)[0])
        return np.array(best)[bins]

    return predict


def bundle_row(engine: str, quick_options: dict | None = None, **options) -> Callable:
    """A row for an engine of :func:`ncm_core.training.segment.train_segmenter` (its bundle predicts the whole
    image, :func:`ncm_core.inference.segment.predict_image`); ``quick_options`` replace options in --quick."""

    def row(train: Path, work: Path, quick: bool, k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        from ncm_core.inference.segment import predict_image
        from ncm_core.models.segmenter import load_segmenter
        from ncm_core.training.segment import train_segmenter

        t = time.monotonic()
        chosen = {**options, **(quick_options or {})} if quick else options
        bundle = train_segmenter(train, work / f"{engine}-{train.name}", engine=engine, **chosen)
        row.seconds = time.monotonic() - t
        seg = load_segmenter(bundle)
        return lambda raw, truth: predict_image(seg, raw).argmax(0)

    return row


#: the U-Net's training in this benchmark: sized for a few minutes on two CPU cores (a GPU, when present,
#: is used and faster); the defaults of ``ncm train --engine unet`` train longer
UNET = dict(epochs=8, batch_size=8, patch_size=128, lr=2e-3, patience=0)
UNET_QUICK = dict(epochs=2, patch_size=64)


#: name -> row: ``row(train folder, work folder, quick, classes)`` returns ``predict(raw, truth)``
ROWS: dict[str, Callable] = {
    "multi-Otsu (best class order)": otsu_row,
    "forest": bundle_row("forest"),
    "U-Net": bundle_row("unet", UNET_QUICK, **UNET),
}


def accuracy(work: Path, kind: str, n_train: int, n_test: int, size: int, quick: bool) -> dict:
    from ncm_core.data.synth_phases import PHASES, phase_sample, write_phase_dataset
    from ncm_core.errors import NcmError

    k = len(PHASES[kind])
    train = write_phase_dataset(work / f"train-{kind}", n_train, kind, (size, size), fraction=0.01, seed=1)
    tests = [phase_sample(kind, (size, size), seed=900 + i) for i in range(n_test)]
    out = {}
    for name, make in ROWS.items():
        try:
            predict = make(train, work, quick, k)
        except NcmError as exc:  # an engine this installation lacks
            out[name] = {"error": str(exc)}
            continue
        scores = [miou(predict(_raw(s.image), s.truth), s.truth, k) for s in tests]
        out[name] = {
            "mIoU": float(np.mean([m for m, _ in scores])),
            "per_class": np.mean([p for _, p in scores], 0).tolist(),
            "train_s": getattr(make, "seconds", None),
        }
    out["classes"] = list(PHASES[kind])
    return out


def live_timing(size: int, repeats: int) -> dict:
    """Retrain + repredict times of a ``size`` x ``size`` view after one more stroke (median of repeats)."""
    from ncm_core.data.synth_phases import paint_strokes, phase_sample
    from ncm_core.training.live import LiveSegmenter

    s = phase_sample("sem", (size, size), seed=11)
    strokes = paint_strokes(s.truth, 3, fraction=0.01, seed=11)
    live = LiveSegmenter(s.image, s.classes)
    t = time.perf_counter()
    live.update(strokes)
    live.predict_view(0, size, 0, size)
    first = time.perf_counter() - t
    rng = np.random.default_rng(0)
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for stride in (1, 2):
            # one more stroke: a short line in a random phase, inside one tile
            y, x = (int(v) for v in rng.integers(40, size - 40, 2))
            strokes[y, x : x + 25] = np.where(strokes[y, x : x + 25] == 0, s.truth[y, x] + 1, strokes[y, x : x + 25])
            t = time.perf_counter()
            live.update(strokes)
            live.predict_view(0, size, 0, size, stride)
            times[stride].append(time.perf_counter() - t)
    return {"first_s": first, "stride1_s": float(np.median(times[1])), "stride2_s": float(np.median(times[2]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    from run import machine

    n_train, n_test, size, live_size, repeats = (2, 2, 192, 512, 2) if a.quick else (6, 4, 512, 1024, 5)
    work = Path(tempfile.mkdtemp(prefix="ncm-bench-seg-"))
    try:
        results = {kind: accuracy(work, kind, n_train, n_test, size, a.quick) for kind in ("sem", "section")}
        live = live_timing(live_size, repeats)
        from segment_mosaic import section as mosaic_section

        bundles = [work / f"{e}-train-sem" for e in ("forest", "unet") if (work / f"{e}-train-sem").is_dir()]
        mosaic_text = mosaic_section(bundles, work, a.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = []
    for kind, res in results.items():
        for name in ROWS:
            r = res[name]
            if "error" in r:
                lines.append(f"| {kind} | {name} | not run: {r['error']} | | |")
                continue
            per = ", ".join(f"{c} {v:.2f}" for c, v in zip(res["classes"], r["per_class"], strict=True))
            secs = f"{r['train_s']:.0f} s" if r.get("train_s") else ""
            lines.append(f"| {kind} | {name} | {r['mIoU']:.3f} | {per} | {secs} |")
    goals = []
    for kind, res in results.items():
        otsu, forest, unet = (res[n].get("mIoU") for n in ROWS)
        goals.append(f"- {kind}: forest - thresholding = {forest - otsu:+.3f} (goal >= +0.15)")
        if unet is not None:
            goals.append(
                f"- {kind}: U-Net - forest = {unet - forest:+.3f} (goal >= +0.05); "
                f"U-Net - thresholding = {unet - otsu:+.3f} (goal >= +0.20)"
            )
    goal_text = "\n".join(goals)
    text = f"""## Segmentation from painted strokes

Written by `make bench-segment` (`benchmarks/segment.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine()}; LightGBM threads: {a.threads}
- Data: synthetic electrode phases (`ncm sample phases` / `phase-sections`), {n_train} training images of
  {size} x {size} px with strokes over about 1 % of the pixels (a few lines and scribbles inside each phase),
  {n_test} held-out images with dense truth; mean IoU over the classes on the held-out images
- Thresholding: multi-Otsu on the grey image, its bins given the classes in the order that is best for each
  image (an upper bound for thresholding)

| images | method | mIoU | IoU per class | training |
|---|---|---|---|---|
{chr(10).join(lines)}

{goal_text}

Live mode ({live_size} x {live_size} px view, SEM-like image, {a.threads} threads): the first stroke
computes the view's features ({live["first_s"]:.2f} s, once); after each further stroke, retrain + repredict
takes {live["stride1_s"]:.2f} s at full resolution (goal <= 1.5 s) and {live["stride2_s"]:.2f} s as a
stride-2 preview (median of {repeats}).

U-Net: `{", ".join(f"{k}={v}" for k, v in UNET.items())}` (`ncm train --engine unet`), the halo of mosaic
windows set by the network's measured reach.
"""
    if not a.quick:
        write_section(Path(a.out), "segment", text)
        write_section(Path(a.out), "segment-mosaic", mosaic_text)
    print(text + "\n" + mosaic_text)


if __name__ == "__main__":
    main()
