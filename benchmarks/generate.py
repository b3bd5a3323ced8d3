"""Generation benchmark: 2D-to-3D (SliceGAN-style) against a known 3D truth, inpainting, super-resolution.

    make bench-generate   # or: .venv/bin/python benchmarks/generate.py [--quick] [--device cuda]

1. **2D to 3D.** The truth is an isotropic two-phase structure (PoreSpy ``blobs``, 256^3 voxels, pore
   fraction 0.4, feature size sigma 3.2 px; ``ncm_core.data.synth_volumes.blobs``). The generator is trained
   on ONE 256^2 slice of it (``ncm_core.training.generate.train_generator``), then ``--volumes`` volumes of
   128^3 are generated and measured in 3D like the truth's eight 128^3 octants: pore fraction, two-point
   correlation S2 (RMSE of the curves over r = 0..23 px), specific surface area, tortuosity factor of the
   pore phase (TauFactor, mean over the three axes). Training time per step is also measured at the 64^3
   training size; generation speed is that of ``generate_volume`` on a 256^3 volume.
2. **Inpainting.** Square holes in a phase map and a grey-level rendering of a truth slice are filled
   (``ncm_core.inference.inpaint.inpaint_array``); the pore fraction and interface density inside each
   hole are compared with the spread (min..max) of the same numbers over unmasked regions of the hole's size.
3. **Super-resolution (4x).** Grey-level renderings of 2D blobs images are degraded (blur, 4x averaging,
   noise: ``ncm_core.data.degrade``); the network is trained on some and scored on held-out ones by PSNR and
   SSIM against bicubic interpolation, by the IoU of an Otsu segmentation against the high-resolution
   image's segmentation, and by the porosity and d50 measured on those segmentations.
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

GRID = np.arange(24, dtype=np.float64)
SIDE = 128  # voxels a side of the compared volumes (generated, and the truth's octants)


def s2_curve(mask: np.ndarray) -> np.ndarray:
    from ncm_core.measure.correlation import two_point_correlation

    r = two_point_correlation(mask, bins=64)
    return np.interp(GRID, r["distance"], r["probability"])


def volume_numbers(pore: np.ndarray, device: str) -> dict[str, object]:
    from ncm_core.measure.interfaces import specific_surface_area
    from ncm_core.measure.tortuosity import tortuosity_factor

    dev = None if device == "auto" else device
    return {
        "porosity": float(pore.mean()),
        "s2": s2_curve(pore),
        "ssa": float(specific_surface_area(pore)),
        "tau": float(np.mean([tortuosity_factor(pore, axis=ax, device=dev).tau for ax in range(3)])),
    }


def grey(labels: np.ndarray, seed: int) -> np.ndarray:
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    g = ndi.gaussian_filter((labels == 1).astype(np.float32) * 0.6 + 0.2, 1.0)
    return (g + rng.normal(0, 0.02, g.shape)).astype(np.float32)


def two_d_to_three_d(a: argparse.Namespace, work: Path) -> tuple[dict, str]:
    import zarr

    from ncm_core.data.synth_volumes import blobs
    from ncm_core.devices import resolve_device
    from ncm_core.evaluation.generate import check_generator
    from ncm_core.inference.generate import VolumeOptions, generate_volume, read_volume
    from ncm_core.training.generate import train_generator

    # The truth must be large against its features for one slice of it to be representative: 256^3 with
    # PoreSpy's feature size sigma = 256 / (40 * 2) = 3.2 px. (One 128^2 slice of a 128^3 truth with the same
    # features has a pore fraction of 0.372 against the volume's 0.400: a generator that learns that slice
    # faithfully is off by 0.03 however long it trains.)
    truth = blobs((2 * SIDE,) * 3, porosity=0.4, blobiness=2, seed=0).labels == 1
    image = np.where(truth[SIDE], 1, 2).astype(np.uint8)
    stamps: list[float] = []
    t0 = time.monotonic()
    gen = train_generator(
        image, work / "gen", size=a.size, iterations=a.iterations, gen_width=a.width, critic_width=a.width,
        batch_size=2, lr=a.lr, ema=a.ema, fraction_weight=10.0, device=a.device, checkpoint_every=100,
        progress=lambda d, t, m: stamps.append(time.monotonic()),
    )  # fmt: skip
    train_s = time.monotonic() - t0
    per_step = (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)
    cal = json.loads((gen / "config.json").read_text())["training"].get("calibration") or {}
    s64: list[float] = []
    train_generator(
        image, work / "gen64", size=64, iterations=3, gen_width=a.width, critic_width=a.width, batch_size=2,
        device=a.device, progress=lambda d, t, m: s64.append(time.monotonic()),
    )  # fmt: skip
    per_step64 = (s64[-1] - s64[0]) / max(len(s64) - 1, 1)
    big = generate_volume(gen, work / "big.zarr", size=(2 * SIDE,) * 3, device=a.device)
    vps = dict(zarr.open_group(str(big), mode="r").attrs)["ncm"]["voxels_per_second"]
    gen_vols = [
        read_volume(generate_volume(gen, work / f"v{k}.zarr", size=(SIDE,) * 3, seed=k, device=a.device)) == 1
        for k in range(a.volumes)
    ]
    corners = [(z, y, x) for z in (0, SIDE) for y in (0, SIDE) for x in (0, SIDE)]  # the 8 octants
    true_vols = [truth[z : z + SIDE, y : y + SIDE, x : x + SIDE] for z, y, x in corners]
    g = [volume_numbers(v, a.device) for v in gen_vols]
    t = [volume_numbers(v, a.device) for v in true_vols]
    check = check_generator(gen, work / "check", volumes=2, size=64, slices=6, device=a.device)
    shutil.copy(work / "check" / "check.png", work / "generation-check.png")

    def ms(rs: list[dict], k: str) -> tuple[float, float]:
        v = np.array([r[k] for r in rs], np.float64)
        return float(v.mean()), float(v.std())

    s2_rmse = float(np.sqrt(np.mean((np.mean([r["s2"] for r in g], 0) - np.mean([r["s2"] for r in t], 0)) ** 2)))
    out = {
        "train_seconds": train_s, "per_step": per_step, "per_step64": per_step64, "voxels_per_second": vps,
        "generated": {k: ms(g, k) for k in ("porosity", "ssa", "tau")},
        "truth": {k: ms(t, k) for k in ("porosity", "ssa", "tau")},
        "s2_rmse": s2_rmse, "check": check["comparison"], "calibration": cal,
    }  # fmt: skip
    G, T = out["generated"], out["truth"]
    rel = {k: (G[k][0] - T[k][0]) / T[k][0] for k in ("ssa", "tau")}
    ok = {
        "porosity": abs(G["porosity"][0] - T["porosity"][0]) <= 0.02,
        "s2": s2_rmse < 0.02,
        "ssa": abs(rel["ssa"]) <= 0.10,
        "tau": abs(rel["tau"]) <= 0.10,
    }
    mark = {k: "met" if v else "not met" for k, v in ok.items()}
    rows = [
        f"| pore fraction | {T['porosity'][0]:.3f} ± {T['porosity'][1]:.3f} | {G['porosity'][0]:.3f} ± "
        f"{G['porosity'][1]:.3f} | within 0.02: {mark['porosity']} |",
        f"| S2 RMSE (r = 0..23 px) | | {s2_rmse:.4f} | below 0.02: {mark['s2']} |",
        f"| specific surface area (1/px) | {T['ssa'][0]:.4f} ± {T['ssa'][1]:.4f} | {G['ssa'][0]:.4f} ± "
        f"{G['ssa'][1]:.4f} ({rel['ssa']:+.0%}) | within 10 %: {mark['ssa']} |",
        f"| tortuosity factor, pores | {T['tau'][0]:.3f} ± {T['tau'][1]:.3f} | {G['tau'][0]:.3f} ± "
        f"{G['tau'][1]:.3f} ({rel['tau']:+.0%}) | within 10 %: {mark['tau']} |",
    ]
    text = f"""**2D to 3D** (one {2 * SIDE} x {2 * SIDE} slice of a {2 * SIDE}^3 PoreSpy blobs truth, pore fraction 0.4,
feature size sigma 3.2 px; generator trained at {a.size}^3, widths {a.width}, batch 2, {a.iterations} steps, lr {a.lr:g},
weight average {a.ema:g}, phase-fraction weight 10, on {resolve_device(a.device)} with {a.threads} thread(s):
{train_s:.0f} s, {per_step:.2f} s per step; at the 64^3 training size {per_step64:.1f} s per step, so SliceGAN's
usual ~10^4 steps would take {per_step64 * 1e4 / 3600:.0f} h on this machine). {a.volumes} generated volumes of {SIDE}^3
against the truth's 8 octants of {SIDE}^3 (mean ± standard deviation; tortuosity factor: mean over the 3 axes):

