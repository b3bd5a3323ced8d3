"""``ncm measure``: microstructure numbers of a segmentation (phase fractions, porosity, profiles,
interfaces, particles, local thickness, correlation, tortuosity) written to a folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ncm_core.cli._args import common, progress
from ncm_core.measure.options import REGION_HELP, MeasureOptions
from ncm_core.measure.particles import SEPARATION_METHODS

M = MeasureOptions


def cmd_measure(a: argparse.Namespace) -> None:
    from ncm_core.options import given
    from ncm_core.workflows.measure import SUMMARY, measure

    opts = given(
        classes=a.classes,
        pore=a.pore,
        particle_class=a.particle_class,
        labels=a.labels,
        pixel_size=a.pixel_size,
        axis=a.axis,
        profile_bin=a.profile_bin,
        sections=a.sections,
        regions=a.regions,
        region=a.region,
        separation=a.separation,
        device=a.device,
    )
    out = measure(
        a.segmentation,
        a.out,
        particles=not a.no_particles,
        tortuosity=not a.no_tortuosity,
        figures=not a.no_figures,
        overwrite=a.overwrite,
        progress=progress("measure", a.quiet),
        **opts,
    )
    s = json.loads((Path(out) / SUMMARY).read_text())
    u = s["unit"]
    f = s["fractions"]
    parts = [f"porosity {f['porosity']:.3f}"]
    parts += [f"{k} {v:.3f}" for k, v in f["fractions"].items() if k not in s["pore"]]
    print(f"phases: {', '.join(parts)}")
    if "particles" in s:
        p = s["particles"]
        print(f"particles: {p['count']:.0f}, d10/d50/d90 {p['d10']:.3g}/{p['d50']:.3g}/{p['d90']:.3g} {u}")
    if "tortuosity" in s:
        t = s["tortuosity"]
        tau = "infinite (" + t["note"] + ")" if t["tau"] is None else f"{t['tau']:.3f}"
        print(f"tortuosity factor of the pores along axis {t['axis']}: {tau}")
    print(f"measures: {out} (measure.json, one JSON and CSV per measure, figures)")


def _axis(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an axis number (0, 1 or 2), got {value!r}") from None


def _positive_float(value: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return v


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "measure",
        help="measure a segmentation: phase fractions, porosity, profiles, particles, interfaces, tortuosity",
    )
    s.add_argument(
        "segmentation",
        help="OME-Zarr with NGFF labels (ncm predict with a segmenter), a label image (tif/png; value k = class "
        "k, 0 = not classified) or a 3D volume (tif stack, zarr)",
    )
    s.add_argument("out", help="folder to write (measure.json, a JSON and CSV per measure, figures, layers)")
    s.add_argument("--classes", help="class names of values 1, 2, ... as a,b,c (default: the file's, classes.txt)")
    s.add_argument("--pore", help="the pore class (name or value; default: the class named pore, void, ...)")
    s.add_argument("--particle-class", help="the phase whose particles are measured (default: active / largest)")
    s.add_argument("--labels", help="which label image of the OME-Zarr (default: the first)")
    s.add_argument("--pixel-size", type=_positive_float, help="micrometres per pixel (default: the file's)")
    s.add_argument(
        "--axis", type=_axis, default=M.axis, help=f"through-plane axis of profiles and tortuosity (default {M.axis})"
    )
    s.add_argument(
        "--profile-bin",
        type=_positive_float,
        default=M.profile_bin,
        help=f"profile bin width in pixels (default {M.profile_bin:g})",
    )
    s.add_argument("--sections", help="sections.json (or its folder) of ncm sections: profile from the collector")
    s.add_argument("--regions", help="a label image of regions (same shape), measured one by one")
    s.add_argument("--region", help=f"part measured in memory (particles, tortuosity): {REGION_HELP}")
    s.add_argument(
        "--separation",
        choices=list(SEPARATION_METHODS),
        default=M.separation,
        help=f"how touching particles are split (default {M.separation})",
    )
    s.add_argument("--no-particles", action="store_true", help="skip particles, local thickness and correlation")
    s.add_argument("--no-tortuosity", action="store_true", help="skip the tortuosity factor")
    s.add_argument("--no-figures", action="store_true", help="write no figures")
    s.add_argument("--overwrite", action="store_true")
    common(s)
    s.set_defaults(func=cmd_measure)
