"""Mosaics: opening them lazily, and saving one as OME-Zarr (NGFF).

:func:`open_mosaic` turns anything a user may point at (a zarr array or group,
an OME-Zarr multiscale image, a TIFF/OME-TIFF, a PNG/JPEG, a numpy or dask
array) into a :class:`Mosaic`: a lazy dask array with axes ``yx`` or ``yxc``,
its pixel size and world offset, and the lower-resolution levels when the
source has them. Nothing is read until a region is computed; TIFFs are read
through tifffile's zarr interface, tile by tile.

:func:`write_ome_zarr` writes an NGFF 0.5 image (zarr v3) with an optional
pyramid, chunk by chunk, under ``<path>.partial`` then renamed; the NGFF metadata and
chunk-aligned writing are in :mod:`ncm_core.io.ngff`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from ncm_core.errors import NcmError
from ncm_core.io.ngff import (  # noqa: F401  (also importable from here, as before)
    NGFF_VERSION,
    ngff_axes,
    ngff_multiscales,
    read_label_classes,
    write_image,
    write_label_group,
)
from ncm_core.io.presence import missing_map

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclass
class Mosaic:
    """A lazily loaded 2-D image, grayscale (``yx``) or with channels last (``yxc``).

    ``pixel_size`` is in ``unit`` per pixel (``None`` if unknown) and
    ``translate`` is the world position of pixel (0, 0)'s centre, in ``unit``.
    ``levels`` holds the resolution pyramid, ``levels[0] is data``.
    """

    data: da.Array
    pixel_size: float | None = None
    unit: str = "micrometer"
    translate: tuple[float, float] = (0.0, 0.0)
    source: str | None = None
    levels: list[da.Array] = field(default_factory=list)
    name: str = "mosaic"
    # chunks absent from a zarr store (ncm_core.io.presence): None, or a function that finds them when first
    # asked (one listing of the store, not at every open); see absent_chunks()
    missing: Any = None

    def __post_init__(self) -> None:
        if not self.levels:
            self.levels = [self.data]

    def absent_chunks(self) -> da.Array | None:
        """Lazy ``yx`` booleans, True where a zarr chunk is absent from the store; None when every chunk is
        stored or the source is not zarr. The store is listed on the first call only."""
        if callable(self.missing):
            self.missing = self.missing()
        return self.missing

    @property
    def axes(self) -> str:
        return "yx" if self.data.ndim == 2 else "yxc"

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width in pixels."""
        return int(self.data.shape[0]), int(self.data.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.data.ndim == 2 else int(self.data.shape[2])

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def scale(self) -> tuple[float, float]:
        """World size of one pixel (``pixel_size`` or 1 when unknown)."""
        s = self.pixel_size or 1.0
        return (s, s)

    def __repr__(self) -> str:
        ps = f"{self.pixel_size:g} {self.unit}/px" if self.pixel_size else "pixel size unknown"
        return (
            f"Mosaic({self.shape[0]}x{self.shape[1]} px, {self.axes}, {self.dtype}, {ps}, "
            f"{len(self.levels)} level(s), chunks={self.data.chunksize})"
        )


def _label(source: Any) -> str:
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.bool_)):
        raise NcmError(f"unsupported pixel type {dtype}; expected unsigned/signed integers or floats", where)


