"""Writers: class-map Labels layers and heatmap/probability Image layers as NGFF OME-Zarr,
keeping their scale and translate so they still overlay the mosaic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _prepare(path: str) -> Path:
    """The output path, with ``.zarr`` added if missing (napari has asked before replacing it)."""
    p = Path(path)
    if not p.name.endswith(".zarr"):
        p = p.with_name(p.name + ".zarr")
    return p


def _transform(meta: dict[str, Any], ndim: int) -> tuple[tuple[float, float], tuple[float, float]]:
    scale = tuple(meta.get("scale", (1.0,) * ndim))[-2:]
    trans = tuple(meta.get("translate", (0.0,) * ndim))[-2:]
    return scale, trans  # type: ignore[return-value]


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as an NGFF image-label (class names and colours kept from its features/colormap)."""
    import dask.array as da
    import zarr

    from ncm_core.io.ngff import write_label_group
    from ncm_core.outputs import atomic_output

    p = _prepare(path)
    arr = da.asarray(data[0] if meta.get("multiscale") else data)
    if arr.ndim != 2:
        raise ValueError(f"{p}: napari-ncm writes 2-D label layers, this one has {arr.ndim} dimensions")
    scale, trans = _transform(meta, arr.ndim)
    feats = meta.get("features")
    props = None
    if feats is not None and len(feats) and "class" in feats and "index" in feats:
        props = {int(i): {"class": str(c)} for i, c in zip(feats["index"], feats["class"])}
    colors = None
    cmap = meta.get("colormap")
    if cmap is not None and hasattr(cmap, "color_dict"):
        colors = {
            int(k): tuple(float(x) for x in v) for k, v in cmap.color_dict.items() if k is not None and int(k) > 0
        }
    with atomic_output(p, overwrite=True, folder=False, replace_any=True) as part:  # the save dialog asked
        root = zarr.open_group(str(part), mode="w", zarr_format=3)
        write_label_group(
            root,
            None,
            arr,
            scale=scale,
            translate=trans,
            unit=None,
            chunks=tuple(min(512, s) for s in arr.shape),
            colors=colors,
            properties=props,
            source="../",
        )
    return [str(p)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a 2-D image, or a stack (e.g. class probabilities, classes first), as an NGFF image."""
    import dask.array as da
    import zarr

    from ncm_core.io.ngff import NGFF_VERSION, ngff_multiscales
    from ncm_core.outputs import atomic_output

    p = _prepare(path)
    arr = da.asarray(data[0] if meta.get("multiscale") else data)
    if meta.get("rgb"):
        arr = da.moveaxis(arr, -1, 0)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{p}: napari-ncm writes 2-D images or (channel, y, x) stacks, not {arr.ndim}-D")
    scale, trans = _transform(meta, arr.ndim)
    leading = ("c",) if arr.ndim == 3 else ()
    chunks = arr.shape[:-2] + tuple(min(512, s) for s in arr.shape[-2:])
    with atomic_output(p, overwrite=True, folder=False, replace_any=True) as part:  # the save dialog asked
        root = zarr.open_group(str(part), mode="w", zarr_format=3)
        z = root.create_array(
            "0",
            shape=arr.shape,
            dtype=arr.dtype,
            chunks=chunks,
            fill_value=np.nan if np.issubdtype(arr.dtype, np.floating) else 0,
        )
        da.store(arr.rechunk(chunks), z, lock=False)
        root.attrs["ome"] = {
            "version": NGFF_VERSION,
            "multiscales": [
                ngff_multiscales(1, scale, trans, leading=leading, unit=None, name=str(meta.get("name", "image")))
            ],
        }
    return [str(p)]
