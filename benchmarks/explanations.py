"""Explanation benchmark: Grad-CAM over a whole mosaic against plain prediction of the same mosaic with
the same model, and batched (local) occlusion against captum's Occlusion one perturbation at a time.

Each ratio compares two timings taken in the same run. Writes its section of docs/benchmarks.md.
Run: ``make bench-explain`` (about 8 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402
from run import machine, make_mosaic  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def mosaic_costs(work: Path, side: int) -> dict:
    from ncm_core.data.synth import CLASS_NAMES
    from ncm_core.explain.heatmaps import explain_mosaic
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.models.bundle import BundleConfig, save_bundle
    from ncm_core.models.factory import build_model
    from ncm_core.models.preprocess import InputSpec

    mosaic = make_mosaic(work / "mosaic.zarr", side)
    bundle = work / "effnet"
    save_bundle(
        build_model("efficientnet_b0", 12, in_chans=1),
        BundleConfig("efficientnet_b0", class_names=list(CLASS_NAMES), input=InputSpec(1, (64, 64)), tile_size=64),
        bundle,
    )
    kw = dict(device="cpu", overwrite=True)
    res = {"side": side, "tiles": (side // 64) ** 2}
    runs = {
        # the heatmap runs in PyTorch, so its cost is compared with PyTorch's prediction of the same tiles
        "predict_s": lambda: predict_mosaic(bundle, mosaic, work / "p.zarr", ood=False, backend="torch", **kw),
        "gradcam0": lambda: explain_mosaic(bundle, mosaic, work / "g0.zarr", "gradcam", overlap=0, **kw),
        "gradcam": lambda: explain_mosaic(bundle, mosaic, work / "g.zarr", "gradcam", **kw),
        "predict_auto": lambda: predict_mosaic(bundle, mosaic, work / "a.zarr", ood=False, **kw),
    }
    for _ in range(2):  # alternating rounds; the best of each (these machines are noisy)
        for name, fn in runs.items():
            res[name] = min(res.get(name, float("inf")), timed(fn)[1])
    return res


def occlusion_costs(shape=(224, 672), window=7) -> dict:
    import torch
    from captum.attr import Occlusion

    from ncm_core.explain.occlusion import local_plan, occlusion_maps
    from ncm_core.models.factory import build_model

    model = build_model("ncm_vgg", 5, in_chans=3)
    g = torch.Generator().manual_seed(0)
    for bn in model.modules():  # exact convolutional BatchNorm statistics of a few random crops, so the
        if isinstance(bn, torch.nn.BatchNorm2d):  # features are normalised as in a trained model
            bn.momentum = None
            bn.reset_running_stats()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, *shape, generator=g))
    model.eval()
    x = torch.rand(1, 3, *shape, generator=g)
    fill = torch.zeros(3)  # a black window: on a noise crop its mean would hardly change the output
    plan = local_plan(model, x)
    ours, t_ours = timed(
        lambda: occlusion_maps(model, x, np.array([[4]]), window=(window, window), stride=(window, window), fill=fill)
    )
    occ = Occlusion(model)
    with torch.inference_mode():
        ref, t_ref = timed(
            lambda: occ.attribute(
                x,
                sliding_window_shapes=(3, window, window),
                strides=(3, window, window),
                baselines=fill.reshape(3, 1, 1).expand(3, *shape),
                target=4,
                perturbations_per_eval=1,
            )
        )
    ref = ref[:, 0].numpy()
    return {
        "shape": shape,
        "window": window,
        "windows": (shape[0] // window) * (shape[1] // window),
        "plan": plan,
        "ours": t_ours,
        "captum": t_ref,
        "diff": float(np.abs(ours[:, 0] - ref).max()),
        "scale": float(np.abs(ref).max()),
    }


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--side", type=int, default=2048, help="mosaic side in pixels (default 2048)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    a = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="ncm-bench-explain-") as tmp:
        os.environ["NCM_CACHE_DIR"] = str(Path(tmp) / "onnx-cache")  # no graphs from earlier runs
        m = mosaic_costs(Path(tmp), a.side)
    o = occlusion_costs()
    p = m["predict_s"]
    text = f"""## Explanations

Written by `make bench-explain` (`benchmarks/explanations.py`) on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.
Each ratio compares timings taken in the same run.

- Machine: {machine()}
- Mosaic: {a.side} x {a.side} px synthetic SEM (zarr, 512 px chunks), efficientnet_b0 (untrained weights: timing
  only), 64 px tiles, 12 classes, batch 16 (heatmaps) / 64 (prediction), CPU
- Occlusion: ncm_vgg (the rate-capability network, 5 outputs) on one {o["shape"][0]} x {o["shape"][1]} crop, window
  {o["window"]} x {o["window"]} with stride {o["window"]} ({o["windows"]} windows), fill 0 (black), one target,
  convolutional BatchNorm statistics from random crops

| measure | values | ratio | goal |
|---|---|---|---|
| Grad-CAM heatmap of the whole mosaic, tiles not overlapping, vs plain prediction in PyTorch (best of 2 alternating rounds each) | {m["gradcam0"]:.1f} vs {p:.1f} s | {m["gradcam0"] / p:.2f} | <= 3 |
| Grad-CAM heatmap with the default quarter-tile overlap (1.8x the tiles, blended) vs plain prediction in PyTorch | {m["gradcam"]:.1f} vs {p:.1f} s | {m["gradcam"] / p:.2f} | |
| Plain prediction with the engine chosen by measurement (`backend="auto"`) vs PyTorch | {m["predict_auto"]:.1f} vs {p:.1f} s | {m["predict_auto"] / p:.2f} | |
| Batched local occlusion vs captum Occlusion, perturbations_per_eval=1 | {o["ours"]:.1f} vs {o["captum"]:.1f} s | {o["captum"] / o["ours"]:.1f}x | >= 5x |
| Largest difference of the map from captum's | {o["diff"]:.1e} (map values up to {o["scale"]:.3g}) | | <= 1e-5 |

Notes: the Grad-CAM cost stays close to prediction because the autograd graph starts at the target layer
(the trunk below it runs as plain inference) and one forward pass gives both the targets and the maps.
Local occlusion recomputes only the part of the trunk a window can change (receptive-field margin
{o["plan"].margin if o["plan"] else "-"} px at feature stride {o["plan"].stride if o["plan"] else "-"}) and is checked against full evaluation first.
The untrained network's map values are small; the difference to captum is float32 rounding of
score differences. On a CPU, batching whole 224 x 672 inputs is slower per image than one at a time
(a development run with batch 32 took 843 s against captum's 880 s), so the full-input path, used when
the local plan does not apply (EfficientNet's squeeze-and-excitation pools globally inside the trunk)
or fails its check, keeps CPU batches near 2^18 pixels. A development run whose dense-head BatchNorm
statistics came from near-identical random crops (a head that amplifies rounding by ~1000x) failed
the check and fell back to full inputs, as designed.
"""
    write_section(a.out, "explanations", text)
    print(text)


if __name__ == "__main__":
    main()
