"""Figures of generated microstructure: real and generated correlation curves overlaid (``ncm generate check``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ncm_core.viz._common import agg_figure

AXES = ("z", "y", "x")
COLORS = ("tab:blue", "tab:orange", "tab:green")


def check_figure(record: dict[str, Any]) -> Any:
    """One row per phase: two-point correlation S2(r) and chord-length CDF, the training image(s) in black
    and the generated volumes' slices normal to z, y and x in colour; the volumetric numbers in the title."""
    phases = [str(p) for p in record["phases"]]
    shown = phases[1:] if len(phases) == 2 else phases  # two phases: one is the other's complement
    grid = np.arange(record["curve_points"])
    fig = agg_figure(9, 3.2 * len(shown))
    axs = fig.subplots(len(shown), 2, squeeze=False)
    for row, ph in zip(axs, shown):
        for ax, key, label in zip(row, ("s2", "chord_cdf"), ("two-point correlation S2", "chord length CDF")):
            seen = set()
            for a in range(3):
                real = record["real"][a][ph][key]
                if tuple(real) not in seen:  # isotropic: one training image for the three axes
                    seen.add(tuple(real))
                    ax.plot(grid, real, "k-", lw=2, label="training image" if len(seen) == 1 else None)
                ax.plot(
                    grid,
                    record["generated"][a][ph][key],
                    "--",
                    color=COLORS[a],
                    label=f"generated, slices normal to {AXES[a]}",
                )
            ax.set_xlabel("distance (px)" if key == "s2" else "chord length (px)")
            ax.set_title(f"phase {ph}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
        vol = record["volumetric"][ph]
        text = ", ".join(f"{k.replace('_', ' ')} {v['mean']:.3g} ± {v['std']:.2g}" for k, v in vol.items())
        row[1].legend(fontsize=7)
        row[0].set_title(f"phase {ph}: two-point correlation S2\n3D: {text}", fontsize=7)
    fig.tight_layout()
    return fig
