"""Layer-data tuples for napari from ncm_core objects (mosaics, predictions)."""

from __future__ import annotations

import math
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
    class_names: list[str],
    colors: list[tuple[float, ...]],
    background: str = "none",
    values: list[int] | None = None,
) -> dict[str, Any]:
    """Labels-layer colours and features: value ``values[k]`` (default k + 1) is class k, 0 is background."""
    values = list(range(1, len(class_names) + 1)) if values is None else [int(v) for v in values]
    return {
        "colormap": label_colormap(dict(zip(values, colors, strict=True))),
        "features": {"index": [0, *values], "class": [background, *class_names]},
    }


def layer_classes(layer: Any) -> dict[str, int]:
    """``{class name: label value}`` of a class-map Labels layer (its ``index`` and ``class`` features);
    empty for other layers. The background (value 0) is left out."""
    feats = getattr(layer, "features", None)
    if feats is None or "class" not in feats or "index" not in feats:
        return {}
    return {str(n): int(v) for v, n in zip(feats["index"], feats["class"], strict=False) if int(v) != 0}


def viewer_classes(viewer: Any) -> dict[str, int]:
    """The viewer's class table, ``{class name: label value}``: from its class-map Labels layers that are
    not predictions (a truth map, an annotation layer), the first one holding a name deciding its value.
    A new prediction takes these values, so a class has one value (and one colour) in every layer."""
    table: dict[str, int] = {}
    for layer in viewer.layers:
        if (layer.metadata or {}).get("ncm_prediction"):
            continue
        for name, value in layer_classes(layer).items():
            table.setdefault(name, value)
    return table


def class_values(class_names: list[str], classes: dict[str, int] | None) -> list[int]:
    """The label value of each class: its value in ``classes`` (matched by name) when that table holds
    every class with distinct values, else k + 1."""
    default = list(range(1, len(class_names) + 1))
    if not classes or any(n not in classes for n in class_names):
        return default
    values = [classes[n] for n in class_names]
    return values if len(set(values)) == len(values) and min(values) > 0 else default


def remap_labels(labels: Any, values: list[int]) -> Any:
    """Labels with value k + 1 replaced by ``values[k]`` (0 stays 0), lazily for a dask array."""
    if values == list(range(1, len(values) + 1)):
        return labels
    lut = np.zeros(len(values) + 1, np.uint16 if max(values) > 255 else np.uint8)
    lut[1:] = values
    if hasattr(labels, "map_blocks"):
        return labels.map_blocks(lambda b: lut[b], dtype=lut.dtype)
    return lut[np.asarray(labels)]


#: the most sub-cells a clipped per-tile layer may have (beyond that, edge tiles are drawn whole)
MAX_CLIPPED_CELLS = 1 << 26