| measure | truth | generated | goal |
|---|---|---|---|
{chr(10).join(rows)}

Phase-fraction calibration (`training.calibration` in the bundle; pore fraction over 128 volumes of 96^3):
{cal.get("before", ["?"])[0]} as trained, {cal.get("after", ["?"])[0]} calibrated, {cal.get("target", ["?"])[0]} in the
training image.

Generation: {vps:,.0f} voxels/s (a {2 * SIDE}^3 volume streamed to zarr in blocks of {VolumeOptions.block}^3).
"""
    return out, text


def inpainting(a: argparse.Namespace) -> tuple[dict, str]:
    from ncm_core.data.synth_volumes import blobs
    from ncm_core.inference.inpaint import inpaint_array

    labels = blobs((256, 256), porosity=0.4, blobiness=1, seed=3).labels
    rng = np.random.default_rng(0)
    hole, rows, out = 32, [], {}
    for kind, image in (("phase map", labels), ("grey levels", grey(labels, 1))):

        def stats(x: np.ndarray, kind: str = kind) -> np.ndarray:
            pore = x == 1 if kind == "phase map" else x > 0.5
            return np.array([pore.mean(), (np.diff(pore, axis=0) != 0).mean() + (np.diff(pore, axis=1) != 0).mean()])

        inside, spread = [], []
        for _ in range(a.holes):
            y, x = rng.integers(0, 256 - hole, 2)
            mask = np.zeros(image.shape, bool)
            mask[y : y + hole, x : x + hole] = True
            filled = inpaint_array(image, mask, seed=int(rng.integers(1 << 30)))
            assert np.array_equal(filled[~mask], image[~mask])
            inside.append(stats(filled[y : y + hole, x : x + hole]))
            ref = []
            while len(ref) < 40:
                yy, xx = rng.integers(0, 256 - hole, 2)
                if not mask[yy : yy + hole, xx : xx + hole].any():
                    ref.append(stats(image[yy : yy + hole, xx : xx + hole]))
            spread.append((np.min(ref, 0), np.max(ref, 0), np.mean(ref, 0)))
        inside_a = np.array(inside)
        lo, hi, mean = (np.array([s[k] for s in spread]) for k in range(3))
        within = ((inside_a >= lo) & (inside_a <= hi)).mean(0)
        out[kind] = {"within": within.tolist(), "inside": inside_a.mean(0).tolist(), "outside": mean.mean(0).tolist()}
        rows.append(
            f"| {kind} | {inside_a[:, 0].mean():.3f} vs {mean[:, 0].mean():.3f} | {within[0]:.0%} | "
            f"{inside_a[:, 1].mean():.3f} vs {mean[:, 1].mean():.3f} | {within[1]:.0%} |"
        )
    text = f"""**Inpainting** ({a.holes} square holes of {hole} x {hole} px in a 256 x 256 blobs image, filled by patch-based
synthesis with 16 px patches; inside the hole vs the mean over 40 unmasked {hole} x {hole} regions, and the share of
holes whose number lies within the min..max spread of those regions):