def _to_yxc(arr: da.Array, axes: str | None, where: str) -> da.Array:
    """Bring an array to ``yx`` or ``yxc``, squeezing singleton t/z axes."""
    if axes is None:
        if arr.ndim == 2:
            axes = "yx"
        elif arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
            axes = "yxc"
        elif arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4):
            axes = "cyx"
        else:
            raise NcmError(
                f"cannot interpret an array of shape {tuple(arr.shape)} as a 2-D image "
                "(expected (Y, X), (Y, X, C) or (C, Y, X) with at most 4 channels)",
                where,
            )
    axes = axes.lower()
    if len(axes) != arr.ndim:
        raise NcmError(f"axes {axes!r} do not match an array of {arr.ndim} dimensions", where)
    for ax in "tz":
        if ax in axes:
            i = axes.index(ax)
            if arr.shape[i] != 1:
                raise NcmError(
                    f"image has {arr.shape[i]} planes along axis {ax!r}; napari-ncm expects a single 2-D plane", where
                )
            arr = arr[(slice(None),) * i + (0,)]
            axes = axes.replace(ax, "")
    if set(axes) - set("yxcs"):
        raise NcmError(f"unsupported axes {axes!r}", where)
    axes = axes.replace("s", "c")
    order = [axes.index(a) for a in ("y", "x", "c") if a in axes]
    arr = arr.transpose(order)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] > 4:
        raise NcmError(f"image has {arr.shape[2]} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)", where)
    return arr


def _finish(levels: list[da.Array], axes: str | None, where: str, missing: Any = None, **kw: Any) -> Mosaic:
    levels = [_to_yxc(lv, axes, where) for lv in levels]
    data = levels[0]
    if 0 in data.shape:
        raise NcmError(f"image is empty (shape {tuple(data.shape)})", where)
    _check_dtype(data.dtype, where)
    absent = None
    if missing is not None:  # ``missing``: the zarr array of level 0, listed when first asked

        def absent() -> da.Array | None:
            m = missing_map(missing)
            if m is None:
                return None
            m = _to_yxc(m, axes, where)  # the same axes as the pixels, a chunk's channels together
            return m.any(axis=2) if m.ndim == 3 else m

    return Mosaic(data=data, levels=levels, source=where, missing=absent, **kw)


def _open_ngff(group: Any, where: str) -> Mosaic:
    attrs = dict(group.attrs)
    meta = attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 does not
    ms = meta["multiscales"][0]
    axes_meta = ms.get("axes")
    axes = "".join(a["name"] if isinstance(a, dict) else a for a in axes_meta) if axes_meta else None
    units = (
        [a.get("unit") for a in axes_meta if isinstance(a, dict) and a.get("name") in ("y", "x")] if axes_meta else []
    )
    levels, scale0, trans0, missing = [], None, None, None
    for k, ds in enumerate(ms["datasets"]):
        try:
            arr = group[ds["path"]]
        except KeyError:
            raise NcmError(f"OME-Zarr lists dataset {ds['path']!r} but it is missing", where) from None
        levels.append(da.from_zarr(arr))
        if k == 0:
            missing = arr
            for t in ds.get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    scale0 = t["scale"]
                elif t.get("type") == "translation":
                    trans0 = t["translation"]
    pixel_size, translate = None, (0.0, 0.0)
    if axes and scale0:
        iy, ix = axes.index("y"), axes.index("x")
        pixel_size = float(scale0[ix]) if scale0[ix] != 1 or (units and units[0]) else None
        if trans0:
            translate = (float(trans0[iy]), float(trans0[ix]))
    name = ms.get("name") or Path(where).name.split(".")[0]
    return _finish(
        levels,
        axes,
        where,
        missing=missing,
        pixel_size=pixel_size,
        translate=translate,
        unit=(units[0] if units and units[0] else "micrometer"),
        name=name,
    )


def _open_zarr(path: Path, where: str) -> Mosaic:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many types for damaged stores
        raise NcmError(f"not a readable zarr store ({type(exc).__name__}: {exc})", where) from None
    try:
        if isinstance(node, zarr.Array):
            return _finish([da.from_zarr(node)], None, where, missing=node, name=path.stem)
        attrs = dict(node.attrs)
        if "multiscales" in attrs or "multiscales" in attrs.get("ome", {}):
            return _open_ngff(node, where)
        arrays = [name for name, _ in node.arrays()]
        if len(arrays) == 1 or "0" in arrays:
            arr = node[arrays[0] if len(arrays) == 1 else "0"]
            return _finish([da.from_zarr(arr)], None, where, missing=arr, name=path.stem)
        raise NcmError(
            "zarr group holds no single image: expected an OME-Zarr multiscale image or one array, "
            f"found arrays {arrays or 'none'}",
            where,
        )
    except NcmError:
        raise
    except Exception as exc:
        raise NcmError(f"damaged zarr store ({type(exc).__name__}: {exc})", where) from None


