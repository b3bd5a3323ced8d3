"""Figures (matplotlib, no GUI backend): mosaic overviews with class maps, confusion matrices."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.io.mosaic import Mosaic, open_mosaic
from ncm_core.inference.predict import Prediction, open_prediction


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def overview_image(mosaic: Mosaic, max_side: int = 1600) -> tuple[np.ndarray, int]:
    """A downsampled copy of the mosaic for display and its downsampling factor.

    Uses the coarsest pyramid level that is still at least ``max_side`` pixels,
    else strided reading, chunk by chunk.
    """
    level, f = mosaic.data, 1
    for k, lv in enumerate(mosaic.levels):
        if max(lv.shape[:2]) >= max_side or k == 0:
            level, f = lv, 2**k
    step = max(1, math.ceil(max(level.shape[:2]) / max_side))
    return np.asarray(level[::step, ::step].compute()), f * step


def grid_extent(pred: Prediction) -> tuple[float, float, float, float]:
    """matplotlib extent (pixel coordinates of the mosaic) of the one-value-per-cell arrays."""
    g = pred.grid
    rows, cols = g.shape
    top = g.offset[0] + (g.tile - 1) / 2 - g.stride / 2
    left = g.offset[1] + (g.tile - 1) / 2 - g.stride / 2
    return left, left + cols * g.stride, top + rows * g.stride, top


def prediction_overview(
    mosaic: Any, prediction: str | Path | Prediction, path: str | Path, *, truth_tiles: np.ndarray | None = None,
    alpha: float = 0.45, title: str | None = None,
) -> Path:
    """PNG of the mosaic with its predicted class map, a legend, and (with
    ``truth_tiles``) a panel marking wrongly classified tiles."""
    from matplotlib.patches import Patch

    mosaic = open_mosaic(mosaic)
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    img, f = overview_image(mosaic)
    H, W = mosaic.shape
    classes = pred.classes
    colors = np.array(pred.colors)
    rgba = np.zeros(classes.shape + (4,))
    rgba[classes >= 0] = colors[classes[classes >= 0]]
    rgba[..., 3] = np.where(classes >= 0, alpha, 0)
    panels = 2 if truth_tiles is not None else 1
    aspect = H / W
    fig = _figure(7.5 * panels + 2.3, 7.5 * aspect + 1.0)
    ext_img = (-0.5, W - 0.5, H - 0.5, -0.5)
    cmap = "gray" if img.ndim == 2 else None
    ax = fig.add_subplot(1, panels, 1)
    ax.imshow(img, cmap=cmap, extent=ext_img, interpolation="antialiased")
    ax.imshow(rgba, extent=grid_extent(pred), interpolation="nearest")
    ax.set_title(title or "Predicted class per tile")
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    if truth_tiles is not None:
        ax2 = fig.add_subplot(1, panels, 2)
        ax2.imshow(img, cmap=cmap, extent=ext_img, interpolation="antialiased")
        valid = (classes >= 0) & (truth_tiles >= 0)
        err = np.zeros(classes.shape + (4,))
        err[valid & (classes == truth_tiles)] = (0.1, 0.8, 0.2, 0.35)
        err[valid & (classes != truth_tiles)] = (0.95, 0.05, 0.05, 0.7)
        ax2.imshow(err, extent=grid_extent(pred), interpolation="nearest")
        acc = (classes == truth_tiles)[valid].mean() if valid.any() else float("nan")
        ax2.set_title(f"Tiles against truth: {acc:.1%} correct (red = wrong)")
        ax2.set_xlim(-0.5, W - 0.5)
        ax2.set_ylim(H - 0.5, -0.5)
    handles = [Patch(color=colors[k][:3], label=n) for k, n in enumerate(pred.class_names)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.subplots_adjust(left=0.03, right=1 - 2.2 / fig.get_figwidth(), top=0.93, bottom=0.05, wspace=0.1)
    fig.savefig(path)
    return Path(path)


def draw_confusion_matrix(fig: Any, cm: Any, class_names: list[str], title: str = "Confusion matrix") -> None:
    """A confusion matrix on ``fig`` (cleared first): rows true class, columns predicted, colours
    normalised per row, counts printed."""
    cm = np.asarray(cm)
    n = len(class_names)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig.clear()
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of true class")
    fig.tight_layout()


def confusion_matrix_figure(cm: Any, class_names: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """PNG of a confusion matrix (see :func:`draw_confusion_matrix`)."""
    n = len(class_names)
    fig = _figure(2.5 + 0.55 * n, 2.0 + 0.5 * n)
    draw_confusion_matrix(fig, cm, class_names, title)
    fig.savefig(path)
    return Path(path)


def draw_training_curves(fig: Any, history: list[dict[str, float]], title: str | None = None) -> None:
    """Loss and accuracy (classification) or MAPE (regression) per epoch, training and validation, on
    ``fig`` (cleared first); the napari Train widget redraws its live plot with this after every epoch."""
    fig.clear()
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ep = [h["epoch"] for h in history]
    key = "mape" if history and "train_mape" in history[0] else "accuracy"
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train")
    ax2.plot(ep, [h.get(f"train_{key}", np.nan) for h in history], "o-", ms=3, label="train")
    if history and "val_loss" in history[0]:
        ax1.plot(ep, [h.get("val_loss", np.nan) for h in history], "s-", ms=3, label="validation")
        ax2.plot(ep, [h.get(f"val_{key}", np.nan) for h in history], "s-", ms=3, label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    if key == "mape":
        ax2.set(xlabel="epoch", ylabel="MAPE (%)", title="Mean absolute percentage error", yscale="log")
    else:
        ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()


def training_curves_figure(history: list[dict[str, float]], path: str | Path, title: str | None = None) -> Path:
    """PNG of the training curves (see :func:`draw_training_curves`)."""
    fig = _figure(9, 3.6)
    draw_training_curves(fig, history, title)
    fig.savefig(path)
    return Path(path)


def probability_bars(ax: Any, probs: Any, class_names: list[str], colors: list[Any] | None = None,
                     title: str | None = None) -> None:
    """Horizontal bars of one tile's class probabilities on ``ax`` (the napari probability dock)."""
    ax.clear()
    y = np.arange(len(class_names))
    ax.barh(y, probs, color=None if colors is None else [c[:3] for c in colors])
    ax.set_yticks(y, class_names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    if title:
        ax.set_title(title, fontsize=9)


def scatter_figure(y_true: np.ndarray, y_pred: np.ndarray, names: list[str], path: str | Path, *,
                   folds: list[int] | None = None, units: str = "") -> Path:
    """Predicted against measured values, one panel per target, coloured by fold, with the 1:1 line."""
    n = len(names)
    cols = min(n, 5)
    rows = math.ceil(n / cols)
    fig = _figure(2.6 * cols + 0.4, 2.6 * rows + 0.3)
    folds_arr = np.asarray(folds) if folds is not None else np.zeros(len(y_true), int)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        t, p = y_true[:, k], y_pred[:, k]
        for f in sorted(set(folds_arr.tolist())):
            sel = folds_arr == f
            ax.scatter(t[sel], p[sel], s=6, alpha=0.6, label=f"fold {f}" if folds is not None else None)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        pad = 0.05 * (hi - lo or 1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
        ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), title=name,
               xlabel=f"measured{(' ' + units) if units else ''}", ylabel="predicted" if k % cols == 0 else None)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        mape = 100 * np.mean(np.abs(p - t) / np.abs(t))
        ax.text(0.04, 0.96, f"MAPE {mape:.2f} %", transform=ax.transAxes, va="top", fontsize=7)
    if folds is not None and len(set(folds_arr.tolist())) > 1:
        fig.axes[0].legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_rate_capability(ax: Any, measured: dict[str, np.ndarray], predicted: dict[str, tuple[np.ndarray, np.ndarray]],
                         names: list[str], c_rates: list[float] | None, *, units: str = "", title: str | None = None,
                         legend_title: str | None = None) -> None:
    """Capacity against C-rate (log axis): measured (lines) and predicted mean +- std (error bars) per series.

    ``measured[label]`` is a value per target; ``predicted[label]`` is (mean, std) per target. Without C-rates
    (target names that do not parse), the targets are plotted in order.
    """
    import matplotlib as mpl

    ax.clear()
    x = np.asarray(c_rates, float) if c_rates else np.arange(len(names), dtype=float)
    labels = list(dict.fromkeys([*measured, *predicted]))
    cmap = mpl.colormaps["viridis"]
    for i, label in enumerate(labels):
        color = cmap(i / max(len(labels) - 1, 1))
        if label in measured:
            ax.plot(x, measured[label], "-", color=color, lw=1.2, label=f"{label}")
        if label in predicted:
            m, s = predicted[label]
            ax.errorbar(x * (1.03 if label in measured else 1), m, yerr=s, fmt="o", ms=3.5, color=color, capsize=2,
                        lw=0.9, mfc="white" if label in measured else color)
    if c_rates:
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{c:g}C" for c in x])
        ax.minorticks_off()
        ax.set_xlabel("C-rate")
    else:
        ax.set_xticks(x, names, rotation=30, fontsize=7)
    ax.set_ylabel(f"capacity{(' (' + units + ')') if units else ''}")
    ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles, _ = ax.get_legend_handles_labels()
    extra = [Line2D([], [], color="k", lw=1.2, label="measured"),
             Line2D([], [], color="k", marker="o", mfc="white", ls="", label="predicted (mean +- std)")]
    if len(labels) <= 12:
        ax.legend(handles=extra + handles, fontsize=7, title=legend_title, title_fontsize=7, ncol=2 if len(labels) > 5 else 1)
    else:
        ax.legend(handles=extra, fontsize=7)
    if title:
        ax.set_title(title, fontsize=10)


