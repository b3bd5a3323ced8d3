"""Reader: mosaics (zarr, OME-Zarr with its labels, TIFF/OME-TIFF) lazily, and napari-ncm predictions,
heatmaps and segmentations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_ncm._layers import (
    LayerData,
    class_labels_kwargs,
    heatmap_layers,
    mosaic_layers,
    prediction_layers,
    segmentation_layers,
)

SUFFIXES = (".zarr", ".tif", ".tiff")


def _is_zarr_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader for ``path`` if napari-ncm can open it, else None."""
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    p = Path(path)
    if not (p.name.lower().endswith(SUFFIXES) or _is_zarr_dir(p)):
        return None
    if not p.exists():
        return None
    return read


def _ngff_labels(path: Path) -> list[LayerData]:
    """Label images stored under an OME-Zarr image's ``labels/`` group."""
    import zarr

    from ncm_core.io.mosaic import open_mosaic

    try:
        root = zarr.open_group(str(path), mode="r")
        lg = root["labels"]
    except Exception:
        return []
    names = dict(lg.attrs).get("ome", dict(lg.attrs)).get("labels", [])
    out = []
    for name in names:
        m = open_mosaic(path / "labels" / name)
        attrs = dict(root[f"labels/{name}"].attrs)
        il = attrs.get("ome", attrs).get("image-label", {})
        kw: dict[str, Any] = {
            "name": name,
            "scale": m.scale,
            "translate": m.translate,
            "opacity": 0.4,
            "visible": False,
            "multiscale": len(m.levels) > 1,
        }
        props = {p["label-value"]: p for p in il.get("properties", [])}
        colors = {c["label-value"]: tuple(v / 255 for v in c["rgba"]) for c in il.get("colors", [])}
        if props and colors:
            n = max(props)
            names_ = [str(props.get(v, {}).get("class", v)) for v in range(1, n + 1)]
            kw.update(
                class_labels_kwargs(
                    names_,
                    [colors.get(v, (0.5, 0.5, 0.5, 1.0)) for v in range(1, n + 1)],
                    str(props.get(0, {}).get("class", "background")),
                )
            )
        out.append((m.levels if len(m.levels) > 1 else m.data, kw, "labels"))
    return out


def _open_viewer_classes() -> dict[str, int] | None:
    """The class table of the viewer a prediction is opened into (its truth or annotation layers), so that
    a prediction written in another class order takes their label values by name; None without a viewer."""
    try:
        import napari

        from napari_ncm._layers import viewer_classes

        viewer = napari.current_viewer()
        return None if viewer is None else viewer_classes(viewer)
    except Exception:  # no napari application (the reader called from a script)
        return None


def _volume_layers(path: Path) -> list[LayerData]:
    """A generated volume (ncm generate volume): a 3D labels layer, value k + 1 = phase k."""
    import dask.array as da
    import zarr

    root = zarr.open_group(str(path), mode="r")
    ms = dict(root.attrs)["ome"]["multiscales"][0]
    scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
    return [(da.from_zarr(root["0"]), {"name": path.name.split(".")[0], "scale": scale, "opacity": 0.8}, "labels")]


def read(path: str | list[str]) -> list[LayerData]:
    """Open a mosaic or a prediction as layer-data tuples (lazy)."""
    from ncm_core.inference.predict import is_prediction, open_prediction
    from ncm_core.io.mosaic import open_mosaic

    if isinstance(path, list):
        return [layer for p in path for layer in read(p)]
    p = Path(path)
    if is_prediction(p):
        return prediction_layers(open_prediction(p), name=p.name.split(".")[0], classes=_open_viewer_classes())
    from ncm_core.explain.heatmaps import is_heatmap, open_heatmap

    if is_heatmap(p):
        return heatmap_layers(open_heatmap(p), name=p.name.split(".")[0])
    from ncm_core.inference.segmentation import is_segmentation, open_segmentation

    if is_segmentation(p):
        return segmentation_layers(open_segmentation(p), classes=_open_viewer_classes())
    from ncm_core.inference.generate import is_volume

    if is_volume(p):
        return _volume_layers(p)
    layers = mosaic_layers(open_mosaic(p))
    if p.is_dir():
        layers += _ngff_labels(p)
    return layers