def _tiff_pixel_size(tf: Any) -> float | None:
    try:
        if tf.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tf.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                    size = float(el.get("PhysicalSizeX"))
                    unit = el.get("PhysicalSizeXUnit", "µm")
                    return size * {"nm": 1e-3, "mm": 1e3, "m": 1e6}.get(unit, 1.0)
        page = tf.pages[0]
        xres, unit = page.tags.get("XResolution"), page.tags.get("ResolutionUnit")
        if xres is None or unit is None:
            return None
        num, den = xres.value
        per_unit = num / den if den else 0
        um = {2: 25400.0, 3: 10000.0, 4: 1000.0, 5: 1.0}.get(int(unit.value))  # inch, cm, mm, um
        return um / per_unit if (um and per_unit) else None
    except Exception:
        return None


def _open_tiff(path: Path, where: str) -> Mosaic:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            axes, n_levels = series.axes, len(series.levels)
            pixel_size = _tiff_pixel_size(tf)
        store = tifffile.imread(str(path), aszarr=True, series=0)
        node = zarr.open(store, mode="r")
    except Exception as exc:
        raise NcmError(f"not a readable TIFF ({type(exc).__name__}: {exc})", where) from None
    if isinstance(node, zarr.Array):
        levels = [da.from_zarr(node)]
    else:
        levels = [da.from_zarr(node[str(k)]) for k in range(n_levels)]
    return _finish(levels, axes, where, pixel_size=pixel_size, name=path.name.split(".")[0])


def _open_pil(path: Path, where: str) -> Mosaic:
    import dask
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            probe = np.asarray(im.crop((0, 0, 1, 1)))  # what np.asarray makes of this mode ("P": indices, no bands)
            shape = (im.height, im.width) + probe.shape[2:]
    except Exception as exc:
        raise NcmError(f"not a readable image ({type(exc).__name__}: {exc})", where) from None

    def _read() -> np.ndarray:
        with Image.open(path) as im:
            return np.asarray(im)

    # PNG/JPEG cannot be read by region: one lazy chunk, decoded when first needed.
    arr = da.from_delayed(dask.delayed(_read)(), shape=shape, dtype=probe.dtype)
    return _finish([arr], None, where, name=path.stem)


