"""Mosaic segmentation on the streaming engine: seams, throughput and peak memory (part of ``make bench-segment``).

Called by ``benchmarks/segment.py`` with the forest and U-Net bundles it trained (or on its own:
``python benchmarks/segment_mosaic.py BUNDLE [BUNDLE...] [--quick]``):

- **seams**: the class map of a synthetic SEM-like mosaic segmented by :func:`segment_mosaic` (windows,
  halo, blocks, default options) against :func:`predict_image` on the same image whole: share of pixels
  that agree (goal: 100 % for the forest, >= 99.9 % for the U-Net);
- **throughput**: mosaic pixels per second of ``segment_mosaic``, against the network's own forward speed
  on in-memory batches of the same windows (the same number of windows, already normalised): the engine's
  share of the time (goal >= 0.8), and in image pixels per second, where each window's halo is paid too;
- **peak memory**: the largest resident set of a process that segments the mosaic, and one of 4x the area
  (goal: within 10 %).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEAK = """
import json, resource, sys, time
from ncm_core.inference.segment import segment_mosaic
t = time.perf_counter()
segment_mosaic(sys.argv[1], sys.argv[2], sys.argv[3], device="cpu")
print(json.dumps({"seconds": time.perf_counter() - t, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _mosaic(work: Path, side: int, seed: int = 5):
    from ncm_core.data.synth_phases import phase_sample
    from ncm_core.io.mosaic import write_ome_zarr

    s = phase_sample("sem", (side, side), seed=seed)
    path = work / f"mosaic-{side}-{seed}.ome.zarr"
    return s, path if path.exists() else write_ome_zarr(path, s.image, chunks=256)


def seams_and_speed(bundle: Path, work: Path, side: int) -> dict:
    """Agreement with the whole image, and ``segment_mosaic``'s speed against the bare forward passes."""
    import zarr

    from ncm_core.inference.options import SegmentOptions
    from ncm_core.inference.segment import plan_windows, predict_image, segment_mosaic
    from ncm_core.models.segmenter import load_segmenter

    s, mosaic = _mosaic(work, side)
    seg = load_segmenter(bundle)
    out = segment_mosaic(bundle, mosaic, work / f"seg-{bundle.name}-{side}.zarr", device="cpu")
    # timed: a second run (the first pays for one-off set-ups of the window shape), next to the forward passes
    t = time.perf_counter()
    segment_mosaic(bundle, mosaic, work / f"seg-{bundle.name}-{side}-timed.zarr", device="cpu")
    seconds = time.perf_counter() - t
    attrs = zarr.open_group(str(out), mode="r").attrs["ncm"]
    labels = np.asarray(zarr.open_array(str(out / "labels" / "segmentation" / "0"), mode="r")[...])
    whole = predict_image(seg, s.image.astype(np.float32)).argmax(0) + 1
    g = plan_windows(seg.config, SegmentOptions(), (side, side))
    n = int(attrs["n_windows"])
    batch = SegmentOptions().batch_size
    rng = np.random.default_rng(0)
    x = seg.config.normalize(rng.integers(0, 255, (batch, seg.config.channels, g.window, g.window)))
    seg.predict_proba(x)  # warm-up
    t = time.perf_counter()
    for _ in range(-(-n // batch)):
        seg.predict_proba(x)
    forward = time.perf_counter() - t
    return {
        "engine": seg.config.engine,
        "side": side,
        "agree": float((labels == whole).mean()),
        "window": g.window,
        "halo": g.halo,
        "windows": n,
        "seconds": seconds,
        "forward_seconds": forward,
        "mpx_s": side * side / seconds / 1e6,
        "forward_mpx_s": n * g.window**2 / forward / 1e6,
    }


def peak_memory(bundle: Path, work: Path, side: int) -> dict:
    """Peak resident memory of a fresh process segmenting a ``side`` and a ``2 * side`` mosaic (4x the area)."""
    script = work / "peak.py"
    script.write_text(PEAK)
    out = {}
    for s in (side, 2 * side):
        _, mosaic = _mosaic(work, s, seed=6)
        r = subprocess.run(
            [sys.executable, str(script), str(bundle), str(mosaic), str(work / f"peak-{s}.zarr")],
            capture_output=True,
            text=True,
            check=True,
        )
        out[s] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def section(bundles: list[Path], work: Path, quick: bool) -> str:
    """The markdown of the mosaic part of ``make bench-segment``."""
    side = 384 if quick else 1024
    rows, speed = [], []
    for b in bundles:
        r = seams_and_speed(b, work, side)
        rows.append(
            f"| {r['engine']} | {r['agree']:.4%} | {r['window']} px, halo {r['halo']} px, {r['windows']} windows |"
        )
        if r["engine"] == "unet":
            speed.append(r)
    text = f"""### Mosaic segmentation (streaming engine)

A {side} x {side} px SEM-like mosaic (chunks of 256 px) segmented by `segment_mosaic` with the default options,
against the same image segmented whole (`predict_image`); goals: forest 100 %, U-Net >= 99.9 %.

| engine | pixels equal to the whole image | windows |
|---|---|---|
{chr(10).join(rows)}
"""
    unet = next((b for b in bundles if "unet" in b.name), None)
    for r in speed:
        share = r["forward_seconds"] / r["seconds"]
        core = (r["window"] - 2 * r["halo"]) ** 2 / r["window"] ** 2
        text += f"""
U-Net throughput: {r["mpx_s"]:.3f} Mpx/s of mosaic ({r["seconds"]:.1f} s); the network alone on the same
{r["windows"]} windows in memory: {r["forward_seconds"]:.1f} s ({r["forward_mpx_s"]:.3f} Mpx/s of window pixels).
The engine (reading, normalising, blending, writing, pyramid) keeps **{share:.2f}** of the network's speed
(goal >= 0.8); in image pixels the mosaic runs at {r["mpx_s"] / r["forward_mpx_s"]:.2f} of the forward speed,
of which the halo alone allows {core:.2f} (cores of {r["window"] - 2 * r["halo"]} px in windows of {r["window"]} px:
a larger `--window` raises it).
"""
    if unet is not None:
        pm = peak_memory(unet, work, side // 2 if quick else side)
        (a, ra), (b, rb) = sorted(pm.items())
        text += f"""
Peak memory of a process segmenting {a} x {a} px: {ra["peak_mb"]:.0f} MB ({ra["seconds"]:.1f} s); {b} x {b} px
(4x the area): {rb["peak_mb"]:.0f} MB ({rb["seconds"]:.1f} s), a ratio of {rb["peak_mb"] / ra["peak_mb"]:.3f} (goal <= 1.10).
"""
    return text


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ncm-bench-segmosaic-") as w:
        text = section([Path(b) for b in a.bundles], Path(w), a.quick)
    text += f"\nBundles: {', '.join(a.bundles)} (run on its own: `python benchmarks/segment_mosaic.py BUNDLE...`).\n"
    if not a.quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _report import write_section

        write_section(Path(a.out), "segment-mosaic", text)
    print(text)