class CellLayout:
    """How a per-tile array of a prediction is drawn over the mosaic, clipped to the image.

    The grid pads the image to whole tiles, so the last row and column of tiles stick out past the
    image by up to a tile less one pixel. Drawn one value per tile, they would cover pixels that do
    not exist; so each tile is drawn as ``factor`` x ``factor`` sub-cells of ``sub`` pixels (``sub``
    the largest size that divides both the tile and the part of the edge tiles inside the image) and
    the sub-cells past the image are cut off. This needs ``stride == tile``; with overlapping tiles,
    or where the clipped array would exceed :data:`MAX_CLIPPED_CELLS`, a tile is one cell (factor 1)
    and edge tiles are drawn whole.
    """

    def __init__(self, pred: Any) -> None:
        g = pred.grid
        rows, cols = g.shape
        h, w = (n - o for n, o in zip(g.image_shape, g.offset, strict=True))
        keep_y, keep_x = h - (rows - 1) * g.stride, w - (cols - 1) * g.stride
        factor, sub = 1, g.tile
        if g.stride == g.tile and (keep_y < g.tile or keep_x < g.tile):
            s = math.gcd(g.tile, keep_y, keep_x)
            if rows * cols * (g.tile // s) ** 2 <= MAX_CLIPPED_CELLS:
                factor, sub = g.tile // s, s
        self.factor = factor
        self.shape = (h // sub, w // sub) if factor > 1 else (rows, cols)
        px = pred.pixel_size or 1.0
        if factor == 1:
            self.scale, self.translate = pred.world_transform()
        else:
            self.scale = (px * sub, px * sub)
            self.translate = tuple(t + px * (o + (sub - 1) / 2) for t, o in zip(pred.translate, g.offset, strict=True))

    def __call__(self, arr: Any) -> Any:
        """``arr`` (the grid's last two axes) drawn with this layout (lazily)."""
        if self.factor == 1:
            return arr
        import dask.array as da

        a = arr if isinstance(arr, da.Array) else da.from_array(arr)
        f = self.factor
        a = da.repeat(da.repeat(a, f, axis=-2), f, axis=-1)
        return a[..., : self.shape[0], : self.shape[1]]

    def cell(self, data_index: Any) -> tuple[int, int]:
        """The grid cell (i, j) of a data position (y, x) of a layer drawn with this layout."""
        return tuple(int(np.round(v)) // self.factor for v in data_index[-2:])  # type: ignore[return-value]


def prediction_layers(pred: Any, name: str = "prediction", classes: dict[str, int] | None = None) -> list[LayerData]:
    """Labels (class per tile), confidence and out-of-distribution layers of a prediction, with the scale
    and translate that overlay them on the mosaic.

    A class's colour follows its name (:func:`ncm_core.io.colors.class_colors`); with ``classes``
    (the viewer's ``{name: label value}``, see :func:`viewer_classes`) the label values follow the
    names too, so a prediction read in another class order matches the truth or annotation layer.
    The per-class probabilities are a layer on demand (:func:`probability_layer`).
    """
    import dask.array as da

    cells = CellLayout(pred)
    scale, trans = cells.scale, cells.translate
    values = class_values(list(pred.class_names), classes)
    meta = {
        "ncm_prediction": str(pred.path),
        "class_names": pred.class_names,
        "class_values": values,
        "grid": pred.grid.to_dict(),
        "cell_factor": cells.factor,
    }
    labels_kw = {
        "name": f"{name} classes",
        "scale": scale,
        "translate": trans,
        "opacity": 0.5,
        "metadata": meta,
        **class_labels_kwargs(pred.class_names, pred.colors, "not predicted", values),
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
    layers = [(cells(remap_labels(pred.labels, values)), labels_kw, "labels"), (cells(conf), conf_kw, "image")]
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
        layers.append((cells(flagged), ood_kw, "labels"))
    return layers


def probability_layer(pred: Any, class_name: str, name: str = "prediction") -> LayerData:
    """The probability of one class per tile, as an Image layer over the mosaic (added on demand, so that
    no hidden 3-D layer adds a class slider to the viewer)."""
    cells = CellLayout(pred)
    k = list(pred.class_names).index(class_name)
    kw = {
        "name": f"{name} P({class_name})",
        "scale": cells.scale,
        "translate": cells.translate,
        "colormap": "viridis",
        "contrast_limits": (0.0, 1.0),
        "opacity": 0.6,
        "metadata": {
            "ncm_prediction": str(pred.path),
            "class_names": pred.class_names,
            "class": class_name,
            "cell_factor": cells.factor,
        },
    }
    return cells(pred.probabilities[k]), kw, "image"


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


def segmentation_layers(seg: Any, classes: dict[str, int] | None = None) -> list[LayerData]:
    """The class map of a :class:`ncm_core.inference.segmentation.Segmentation` as a multiscale Labels layer
    (class names on hover, the bundle's colours), and its class probabilities, when written, as one hidden
    Image layer per class at their coarser scale; all aligned with the mosaic. With ``classes`` (the
    viewer's ``{name: label value}``) the label values follow the names, as for predictions."""
    values = class_values(list(seg.classes), classes)
    scale, trans = seg.world_transform("labels")
    levels = [remap_labels(lv, values) for lv in seg.label_levels()]
    meta = {"ncm_segmentation": str(seg.path), "class_names": list(seg.classes), "class_values": values}
    kw = {
        "name": seg.name,
        "scale": scale,
        "translate": trans,
        "opacity": 0.5,
        "multiscale": len(levels) > 1,
        "metadata": meta,
        **class_labels_kwargs(list(seg.classes), list(seg.colors), "not predicted", values),
    }
    out: list[LayerData] = [(levels if len(levels) > 1 else levels[0], kw, "labels")]
    probs = seg.probability_levels()
    if probs:
        pscale, ptrans = seg.world_transform("probabilities")
        for k, c in enumerate(seg.classes):
            data = [lv[k] for lv in probs]
            pkw = {
                "name": f"{seg.name} P({c})",
                "scale": pscale,
                "translate": ptrans,
                "colormap": "viridis",
                "contrast_limits": (0.0, 1.0),
                "opacity": 0.6,
                "visible": False,
                "multiscale": len(data) > 1,
                "metadata": {**meta, "class": c},
            }
            out.append((data if len(data) > 1 else data[0], pkw, "image"))
    return out