def open_mosaic(source: Any, *, axes: str | None = None, pixel_size: float | None = None) -> Mosaic:
    """Open a mosaic lazily.

    Parameters
    ----------
    source
        A path to a zarr array/group, an OME-Zarr image, a TIFF/OME-TIFF or a
        PNG/JPEG file; a numpy or dask array; or a :class:`Mosaic`.
    axes
        Axis order of an array source (e.g. ``"cyx"``); guessed when omitted.
    pixel_size
        Overrides the pixel size read from the file (micrometres per pixel).
    """
    if isinstance(source, Mosaic):
        mosaic = source
    elif isinstance(source, (np.ndarray, da.Array)) or hasattr(source, "__array__"):
        # zarr arrays and other chunked array-likes stay lazy through da.from_array
        arr = source if isinstance(source, da.Array) else da.from_array(source)
        mosaic = _finish([arr], axes, _label(source))
    elif isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        where = str(source)
        if not path.exists():
            raise NcmError("no such file or directory", where)
        name = path.name.lower()
        if path.is_dir() or name.endswith((".zarr", ".zarr.zip")):
            mosaic = _open_zarr(path, where)
        elif name.endswith(TIFF_SUFFIXES):
            mosaic = _open_tiff(path, where)
        elif name.endswith(PIL_SUFFIXES):
            mosaic = _open_pil(path, where)
        else:
            with open(path, "rb") as fh:
                head = fh.read(4)
            if head[:2] in (b"II", b"MM"):
                mosaic = _open_tiff(path, where)
            else:
                try:
                    mosaic = _open_pil(path, where)
                except NcmError:
                    raise NcmError("not an image file (expected zarr, OME-Zarr, TIFF, PNG or JPEG)", where) from None
    else:
        raise NcmError(f"cannot open a mosaic from a {type(source).__name__}")
    if pixel_size is not None:
        if not (math.isfinite(pixel_size) and pixel_size > 0):
            raise NcmError(f"pixel size must be a finite number above 0, got {pixel_size}")
        mosaic.pixel_size = float(pixel_size)
    elif mosaic.pixel_size is not None and not (math.isfinite(mosaic.pixel_size) and mosaic.pixel_size > 0):
        raise NcmError(
            f"the file's pixel size is {mosaic.pixel_size}, not a finite number above 0; "
            "give the right one (--pixel-size, API: pixel_size=)",
            mosaic.source or None,
        )
    return mosaic


def write_ome_zarr(
    path: str | Path,
    image: Any,
    *,
    pixel_size: float | None = None,
    translate: tuple[float, float] = (0.0, 0.0),
    chunks: int = 512,
    levels: int = 1,
    labels: dict[str, Any] | None = None,
    label_classes: dict[str, list[str]] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``image`` (``yx`` or ``yxc``, numpy or dask) as an NGFF 0.5 OME-Zarr.

    ``levels`` > 1 adds a 2x pyramid. ``labels`` maps names to label images of
    the same height and width, written under ``labels/`` with NGFF
    ``image-label`` metadata; ``label_classes[name][k]`` names the class of
    label value k + 1 (0 is unlabelled). Chunks are written one task per chunk.
    """
    import zarr

    from ncm_core.outputs import atomic_output

    mosaic = open_mosaic(image)
    scale = (pixel_size or 1.0, pixel_size or 1.0)
    unit = "micrometer" if pixel_size else None
    path = Path(path)
    with atomic_output(path, overwrite, folder=False) as part:
        root = zarr.open_group(str(part), mode="w", zarr_format=3)
        write_image(
            root,
            mosaic.data,
            scale=scale,
            translate=translate,
            unit=unit,
            chunks=chunks,
            levels=levels,
            name=name or path.name.split(".")[0],
        )
        root.attrs["ncm"] = {"kind": "ncm-image"}  # written by napari-ncm (ncm_core.outputs.output_kind)
        if labels:
            lg = root.create_group("labels")
            lg.attrs["ome"] = {"version": NGFF_VERSION, "labels": list(labels)}
            for lname, lab in labels.items():
                lab_m = open_mosaic(lab)
                if lab_m.shape != mosaic.shape:
                    raise NcmError(f"label image {lname!r} has shape {lab_m.shape}, the image {mosaic.shape}")
                names = (label_classes or {}).get(lname)
                colors = props = None
                if names:
                    from ncm_core.io.colors import class_colors

                    colors = {k + 1: c for k, c in enumerate(class_colors(names))}
                    props = {0: {"class": "unlabelled"}, **{k + 1: {"class": n} for k, n in enumerate(names)}}
                write_label_group(
                    lg,
                    lname,
                    lab_m.data,
                    scale=scale,
                    translate=translate,
                    unit=unit,
                    chunks=chunks,
                    levels=levels,
                    colors=colors,
                    properties=props,
                )
    return path


def read_json(path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    """Read a JSON file, turning any failure into one clear line."""
    path = Path(path)
    if not path.exists():
        raise NcmError(f"{what} not found", path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NcmError(f"{what} is not valid JSON ({exc})", path) from None
