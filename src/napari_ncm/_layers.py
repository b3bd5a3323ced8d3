"""Layer-data tuples for napari from ncm_core objects (mosaics, predictions)."""

from __future__ import annotations

from typing import Any

import numpy as np

LayerData = tuple[Any, dict[str, Any], str]


def mosaic_layers(mosaic: Any, name: str | None = None) -> list[LayerData]:
    """An Image layer for a :class:`ncm_core.io.mosaic.Mosaic` (multiscale when it has levels)."""
    data = mosaic.levels if len(mosaic.levels) > 1 else mosaic.data
    kw: dict[str, Any] = {
        "name": name or mosaic.name,
        "scale": mosaic.scale,
        "translate": mosaic.translate,
        "rgb": mosaic.channels in (3, 4),
        "multiscale": len(mosaic.levels) > 1,
        "metadata": {"ncm_source": mosaic.source, "pixel_size": mosaic.pixel_size, "unit": mosaic.unit},
    }
    if not kw["rgb"] and mosaic.dtype == np.uint8:
        kw["contrast_limits"] = (0, 255)
    return [(data, kw, "image")]


def label_colormap(colors: dict[int, tuple[float, ...]]):
    from napari.utils.colormaps import DirectLabelColormap

    cdict = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **{int(k): tuple(v) for k, v in colors.items()}}
    return DirectLabelColormap(color_dict=cdict)


def class_labels_kwargs(
    class_names: list[str], colors: list[tuple[float, ...]], background: str = "none"
) -> dict[str, Any]:
    """Labels-layer colours and features: value k + 1 is class k, 0 is background."""
    return {
        "colormap": label_colormap({k + 1: c for k, c in enumerate(colors)}),
        "features": {"index": list(range(len(class_names) + 1)), "class": [background, *class_names]},
    }


def prediction_layers(pred: Any, name: str = "prediction") -> list[LayerData]:
    """Labels (class per tile), confidence and per-class probabilities of a prediction,
    with the scale and translate that overlay them on the mosaic."""
    import dask.array as da

    scale, trans = pred.world_transform()
    meta = {"ncm_prediction": str(pred.path), "class_names": pred.class_names, "grid": pred.grid.to_dict()}
    labels_kw = {
        "name": f"{name} classes",
        "scale": scale,
        "translate": trans,
        "opacity": 0.5,
        "metadata": meta,
        **class_labels_kwargs(pred.class_names, pred.colors, "not predicted"),
    }
    probs = pred.probabilities
    conf = da.nanmax(probs, axis=0) if probs.shape[0] else probs[0]
    conf_kw = {
        "name": f"{name} confidence",
        "scale": scale,
        "translate": trans,
        "colormap": "magma",
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.6,
        "visible": False,
        "metadata": meta,
    }
    prob_kw = {
        "name": f"{name} probabilities",
        "scale": (1.0, *scale),
        "translate": (0.0, *trans),
        "axis_labels": ("class", "y", "x"),
        "colormap": "viridis",
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.6,
        "visible": False,
        "metadata": {**meta, "axis_0": "class", "axis_0_names": pred.class_names},
    }
    layers = [(pred.labels, labels_kw, "labels"), (conf, conf_kw, "image"), (probs, prob_kw, "image")]
    ood = pred.ood
    if ood is not None:
        flagged = (ood > 1).astype(np.uint8)  # NaN (not predicted) compares False
        frac = pred.attrs.get("ood_fraction", float("nan"))
        ood_kw = {
            "name": f"{name} out-of-distribution",
            "scale": scale,
            "translate": trans,
            "opacity": 0.6,
            "colormap": label_colormap({1: (1.0, 0.1, 0.1, 1.0)}),
            "visible": frac > 0.05,
            "features": {"index": [0, 1], "class": ["in distribution", "unlike the training tiles"]},
            "metadata": {**meta, "ood_fraction": frac, "ood": pred.attrs.get("ood")},
        }
        layers.append((flagged, ood_kw, "labels"))
    return layers


def heatmap_layers(heatmap: Any, name: str | None = None) -> list[LayerData]:
    """One Image layer per map of a :class:`ncm_core.explain.heatmaps.Heatmap`, aligned with the mosaic (multiscale
    when the heatmap has coarser levels): a diverging colormap with symmetric limits for signed maps
    (Grad-RAM, guided backpropagation, occlusion), a sequential one from 0 otherwise."""
    scale, trans = heatmap.world_transform()
    levels = heatmap.levels
    base = name or heatmap.method
    out: list[LayerData] = []
    for k, map_name in enumerate(heatmap.names):
        data = [lv[k] for lv in levels]
        kw = {
            "name": f"{base} {map_name}",
            "scale": scale,
            "translate": trans,
            "colormap": "RdBu_r" if heatmap.signed else "inferno",
            "contrast_limits": tuple(float(v) for v in heatmap.limits[k]),
            "opacity": 0.6,
            "blending": "translucent",
            "visible": k == 0,
            "multiscale": len(data) > 1,
            "metadata": {
                "ncm_heatmap": str(heatmap.path),
                "method": heatmap.method,
                "map": map_name,
                "signed": heatmap.signed,
                "factor": heatmap.factor,
            },
        }
        out.append((data if len(data) > 1 else data[0], kw, "image"))
    return out
