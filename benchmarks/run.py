"""Mosaic prediction benchmark; writes its section of docs/benchmarks.md.

    make bench-predict    # or: .venv/bin/python benchmarks/run.py [--quick]

Every figure is a ratio of two timings taken in the same run on the same
machine (these machines are noisy; absolute numbers move, ratios much less).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"GPU: {gpu}, Python {platform.python_version()}")


def make_mosaic(path: Path, side: int, chunk: int = 512) -> Path:
    """A synthetic SEM mosaic (a 1024 px sample repeated) written chunk row by chunk row, never whole."""
    import zarr

    from ncm_core import synth

    z = zarr.create_array(str(path), shape=(side, side), chunks=(chunk, chunk), dtype=np.uint8)
    sample = synth.sem_mosaic((1024, 1024), seed=3).image
    reps = -(-side // 1024)
    for y in range(0, side, chunk):
        rows = sample[(y + np.arange(min(chunk, side - y))) % 1024]
        z[y:y + len(rows)] = np.tile(rows, (1, reps))[:, :side]
    return path


def make_bundle(path: Path, arch: str, tile: int) -> Path:
    import torch

    from ncm_core.bundle import BundleConfig, save_bundle
    from ncm_core.models import build_model
    from ncm_core.preprocess import InputSpec

    torch.manual_seed(0)
    model = build_model(arch, 12, in_chans=1).eval()
    cfg = BundleConfig(architecture=arch, class_names=[f"c{k}" for k in range(12)],
                       input=InputSpec(1, (tile, tile)), tile_size=tile)
    return save_bundle(model, cfg, path)


def forward_rate(model, batch: int, tile: int, n_batches: int, channels_last: bool = False) -> float:
    """Tiles/s of the bare model on in-memory batches (the ceiling for the pipeline)."""
    import torch

    x = torch.rand(batch, 1, tile, tile)
    m = model
    if channels_last:
        m = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        m(x)
        t = time.perf_counter()
        for _ in range(n_batches):
            m(x)
        dt = time.perf_counter() - t
    model.to(memory_format=torch.contiguous_format)
    return batch * n_batches / dt


def naive_rate(bundle, mosaic_path: Path, tile: int, n_tiles: int, out: Path) -> float:
    """Tiles/s of the obvious loop: read one tile, preprocess, forward, write, repeat."""
    import torch
    import zarr

    from ncm_core.mosaic import open_mosaic
    from ncm_core.preprocess import tiles_to_tensor

    m = open_mosaic(mosaic_path)
    cols = m.shape[1] // tile
    res = zarr.create_array(str(out), shape=(m.shape[0] // tile, cols), chunks=(16, 16), dtype=np.uint8)
    t = time.perf_counter()
    with torch.inference_mode():
        for k in range(n_tiles):
            i, j = divmod(k, cols)
            a = np.asarray(m.data[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile].compute())
            p = bundle.model(tiles_to_tensor(a[None], bundle.config.input))
            res[i, j] = int(p.argmax())
    return n_tiles / (time.perf_counter() - t)


def matmul_flops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def model_flops_per_tile(model, tile: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(torch.rand(8, 1, tile, tile))
    return fc.get_total_flops() / 8


PEAK = """
import resource, sys
from ncm_core.predict import predict_mosaic
predict_mosaic(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=64)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(bundle: Path, mosaic: Path, out: Path) -> float:
    r = subprocess.run([sys.executable, "-c", PEAK, str(bundle), str(mosaic), str(out)], capture_output=True,
                       text=True, check=True)
    return int(r.stdout.split()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke run, minutes less)")
    ap.add_argument("--arch", default="efficientnet_b0")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--dense-tile", type=int, default=128, help="tile size for the dense-mode rows")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()

    from ncm_core.bundle import load_bundle
    from ncm_core.predict import predict_mosaic

    side = 1536 if a.quick else 3072
    tile, batch = a.tile, 64
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bpath = make_bundle(tmp / "bundle", a.arch, tile)
        bundle = load_bundle(bpath)
        mosaic = make_mosaic(tmp / "mosaic.zarr", side)
        n_tiles = (side // tile) ** 2
        print(f"mosaic {side}x{side}, {n_tiles} tiles of {tile} px, {a.arch}, batch {batch}", flush=True)

        predict_mosaic(bpath, mosaic, tmp / "warm.zarr", batch_size=batch)  # warm caches and allocator
        # forward and pipeline alternate over three rounds; the median ratio is robust to this machine's noise
        ratios, ratios_all, fwd_rates, fwd_cl_rates, pipes, pipes_all = [], [], [], [], [], []
        for k in range(3):
            fwd = forward_rate(bundle.model, batch, tile, max(4, n_tiles // batch // 4))
            fwd_cl = forward_rate(bundle.model, batch, tile, max(4, n_tiles // batch // 4), channels_last=True)
            marks: list[float] = []
            t = time.perf_counter()
            predict_mosaic(bpath, mosaic, tmp / f"pred{k}.zarr", batch_size=batch,
                           progress=lambda d, n, m: marks.append(time.perf_counter()))
            end = time.perf_counter()
            best = max(fwd, fwd_cl)  # the pipeline picks the faster layout by measurement
            pipes.append(n_tiles / (end - marks[0]))  # from the first block on: after set-up
            pipes_all.append(n_tiles / (end - t))
            ratios.append(pipes[-1] / best)
            ratios_all.append(pipes_all[-1] / best)
            fwd_rates.append(fwd)
            fwd_cl_rates.append(fwd_cl)
        med = lambda v: float(np.median(v))  # noqa: E731
        pipe, fwd, fwd_cl = med(pipes), med(fwd_rates), med(fwd_cl_rates)
        mp_s = pipe * tile * tile / 1e6
        rows.append(("Pipeline (steady state) vs the model's own forward on in-memory batches, faster layout; "
                     "median of 3 alternating rounds", f"{pipe:.0f} vs {max(fwd, fwd_cl):.0f} tiles/s "
                     f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})", f"{med(ratios):.2f}", ">= 0.90"))
        rows.append(("Pipeline including start-up (bundle load, layout measurement, output set-up)",
                     f"{med(pipes_all):.0f} tiles/s", f"{med(ratios_all):.2f}", ""))
        rows.append(("Pipeline throughput", f"{pipe:.0f} tiles/s, {mp_s:.1f} MP/s", "", ""))
        rows.append(("channels_last vs contiguous forward", f"{fwd_cl:.0f} vs {fwd:.0f} tiles/s",
                     f"{fwd_cl / fwd:.2f}", "used if > 1"))

        # agreement needs a model whose outputs depend on the tile (random weights give near-ties):
        # a ResNet-10t briefly trained on the synthetic SEM classes
        from ncm_core import synth
        from ncm_core.train import train

        frames = synth.write_sem_dataset(tmp / "frames", 3, (544, 512), info_bar=32)
        dt = a.dense_tile
        trained = train(frames, tmp / "trained", architecture="resnet10t", tile_size=dt, epochs=4,
                        crops_per_image=32, lr=2e-3, exclude_rows=(-32, None)).bundle
        t = time.perf_counter()
        exact = predict_mosaic(trained, mosaic, tmp / "exact2.zarr", batch_size=batch, stride=dt // 2)
        exact_s = time.perf_counter() - t
        t = time.perf_counter()
        dense = predict_mosaic(trained, mosaic, tmp / "dense2.zarr", batch_size=batch, stride=dt // 2, dense=True)
        dense_s = time.perf_counter() - t
        agree = float((np.asarray(exact.labels) == np.asarray(dense.labels)).mean())
        rows.append((f"Dense mode, {dt} px tiles at stride {dt // 2} ({exact.grid.size} tiles, trained ResNet-10t): "
                     "time vs exact per-tile",
                     f"{dense_s:.1f} vs {exact_s:.1f} s", f"{dense_s / exact_s:.2f}", "<= 0.40"))
        rows.append(("Dense mode: class agreement with exact per-tile evaluation", f"{agree:.1%} of tiles",
                     f"{agree:.3f}", ">= 0.99"))

        n_naive = min(n_tiles, 400 if a.quick else 800)
        naive = naive_rate(bundle, mosaic, tile, n_naive, tmp / "naive.zarr")
        rows.append(("Pipeline vs naive loop (read, preprocess, forward, write one tile)",
                     f"{pipe:.0f} vs {naive:.0f} tiles/s", f"{pipe / naive:.1f}x", "speed-up"))

        flops = model_flops_per_tile(bundle.model, tile)
        mm = matmul_flops()
        rows.append(("Model forward FLOP/s vs dense matmul FLOP/s (fp32)",
                     f"{flops * fwd / 1e9:.1f} vs {mm / 1e9:.1f} GFLOP/s ({flops / 1e6:.0f} MFLOP/tile)",
                     f"{flops * fwd / mm:.2f}", ""))

        big = make_mosaic(tmp / "big.zarr", 2 * side)
        p1 = peak_rss(bpath, mosaic, tmp / "m1.zarr")
        p4 = peak_rss(bpath, big, tmp / "m4.zarr")
        rows.append(("Peak RSS, mosaic 4x larger in area vs 1x", f"{p4:.0f} vs {p1:.0f} MB", f"{p4 / p1:.3f}",
                     "<= 1.10"))

        t = time.perf_counter()
        predict_mosaic(bpath, mosaic, tmp / "dist.zarr", batch_size=batch, scheduler="local:2")
        dist_s = time.perf_counter() - t
        single_s = n_tiles / med(pipes_all)  # both with start-up
        rows.append(("2-worker LocalCluster vs one process (same mosaic, start-up included)",
                     f"{dist_s:.1f} vs {single_s:.1f} s", f"{single_s / dist_s:.2f}", "speed-up"))

    lines = [
        "## Mosaic prediction",
        "",
        "Written by `make bench-predict` (`benchmarks/run.py`). Each ratio compares two timings taken in the same run.",
        "",
        f"- Machine: {machine()}",
        f"- Model: {a.arch} with 12 outputs, {tile} px tiles, batch {batch}; mosaic {side} x {side} px uint8 "
        f"(zarr, 512 px chunks), {(side // tile) ** 2} tiles",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "Notes: timings on this shared 2-core machine move by 10-20 % between runs, so each ratio is taken",
        "within one run. Preparing a block (read, decode, cut, convert) costs 3-8 % of its model time, and on",
        "2 cores that work shares the cores torch uses. No GPU was available for this run; on a GPU the same",
        "command records tiles/s there (bf16 autocast, pinned memory, asynchronous copies).",
        "",
        "| measure | values | ratio | goal |",
        "|---|---|---|---|",
        *[f"| {m} | {v} | {r} | {g} |" for m, v, r, g in rows],
        "",
    ]
    if not a.quick:
        write_section(Path(a.out), "prediction", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
