"""``ncm demo``: sample data -> training -> mosaic prediction -> metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from ncm_core.cli._args import common
from ncm_core.workflows.demo import DEFAULT_ARCH, DEFAULT_OUT


def cmd_demo(a: argparse.Namespace) -> None:
    from ncm_core.workflows.demo import console_progress, run_demo

    m = run_demo(a.out, quick=a.quick, seed=a.seed, architecture=a.arch, progress=None if a.quiet else console_progress)
    out = Path(a.out)
    print()
    print(
        f"tile accuracy: {m['tile_accuracy']:.1%} on {m['n_tiles']} mosaic tiles "
        f"(balanced {m['balanced_accuracy']:.1%}); total {m['total_seconds']:.0f} s"
    )
    for name, p in [
        ("mosaic", m["outputs"]["mosaic"]),
        ("model bundle", m["outputs"]["bundle"]),
        ("prediction", m["outputs"]["prediction"]),
        ("metrics", out / "metrics.json"),
        ("overview", out / "overview.png"),
        ("confusion matrix", out / "confusion_matrix.png"),
    ]:
        print(f"  {name:17s} {p}")
    print(f"open it in napari:  napari {m['outputs']['mosaic']} {m['outputs']['prediction']}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    d = sub.add_parser("demo", help="sample data -> training -> mosaic prediction -> metrics and overview")
    d.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (replaced; default {DEFAULT_OUT})")
    d.add_argument("--quick", action="store_true", help="tiny data, one epoch (a smoke test)")
    d.add_argument(
        "--arch",
        default=DEFAULT_ARCH,
        help=f"timm architecture (default {DEFAULT_ARCH}: learns fastest from scratch on a CPU)",
    )
    d.add_argument("--seed", type=int, default=0)
    common(d, device=False)
    d.set_defaults(func=cmd_demo)
