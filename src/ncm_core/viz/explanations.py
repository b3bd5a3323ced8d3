"""Figures of explanations: maps over tiles, heatmap overlays on mosaics, sanity-check curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.io.mosaic import open_mosaic
from ncm_core.viz._common import agg_figure, show_gray
from ncm_core.viz.prediction import overview_image, probability_bars


def heatmap_style(signed: bool, limits: tuple[float, float] | None = None, values: Any = None) -> dict[str, Any]:
    """imshow keywords for a heatmap: a diverging colormap with symmetric limits for signed maps, a
    sequential one from 0 for unsigned maps (limits from the 99.5th percentile of ``values`` if not given)."""
    if limits is None:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        a = float(np.percentile(np.abs(v), 99.5)) if v.size else 1.0
        a = a if a > 0 else 1.0
        limits = (-a, a) if signed else (0.0, a)
    return {
        "cmap": "RdBu_r" if signed else "inferno",
        "vmin": limits[0],
        "vmax": limits[1],
        "interpolation": "bilinear",
    }


def explanation_figure(
    tiles: np.ndarray,
    explanations: dict[str, Any],
    path: str | Path,
    *,
    map_index: int = 0,
    alpha: float = 0.55,
    titles: list[str] | None = None,
) -> Path:
    """PNG grid: one row per tile, the tile and then each method's map (``map_index``) over it, each method
    with its own colour scale (shared by its tiles) and colour bar."""
    n, methods = len(tiles), list(explanations)
    fig = agg_figure(2.3 * (1 + len(methods)), 2.3 * n * tiles.shape[1] / tiles.shape[2] + 0.8)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(n, 1 + len(methods), squeeze=False)
    for m_i, m in enumerate(methods):
        e = explanations[m]
        style = heatmap_style(e.signed, values=e.maps[:, map_index])
        for r in range(n):
            ax = axes[r, 1 + m_i]
            show_gray(ax, tiles[r])
            im = ax.imshow(e.maps[r, map_index], alpha=alpha, **style)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(f"{m}\n{e.names[r][map_index]}" if e.task == "regress" else m, fontsize=8)
        fig.colorbar(im, ax=axes[:, 1 + m_i].tolist(), shrink=0.6, pad=0.02)
    first = next(iter(explanations.values()))
    for r in range(n):
        show_gray(axes[r, 0], tiles[r])
        axes[r, 0].set_axis_off()
        label = (
            titles[r]
            if titles
            else (f"{first.names[r][map_index]} ({first.scores[r].max():.2f})" if first.task == "classify" else "tile")
        )
        axes[r, 0].set_title(label, fontsize=8)
    fig.savefig(str(path))
    return Path(path)


def draw_tile_explanation(fig: Any, tile: np.ndarray, ex: Any, output_names: list[str]) -> None:
    """One tile's scores (the five most probable classes, or the predicted values) and its maps side by side
    on ``fig`` (the Explain dock's panel)."""
    fig.clear()
    axes = fig.subplots(1, 1 + ex.maps.shape[1])
    if ex.task == "classify":
        order = np.argsort(-ex.scores[0])[:5]
        probability_bars(axes[0], ex.scores[0][order], [output_names[i] for i in order])
        axes[0].set_title("probabilities", fontsize=8)
    else:
        axes[0].barh(range(len(output_names)), ex.scores[0], color="tab:blue")
        axes[0].set_yticks(range(len(output_names)), output_names, fontsize=7)
        axes[0].invert_yaxis()
        axes[0].set_title("predicted", fontsize=8)
    for k in range(ex.maps.shape[1]):
        ax = axes[1 + k]
        show_gray(ax, tile)
        ax.imshow(ex.maps[0, k], alpha=0.55, **heatmap_style(ex.signed, values=ex.maps[0, k]))
        ax.set_title(f"{ex.names[0][k]}\n{ex.scores[0, ex.targets[0, k]]:.2f}", fontsize=7)
        ax.set_axis_off()
    fig.tight_layout()


def heatmap_overlay_figure(
    mosaic: Any, heatmap: Any, path: str | Path, index: int = 0, alpha: float = 0.55, title: str | None = None
) -> Path:
    """PNG of a mosaic overview with map ``index`` of a :class:`~ncm_core.explain.heatmaps.Heatmap` over it, aligned
    pixel for pixel (the heatmap's coarsest level that still covers the overview's resolution)."""
    mosaic = open_mosaic(mosaic)
    img, f = overview_image(mosaic)
    H, W = mosaic.shape
    level, lf = heatmap.levels[0], heatmap.factor
    for k, lv in enumerate(heatmap.levels):
        if heatmap.factor * 2**k <= f:
            level, lf = lv, heatmap.factor * 2**k
    step = max(1, f // lf)
    hm = np.asarray(level[index, ::step, ::step])
    fig = agg_figure(8, 8 * H / W + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    show_gray(ax, img, extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    cell = lf * step  # mosaic pixels per shown heatmap pixel, from the mosaic's top-left corner
    im = ax.imshow(
        hm,
        alpha=alpha,
        extent=(-0.5, hm.shape[1] * cell - 0.5, hm.shape[0] * cell - 0.5, -0.5),
        **heatmap_style(heatmap.signed, tuple(heatmap.limits[index])),
    )
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.7, pad=0.01)
    ax.set_title(title or f"{heatmap.method}: {heatmap.names[index]}", fontsize=9)
    fig.savefig(str(path))
    return Path(path)


def heatmap_overlays(mosaic: Any, heatmap: Any, out: str | Path) -> list[Path]:
    """One overlay PNG per map of ``heatmap`` beside the heatmap ``out`` (``gradcam.zarr`` ->
    ``gradcam-<map name>.png``, the name made safe for file systems)."""
    out = Path(out)
    pngs = []
    for k, name in enumerate(heatmap.names):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        pngs.append(heatmap_overlay_figure(mosaic, heatmap, out.parent / f"{out.name.split('.')[0]}-{safe}.png", k))
    return pngs


def randomisation_figure(report: dict[str, Any], path: str | Path) -> Path:
    """Cascading model-randomisation curves: rank correlation of |map| with the trained model's as more
    stages (from the output down) are re-initialised."""
    fig = agg_figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for m, r in report.items():
        steps = r.get("cascade") or []
        labels = ["trained"] + [s for s, _ in steps]
        ax.plot(
            range(len(labels)), [1.0] + [v for _, v in steps], marker="o", label=f"{m} (all: {r['spearman_abs']:.2f})"
        )
    ax.axhline(next(iter(report.values()))["threshold"], color="0.5", ls="--", lw=0.8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("Spearman rank correlation of |map|")
    ax.set_xlabel("re-initialised up to (cascading from the output)")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)


def deletion_insertion_figure(results: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Mean deletion and insertion curves per method, with their areas under the curve."""
    fig = agg_figure(9, 3.6)
    a_del, a_ins = fig.subplots(1, 2)
    for m, r in results.items():
        fr = r["fractions"]
        a_del.plot(fr, r["deletion"].mean((0, 1)), label=f"{m} ({r['deletion_auc']:.3f})")
        a_ins.plot(fr, r["insertion"].mean((0, 1)), label=f"{m} ({r['insertion_auc']:.3f})")
    first = next(iter(results.values()))
    fr = first["fractions"]
    a_del.plot(
        fr, first["random_deletion"], color="0.5", ls="--", label=f"random order ({first['random_deletion_auc']:.3f})"
    )
    a_ins.plot(
        fr, first["random_insertion"], color="0.5", ls="--", label=f"random order ({first['random_insertion_auc']:.3f})"
    )
    for ax, t in ((a_del, "Deletion (lower area = more faithful)"), (a_ins, "Insertion (higher area = more faithful)")):
        ax.set_xlabel("fraction of pixels removed / inserted")
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=7)
    a_del.set_ylabel("target score")
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)
