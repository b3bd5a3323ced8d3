"""NGFF (OME-Zarr 0.5) metadata and writing: multiscale images and label groups, chunk by chunk.

NGFF metadata is plain JSON; it is written here directly rather than through ome-zarr-py, to keep
chunk-aligned control of the writes (each chunk written by exactly one task). Opening any image as a
:class:`~ncm_core.io.mosaic.Mosaic`, and :func:`~ncm_core.io.mosaic.write_ome_zarr`, are in
:mod:`ncm_core.io.mosaic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

NGFF_VERSION = "0.5"


def ngff_axes(ndim_extra: Sequence[str] = (), unit: str | None = "micrometer") -> list[dict[str, str]]:
    """NGFF axes metadata: leading non-spatial axes (``"c"``), then y and x."""
    out: list[dict[str, str]] = [
        {"name": a, "type": "channel" if a == "c" else "time" if a == "t" else "space"} for a in ndim_extra
    ]
    for a in ("y", "x"):
        d = {"name": a, "type": "space"}
        if unit:
            d["unit"] = unit
        out.append(d)
    return out


def ngff_multiscales(
    n_levels: int,
    scale: tuple[float, float],
    translate: tuple[float, float],
    *,
    leading: Sequence[str] = (),
    unit: str | None = "micrometer",
    name: str = "image",
    factor: int = 2,
) -> dict[str, Any]:
    """NGFF ``multiscales`` entry for ``n_levels`` levels downsampled by ``factor``.

    ``translate`` is the world position of the centre of pixel (0, 0) of level 0;
    coarser levels are shifted so their pixel centres stay on their footprints.
    """
    datasets = []
    for k in range(n_levels):
        f = factor**k
        s = [scale[0] * f, scale[1] * f]
        t = [translate[0] + scale[0] * (f - 1) / 2, translate[1] + scale[1] * (f - 1) / 2]
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0] * len(leading) + s},
                    {"type": "translation", "translation": [0.0] * len(leading) + t},
                ],
            }
        )
    return {"name": name, "axes": ngff_axes(leading, unit), "datasets": datasets}


def pyramid(arr: da.Array, n_levels: int, labels: bool) -> list[da.Array]:
    levels = [arr]
    for _ in range(1, n_levels):
        prev = levels[-1]
        if min(prev.shape[:2]) < 2:
            break
        axes = {0: 2, 1: 2}
        if labels:  # nearest (top-left sample) for label images
            nxt = prev[::2, ::2]
        else:
            nxt = da.coarsen(np.mean, prev.astype(np.float32), axes, trim_excess=True).astype(prev.dtype)
        levels.append(nxt)
    return levels


def write_image(
    root: Any,
    arr: da.Array,
    *,
    scale: tuple[float, float],
    translate: tuple[float, float],
    unit: str | None,
    chunks: int = 512,
    levels: int = 1,
    name: str = "image",
) -> dict[str, Any]:
    """Write ``arr`` (``yx`` or ``yxc``) as the multiscale image of the zarr group ``root`` (channels first,
    as NGFF wants) with a 2x pyramid of ``levels`` levels; returns its ``multiscales`` entry."""
    rgb = arr.ndim == 3
    leading = ("c",) if rgb else ()
    lv = pyramid(arr, levels, labels=False)
    ms = ngff_multiscales(len(lv), scale, translate, leading=leading, unit=unit, name=name)
    for k, level in enumerate(lv):
        data = level.transpose(2, 0, 1) if rgb else level
        ch = ((data.shape[0],) if rgb else ()) + (chunks, chunks)
        z = root.create_array(
            str(k),
            shape=data.shape,
            dtype=data.dtype,
            chunks=ch,
            dimension_names=[a["name"] for a in ms["axes"]],
            config={"write_empty_chunks": True},  # every chunk stored: an absent one is lost (ncm_core.io.presence)
        )
        da.store(data.rechunk(ch), z, lock=False, compute=True)
    root.attrs["ome"] = {"version": NGFF_VERSION, "multiscales": [ms]}
    return ms


def write_label_group(
    parent: Any,
    name: str | None,
    data: da.Array,
    *,
    scale: tuple[float, float],
    translate: tuple[float, float],
    unit: str | None,
    chunks: int | tuple[int, int] = 512,
    levels: int = 1,
    colors: dict[int, tuple[float, float, float, float]] | None = None,
    properties: dict[int, dict[str, Any]] | None = None,
    source: str = "../../",
    written: int = 0,
) -> Any:
    """Write a label image as an NGFF ``image-label`` group ``name`` under ``parent`` (``None``: into ``parent``).

    ``written``: the first levels already in the group (e.g. level 0 written block by block by the
    streaming engine, with ``data`` read from it); only the coarser levels and the metadata are written."""
    g = parent if name is None else parent.require_group(name) if written else parent.create_group(name)
    lv = pyramid(data, levels, labels=True)
    ms = ngff_multiscales(len(lv), scale, translate, unit=unit, name=name or "labels")
    ch = (chunks, chunks) if isinstance(chunks, int) else tuple(chunks)
    for k, level in enumerate(lv):
        if k < written:
            continue
        z = g.create_array(str(k), shape=level.shape, dtype=level.dtype, chunks=ch, dimension_names=["y", "x"])
        da.store(level.rechunk(ch), z, lock=False, compute=True)
    image_label: dict[str, Any] = {"version": NGFF_VERSION, "source": {"image": source}}
    if colors:
        image_label["colors"] = [
            {"label-value": int(v), "rgba": [int(round(c * 255)) for c in rgba]} for v, rgba in colors.items()
        ]
    if properties:
        image_label["properties"] = [{"label-value": int(v), **p} for v, p in properties.items()]
    g.attrs["ome"] = {"version": NGFF_VERSION, "multiscales": [ms], "image-label": image_label}
    return g


def read_label_classes(path: str | Path) -> dict[int, str]:
    """Class name of each label value of an NGFF label image (its ``image-label`` properties)."""
    import zarr

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:
        return {}
    il = attrs.get("ome", attrs).get("image-label", {})
    return {int(p["label-value"]): str(p["class"]) for p in il.get("properties", []) if "class" in p}
