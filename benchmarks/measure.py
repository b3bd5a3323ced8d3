"""Measurement benchmark: measures against known truth, and TauFactor against PoreSpy's solver.

    make bench-measure       # or: .venv/bin/python benchmarks/measure.py [--quick]

On phase maps built with known numbers (``ncm_core.data.synth_volumes`` and constructions here):

- porosity: block-by-block counting of a large label array (zarr, many blocks) against the same count in
  memory, and digital porosity against the analytic porosity of straight tubes;
- d50: separate discs / spheres of one radius (PoreSpy ``random_spheres``), and overlapping discs split by
  SNOW partitioning, against the equivalent diameter of the drawn disc / ball;
- tortuosity: ``ncm_core.measure.tortuosity.tortuosity_factor`` against TauFactor's ``Solver`` run directly
  on the same array (same device), straight tubes (1 exactly), and PoreSpy's finite-difference solver
  (``porespy.simulations.tortuosity_fd``, OpenPNM + PyAMG) on the same volume: value and time.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def porosity_rows(side: int) -> list[tuple[str, str, str, str]]:
    import zarr

    from ncm_core.data.synth_volumes import blobs, tubes
    from ncm_core.measure import _labels, phases

    lab = blobs((side, side), porosity=0.35, blobiness=2, seed=0).labels
    with tempfile.TemporaryDirectory() as d:
        z = zarr.create_array(f"{d}/l.zarr", shape=lab.shape, chunks=(256, 256), dtype=lab.dtype)
        z[:] = lab
        _labels.BLOCK_PIXELS = 512 * side  # blocks of 512 rows
        t = time.perf_counter()
        lazy = phases.phase_fractions_lazy(z, ["pore", "solid"])["pore"]
        dt = time.perf_counter() - t
    exact = float((lab == 1).mean())
    rows = [
        (
            f"porosity, block by block ({side}x{side} px zarr, {side // 512} blocks)",
            f"{lazy:.6f}",
            f"{exact:.6f} (in memory)",
            f"{abs(lazy - exact):.1e} ({side * side / 1e6 / dt:.0f} Mpx/s)",
        )
    ]
    for r in (4, 8, 16):
        s = tubes((8, 24 * r, 24 * r), radius=r, spacing=4 * r, axis=0)  # 6 x 6 whole tubes
        analytic = np.pi * r**2 / (4 * r) ** 2
        rows.append(
            (
                f"porosity of straight tubes, r = {r} px",
                f"{phases.porosity(s.pore):.4f}",
                f"{analytic:.4f} (pi r^2 / spacing^2)",
                f"{abs(phases.porosity(s.pore) - analytic):.4f}",
            )
        )
    return rows


def d50_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    import porespy as ps

    from ncm_core.data.synth_volumes import sphere_pack
    from ncm_core.measure.particles import _quiet, particle_sizes, particle_summary

    rows = []
    cases = [((512, 512), 8), ((512, 512), 16), ((64, 64, 64) if quick else (128, 128, 128), 6)]
    for shape, r in cases:
        s = sphere_pack(shape, radius=r, solid_fraction=0.3, seed=0)
        summ = particle_summary(particle_sizes(s.labels == 2), shape)
        rows.append(
            (
                f"d50, separate {'spheres' if len(shape) == 3 else 'discs'} r = {r} px ({summ['count']:.0f})",
                f"{summ['d50']:.3f} px",
                f"{s.truth['d50']:.3f} px",
                f"{abs(summ['d50'] / s.truth['d50'] - 1):.2%}",
            )
        )
    # touching discs: clearance -2 lets them overlap by up to 2 px; SNOW splits them
    for r in (8, 12):
        with _quiet():
            solid = np.asarray(
                ps.generators.random_spheres(shape=[512, 512], r=r, clearance=-2, phi=0.45, seed=1, smooth=False), bool
            )
            d_true = (4 * np.count_nonzero(ps.tools.ps_disk(r, smooth=False)) / np.pi) ** 0.5
        summ = particle_summary(particle_sizes(solid, method="snow"), solid.shape)
        rows.append(
            (
                f"d50, touching discs r = {r} px split by SNOW ({summ['count']:.0f})",
                f"{summ['d50']:.3f} px",
                f"{d_true:.3f} px",
                f"{abs(summ['d50'] / d_true - 1):.2%}",
            )
        )
    return rows


def tortuosity_rows(side: int, device: str) -> list[tuple[str, str, str, str]]:
    import porespy as ps
    import taufactor

    from ncm_core.data.synth_volumes import blobs, tubes
    from ncm_core.measure.tortuosity import tortuosity_factor

    rows = []
    s = tubes((side, side, side), radius=4, spacing=16)
    r = tortuosity_factor(s.pore, 0, device)
    rows.append((f"tortuosity, straight tubes {side}^3", f"{r.tau:.4f}", "1 (exact)", f"{abs(r.tau - 1):.1e}"))
    for por in (0.3, 0.5):
        b = blobs((side, side, side), porosity=por, blobiness=1, seed=0).pore
        ours = tortuosity_factor(b, 0, device)
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            direct = float(np.asarray(taufactor.Solver(b.astype(np.uint8), device=device).solve(verbose=False))[0])
        t_direct = time.perf_counter() - t
        t = time.perf_counter()
        try:
            fd = ps.simulations.tortuosity_fd(b, axis=0).tortuosity
        except ImportError as exc:  # PoreSpy's solver needs OpenPNM and PyAMG, not dependencies of ours
            fd = f"not run: {exc}"
        t_fd = time.perf_counter() - t
        rows.append(
            (
                f"tortuosity, blobs porosity {por} {side}^3 ({device})",
                f"{ours.tau:.4f} ({ours.seconds:.1f} s)",
                f"TauFactor direct {direct:.4f} ({t_direct:.1f} s)",
                f"{abs(ours.tau / direct - 1):.2%}",
            )
        )
        if isinstance(fd, str):
            rows.append(("same volume, PoreSpy tortuosity_fd", fd, f"TauFactor {direct:.4f}", ""))
            continue
        rows.append(
            (
                "same volume, PoreSpy tortuosity_fd",
                f"{fd:.4f} ({t_fd:.1f} s)",
                f"TauFactor {direct:.4f} ({t_direct:.1f} s)",
                f"{abs(fd / direct - 1):.2%}; time ratio PoreSpy / TauFactor {t_fd / t_direct:.1f}",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes; prints, writes nothing")
    ap.add_argument("--device", default="cpu", help="TauFactor device (cpu, cuda)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    from run import machine

    side_2d, side_3d = (2048, 48) if a.quick else (8192, 96)
    t0 = time.monotonic()
    rows = porosity_rows(side_2d) + d50_rows(a.quick) + tortuosity_rows(side_3d, a.device)
    table = "\n".join(f"| {m} | {v} | {t} | {e} |" for m, v, t, e in rows)
    text = f"""## Measuring: known truth, TauFactor and PoreSpy

Written by `make bench-measure` (`benchmarks/measure.py`) on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
in {(time.monotonic() - t0) / 60:.1f} min.

- Machine: {machine()}
- Goals (issue 19): porosity error <= 0.01 absolute; d50 error <= 5 %; tortuosity factor within 2 % of TauFactor
  run directly on the same array; its time compared with PoreSpy's finite-difference solver.
- Porosity of a given phase map is a count, exact in memory and block by block; the 0.01 goal applies to
  segmentation + measurement against a truth phase map (the segmentation benchmark). Tubes show the
  discretisation of a continuous shape on the pixel grid.

| measure | measured | truth / reference | error |
|---|---|---|---|
{table}
"""
    if not a.quick:
        write_section(Path(a.out), "measure", text)
    print(text)


if __name__ == "__main__":
    main()