def rate_capability_series(rows: list[dict[str, Any]], names: list[str], by: str = "source"
                           ) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Group a table of measured (``<target>``) and predicted (``<target>_pred``) values per crop by the
    column ``by``: measured mean per target, and predicted (mean, std) per target, in natural order."""
    series: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        series.setdefault(str(r.get(by, r.get("source"))), []).append(r)

    def order(v: str) -> tuple[int, Any]:
        try:
            return (0, float(v))
        except ValueError:
            return (1, v)
    measured, predicted = {}, {}
    for label in sorted(series, key=order):
        rs = series[label]
        measured[label] = np.array([np.mean([r[n] for r in rs]) for n in names])
        p = np.array([[r[f"{n}_pred"] for n in names] for r in rs])
        predicted[label] = (p.mean(0), p.std(0))
    return measured, predicted


def rate_capability_figure(rows: list[dict[str, Any]], names: list[str], c_rates: list[float] | None,
                           path: str | Path, *, by: str = "source", units: str = "", title: str | None = None) -> Path:
    """The rate-capability plot of a cross-validation (or any table of measured and predicted values per crop):
    one series per value of ``by`` (e.g. porosity), predicted mean +- std over its crops (and folds)."""
    measured, predicted = rate_capability_series(rows, names, by)
    fig = _figure(6.4, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    draw_rate_capability(ax, measured, predicted, names, c_rates, units=units,
                         title=title or "Rate capability: measured and predicted", legend_title=by)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


# --------------------------------------------------------------------------- explanations

def heatmap_style(signed: bool, limits: tuple[float, float] | None = None, values: Any = None) -> dict[str, Any]:
    """imshow keywords for a heatmap: a diverging colormap with symmetric limits for signed maps, a
    sequential one from 0 for unsigned maps (limits from the 99.5th percentile of ``values`` if not given)."""
    if limits is None:
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        a = float(np.percentile(np.abs(v), 99.5)) if v.size else 1.0
        a = a if a > 0 else 1.0
        limits = (-a, a) if signed else (0.0, a)
    return {"cmap": "RdBu_r" if signed else "inferno", "vmin": limits[0], "vmax": limits[1],
            "interpolation": "bilinear"}


def _show_gray(ax: Any, img: np.ndarray, **kw: Any) -> None:
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, **kw)


def explanation_figure(tiles: np.ndarray, explanations: dict[str, Any], path: str | Path, *, map_index: int = 0,
                       alpha: float = 0.55, titles: list[str] | None = None) -> Path:
    """PNG grid: one row per tile, the tile and then each method's map (``map_index``) over it, each method
    with its own colour scale (shared by its tiles) and colour bar."""
    n, methods = len(tiles), list(explanations)
    fig = _figure(2.3 * (1 + len(methods)), 2.3 * n * tiles.shape[1] / tiles.shape[2] + 0.8)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(n, 1 + len(methods), squeeze=False)
    for m_i, m in enumerate(methods):
        e = explanations[m]
        style = heatmap_style(e.signed, values=e.maps[:, map_index])
        for r in range(n):
            ax = axes[r, 1 + m_i]
            _show_gray(ax, tiles[r])
            im = ax.imshow(e.maps[r, map_index], alpha=alpha, **style)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(f"{m}\n{e.names[r][map_index]}" if e.task == "regress" else m, fontsize=8)
        fig.colorbar(im, ax=axes[:, 1 + m_i].tolist(), shrink=0.6, pad=0.02)
    first = next(iter(explanations.values()))
    for r in range(n):
        _show_gray(axes[r, 0], tiles[r])
        axes[r, 0].set_axis_off()
        label = titles[r] if titles else (f"{first.names[r][map_index]} ({first.scores[r].max():.2f})"
                                           if first.task == "classify" else "tile")
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
        _show_gray(ax, tile)
        ax.imshow(ex.maps[0, k], alpha=0.55, **heatmap_style(ex.signed, values=ex.maps[0, k]))
        ax.set_title(f"{ex.names[0][k]}\n{ex.scores[0, ex.targets[0, k]]:.2f}", fontsize=7)
        ax.set_axis_off()
    fig.tight_layout()


def heatmap_overlay_figure(mosaic: Any, heatmap: Any, path: str | Path, index: int = 0, alpha: float = 0.55,
                           title: str | None = None) -> Path:
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
    fig = _figure(8, 8 * H / W + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    _show_gray(ax, img, extent=(-0.5, W - 0.5, H - 0.5, -0.5))
    cell = lf * step  # mosaic pixels per shown heatmap pixel, from the mosaic's top-left corner
    im = ax.imshow(hm, alpha=alpha, extent=(-0.5, hm.shape[1] * cell - 0.5, hm.shape[0] * cell - 0.5, -0.5),
                   **heatmap_style(heatmap.signed, tuple(heatmap.limits[index])))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.set_axis_off()
    fig.colorbar(im, ax=ax, shrink=0.7, pad=0.01)
    ax.set_title(title or f"{heatmap.method}: {heatmap.names[index]}", fontsize=9)
    fig.savefig(str(path))
    return Path(path)


def randomisation_figure(report: dict[str, Any], path: str | Path) -> Path:
    """Cascading model-randomisation curves: rank correlation of |map| with the trained model's as more
    stages (from the output down) are re-initialised."""
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for m, r in report.items():
        steps = r.get("cascade") or []
        labels = ["trained"] + [s for s, _ in steps]
        ax.plot(range(len(labels)), [1.0] + [v for _, v in steps], marker="o", label=f"{m} (all: {r['spearman_abs']:.2f})")
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
    fig = _figure(9, 3.6)
    a_del, a_ins = fig.subplots(1, 2)
    for m, r in results.items():
        fr = r["fractions"]
        a_del.plot(fr, r["deletion"].mean((0, 1)), label=f"{m} ({r['deletion_auc']:.3f})")
        a_ins.plot(fr, r["insertion"].mean((0, 1)), label=f"{m} ({r['insertion_auc']:.3f})")
    first = next(iter(results.values()))
    fr = first["fractions"]
    a_del.plot(fr, first["random_deletion"], color="0.5", ls="--", label=f"random order ({first['random_deletion_auc']:.3f})")
    a_ins.plot(fr, first["random_insertion"], color="0.5", ls="--", label=f"random order ({first['random_insertion_auc']:.3f})")
    for ax, t in ((a_del, "Deletion (lower area = more faithful)"), (a_ins, "Insertion (higher area = more faithful)")):
        ax.set_xlabel("fraction of pixels removed / inserted")
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=7)
    a_del.set_ylabel("target score")
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)
