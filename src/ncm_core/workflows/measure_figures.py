"""The figures of ``ncm measure``: size distribution, profile, tortuosity (drawn by
:mod:`ncm_core.viz.measure` from what the stages left in the run's context)."""

from __future__ import annotations

from typing import Any

from ncm_core.progress import report


def write_figures(ctx: Any, summary: dict[str, Any]) -> None:
    """Write ``size_distribution.png``, ``porosity_profile.png`` and ``tortuosity.png`` where their
    measures were made; their names go to ``summary["figures"]``."""
    from ncm_core.viz import measure as viz

    stage = ctx.stage("figures")
    written = []
    if "particles" in ctx.figures:
        d, s = ctx.figures["particles"]
        viz.size_distribution_figure(d, s, ctx.unit, ctx.part / "size_distribution.png")
        written.append("size_distribution.png")
    if "profile" in ctx.figures:
        t, label = ctx.figures["profile"]
        viz.profile_figure(
            t, list(ctx.classes.values()), ctx.pore_names, ctx.unit, ctx.part / "porosity_profile.png", xlabel=label
        )
        written.append("porosity_profile.png")
    if "tortuosity" in ctx.figures:
        pore, connected, s = ctx.figures["tortuosity"]
        viz.tortuosity_figure(pore, connected, s, ctx.part / "tortuosity.png")
        written.append("tortuosity.png")
    summary["figures"] = written
    report(stage, 1, 1, "figures")
