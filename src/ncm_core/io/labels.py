"""Opening a segmentation to measure: an OME-Zarr with NGFF labels, a label image, or a 3D volume.

:func:`open_labels` returns a :class:`LabelImage`: the label array kept lazy where the file allows it
(zarr chunks, TIFF pages), its class names (value ``k + 1`` = class ``k``, 0 = not predicted), its pixel
size in micrometres (None when the file does not say) and where it lies in world coordinates.

Sources, in the order they are recognised:

* an OME-Zarr image with a ``labels/`` group (``ncm predict`` with a segmenter, ``ncm sample
  sem-mosaic``): the label image ``labels/<name>`` (``name``, or the first listed), its class names from
  the NGFF ``image-label`` properties, its scale;
* an NGFF ``image-label`` group itself, or a plain zarr array (2D or 3D);
* a TIFF (2D image or a 3D stack ``(Z, Y, X)``; pixel size from its metadata), a PNG, or a ``.npy`` array;
* a numpy or dask array (the napari widget's layer data).

Class names not in the file come from ``classes`` or from ``classes.txt`` beside the file (one name per
line, as for training data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError

CLASSES_FILE = "classes.txt"


@dataclass
class LabelImage:
    """A label array (2D or 3D; numpy, dask or zarr) and what is known about it."""

    data: Any
    classes: dict[int, str] | None  # {label value: class name}; None when unknown
    pixel_size: float | None  # micrometres per pixel
    translate: tuple[float, ...]  # world position of pixel (0, 0[, 0])
    source: str
    name: str = "labels"

    @property
    def ndim(self) -> int:
        return len(self.data.shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.data.shape)


def parse_classes(classes: str | Sequence[str] | Mapping[int, str] | None) -> dict[int, str] | None:
    """``"a,b,c"`` or ``["a", "b", "c"]`` -> ``{1: "a", 2: "b", 3: "c"}``; a mapping ``{value: name}`` is
    taken as is (a napari Labels layer's classes)."""
    if classes is None:
        return None
    if isinstance(classes, Mapping):
        return {int(v): str(n) for v, n in classes.items()}
    names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
    if not names or any(not n for n in names):
        raise NcmError(f"class names must be a comma-separated list without empty names, got {classes!r}")
    return {i + 1: n for i, n in enumerate(names)}


def _ngff_labels(path: Path, name: str | None) -> tuple[Path, str] | None:
    """The label group of an OME-Zarr image (``labels/<name>``), or the group itself if it is one."""
    import zarr

    try:
        g = zarr.open_group(str(path), mode="r")
    except Exception:
        return None
    attrs = dict(g.attrs)
    if "image-label" in attrs.get("ome", attrs):
        return path, path.name
    if "labels" not in g:
        return None
    la = dict(g["labels"].attrs)
    names = list(la.get("ome", la).get("labels", []))
    if name is not None:
        if name not in names:
            raise NcmError(f"no label image {name!r} in this OME-Zarr (it has {', '.join(names) or 'none'})", path)
        return path / "labels" / name, name
    if not names:
        raise NcmError("the OME-Zarr's labels group lists no label image", path)
    return path / "labels" / names[0], names[0]


def _classes_file(path: Path) -> dict[int, str] | None:
    f = path.parent / CLASSES_FILE
    if not f.is_file():
        return None
    return parse_classes([line.strip() for line in f.read_text().splitlines() if line.strip()])


def open_labels(
    source: Any,
    *,
    labels: str | None = None,
    classes: str | Sequence[str] | Mapping[int, str] | None = None,
    pixel_size: float | None = None,
    what: str = "segmentation",
) -> LabelImage:
    """The segmentation ``source`` as a :class:`LabelImage` (module docstring); ``classes`` and
    ``pixel_size`` override what the file says; ``what`` names the file in errors."""
    given = parse_classes(classes)
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise NcmError(f"pixel size must be a finite number above 0, got {pixel_size}")
    if not isinstance(source, (str, Path)):
        data = source if hasattr(source, "shape") else np.asarray(source)
        img = LabelImage(data, given, pixel_size, (0.0,) * len(data.shape), "array")
        return _checked(img)
    path = Path(source)
    if not path.exists():
        raise NcmError(f"{what} not found", path)
    img = _open_path(path, labels)
    if given is not None:
        img.classes = given
    if pixel_size is not None:
        img.pixel_size = float(pixel_size)
    return _checked(img)


def _open_path(path: Path, labels: str | None) -> LabelImage:
    suffix = path.suffix.lower()
    if path.is_dir():
        found = _ngff_labels(path, labels)
        if found is not None:
            from ncm_core.io.mosaic import open_mosaic
            from ncm_core.io.ngff import read_label_classes

            group, name = found
            m = open_mosaic(group)
            named = {v: n for v, n in read_label_classes(group).items() if v != 0}
            return LabelImage(m.data, named or None, m.pixel_size, tuple(m.translate), str(path), name)
        return _open_zarr_array(path)
    if suffix in (".tif", ".tiff"):
        return _open_tiff(path)
    if suffix == ".npy":
        return LabelImage(np.load(path, mmap_mode="r"), _classes_file(path), None, (0.0, 0.0), str(path), path.stem)
    try:
        from PIL import Image

        with Image.open(path) as im:
            a = np.asarray(im)
    except Exception as exc:
        raise NcmError(f"not a readable label image ({type(exc).__name__}: {exc})", path) from None
    return LabelImage(a, _classes_file(path), None, (0.0,) * a.ndim, str(path), path.stem)


def _open_zarr_array(path: Path) -> LabelImage:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise NcmError(f"not a readable zarr store ({type(exc).__name__}: {exc})", path) from None
    if not isinstance(node, zarr.Array):
        arrays = [n for n, _ in node.arrays()]
        if "0" not in arrays and len(arrays) != 1:
            raise NcmError("zarr group holds no label image: expected NGFF labels or one array", path)
        node = node["0" if "0" in arrays else arrays[0]]
    return LabelImage(node, _classes_file(path), None, (0.0,) * node.ndim, str(path), path.stem.split(".")[0])


def _open_tiff(path: Path) -> LabelImage:
    import tifffile
    import zarr

    from ncm_core.io.mosaic import _tiff_pixel_size

    try:
        with tifffile.TiffFile(str(path)) as tf:
            size = _tiff_pixel_size(tf)
        node = zarr.open(tifffile.imread(str(path), aszarr=True, series=0), mode="r")
        if not isinstance(node, zarr.Array):
            node = node["0"]
    except Exception as exc:
        raise NcmError(f"not a readable TIFF ({type(exc).__name__}: {exc})", path) from None
    data = node if node.ndim <= 3 else None
    if data is None:
        raise NcmError(f"a label TIFF must be 2D or a 3D stack, got shape {node.shape}", path)
    return LabelImage(data, _classes_file(path), size, (0.0,) * node.ndim, str(path), path.name.split(".")[0])


def _checked(img: LabelImage) -> LabelImage:
    where = img.source if img.source != "array" else None
    if img.ndim not in (2, 3):
        raise NcmError(f"a segmentation must be a 2D image or a 3D volume, got shape {img.shape}", where)
    dtype = np.dtype(img.data.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.bool_)):
        raise NcmError(f"a segmentation holds whole-number class values, got {dtype} pixels", where)
    if min(img.shape) < 2:
        raise NcmError(f"a segmentation needs at least 2 pixels along each axis, got shape {img.shape}", where)
    return img