| image | pore fraction, filled vs unmasked | within spread | interface density (1/px), filled vs unmasked | within spread |
|---|---|---|---|---|
{chr(10).join(rows)}
"""
    return out, text


def seg_numbers(seg: np.ndarray) -> tuple[float, float]:
    """Porosity (the bright phase's fraction) and d50 (px) of the bright phase's particles of a segmentation."""
    from ncm_core.measure.particles import particle_sizes, size_quantiles

    d = particle_sizes(seg, method="watershed")["equivalent_diameter"]
    return float(seg.mean()), size_quantiles(d)["d50"]


def superres(a: argparse.Namespace, work: Path) -> tuple[dict, str]:
    from skimage.filters import threshold_otsu

    from ncm_core.data.degrade import degrade
    from ncm_core.data.synth_volumes import blobs
    from ncm_core.models.superres import load_superres
    from ncm_core.training.superres import bicubic, psnr_ssim, train_superres, upscale

    hr = [grey(blobs((256, 256), porosity=0.45, blobiness=1, seed=10 + k).labels, k) for k in range(6)]
    train, held = hr[:4], hr[4:]
    t0 = time.monotonic()
    b = train_superres([*train, held[0]], work / "sr", factor=4, iterations=a.sr_iterations, device=a.device)
    secs = time.monotonic() - t0
    m = load_superres(b)
    lo, hi = m.spec.norm_low, m.spec.norm_high
    res = {"network": [], "bicubic": [], "iou_network": [], "iou_bicubic": []}
    for k, h in enumerate(held):
        hn = (h - lo) / (hi - lo)
        lr = degrade(hn, 4, 0.5, 0.01, np.random.default_rng(100 + k))
        sr, bc = upscale(m.model, lr), bicubic(lr, 4)
        res["network"].append(psnr_ssim(hn, sr))
        res["bicubic"].append(psnr_ssim(hn, bc))
        truth_seg = hn > threshold_otsu(hn)
        res.setdefault("numbers_high-res", []).append(seg_numbers(truth_seg))
        for name, img in (("network", sr), ("bicubic", bc)):
            seg = img > threshold_otsu(img)
            ious = [((seg == c) & (truth_seg == c)).sum() / ((seg == c) | (truth_seg == c)).sum() for c in (0, 1)]
            res[f"iou_{name}"].append(float(np.mean(ious)))
            res.setdefault(f"numbers_{name}", []).append(seg_numbers(seg))
    p = {k: np.mean(res[k], 0) for k in ("network", "bicubic")}
    iou = {k: float(np.mean(res[f"iou_{k}"])) for k in ("network", "bicubic")}
    nums = {k: np.mean(res[f"numbers_{k}"], 0) for k in ("high-res", "bicubic", "network")}
    numbers_rows = "\n".join(f"| {k} | {v[0]:.3f} | {v[1]:.1f} |" for k, v in nums.items())
    gain = p["network"][0] - p["bicubic"][0]
    text = f"""**Super-resolution, 4x** (6 grey-level renderings of 256 x 256 blobs images; degradation: blur sigma 0.5
low-res px, 4x averaging, noise 0.01; trained on 4 for {a.sr_iterations} steps in {secs:.0f} s, scored on the other 2):

| | PSNR (dB) | SSIM | mIoU of an Otsu segmentation vs the high-res one |
|---|---|---|---|
| bicubic | {p["bicubic"][0]:.2f} | {p["bicubic"][1]:.3f} | {iou["bicubic"]:.3f} |
| network | {p["network"][0]:.2f} | {p["network"][1]:.3f} | {iou["network"]:.3f} |

Numbers measured on those segmentations (mean over the held-out images; high-res: the reference):

| segmented image | porosity | d50 (high-res px) |
|---|---|---|
{numbers_rows}

Goal PSNR >= bicubic + 1 dB: {"met" if gain >= 1 else "not met"} ({gain:+.2f} dB); segmentation closer to the high-res
result than bicubic's: {"met" if iou["network"] > iou["bicubic"] else "not met"}.
"""
    numbers = {k: v.tolist() for k, v in nums.items()}
    return {"psnr_ssim": {k: v.tolist() for k, v in p.items()}, "miou": iou, "numbers": numbers, "seconds": secs}, text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a short run that checks the script (no section written)")
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--size", type=int, default=32, help="training volume side (64 is SliceGAN's)")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999, help="generator weight average (0: the last weights)")
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--holes", type=int, default=24)
    ap.add_argument("--sr-iterations", type=int, default=400)
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (small 3D convolutions: 2 threads on a shared 2-core machine run 10x slower)",
    )
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    import torch
    from run import machine

    if a.quick:
        a.iterations, a.volumes, a.holes, a.sr_iterations = 30, 2, 2, 30
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="ncm-bench-generate-"))
    try:
        r3, t3 = two_d_to_three_d(a, work)
        ri, ti = inpainting(a)
        rs, ts = superres(a, work)
        if not a.quick:
            shutil.copy(work / "generation-check.png", ROOT / "docs" / "images" / "generation-check.png")
    finally:
        keep = work / "generation-check.png"
        if a.quick and keep.exists():
            print(f"figure: {keep}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = f"""## Generation (`make bench-generate`)

{machine()}; `benchmarks/generate.py`{" --quick" if a.quick else ""}.

{t3}
{ti}
{ts}
Figure: `docs/images/generation-check.png` (`ncm generate check` of the trained generator).
"""
    if a.json:
        Path(a.json).write_text(json.dumps({"3d": r3, "inpaint": ri, "superres": rs}, indent=1, default=str))
    if not a.quick:
        write_section(Path(a.out), "generate", text)
    print(text)


if __name__ == "__main__":
    main()
