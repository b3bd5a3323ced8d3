"""The segmentation format: a zarr v3 group holding an NGFF image-label class map and, optionally, probabilities.

Layout of ``out`` (written by :func:`ncm_core.inference.segment.segment_mosaic`)::

    out/                        attrs["ncm"]: kind, classes, colours, options, bundle, fingerprint, complete
    out/labels/                 attrs["ome"]["labels"] = [name]
    out/labels/<name>/0..L      uint8 (y, x) at pixel resolution: 0 = not predicted, k + 1 = class k;
                                NGFF 0.5 image-label (``colors``, ``properties`` with class names), a 2x
                                pyramid (nearest sample) so a viewer shows it at any zoom
    out/probabilities/0..L      float32 (class, y, x), one pixel per ``factor`` x ``factor`` mosaic pixels
                                (optional): NGFF 0.5 multiscale image, NaN where not predicted
    out/blocks, digests, skipped   the streaming engine's records (resume)

Level 0 of both is written block by block by the engine; the coarser levels, read from level 0 chunk by
chunk, when the run completes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.io.colors import class_colors
from ncm_core.io.ngff import NGFF_VERSION, ngff_multiscales, write_label_group

SEGMENTATION_KIND = "ncm-segmentation"
PROBABILITIES = "probabilities"
MIN_SIDE = 512  # pyramids stop once the larger side is at most this


def rgba(hexes: list[str], classes: list[str]) -> list[tuple[float, float, float, float]]:
    """Class colours as RGBA floats: the bundle's ``#rrggbb`` where given, else the shared class colours."""
    if len(hexes) == len(classes) and all(isinstance(h, str) and len(h.lstrip("#")) == 6 for h in hexes):
        return [tuple(int(h.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)) + (1.0,) for h in hexes]  # type: ignore[misc]
    return class_colors(list(classes))


def n_levels(shape: tuple[int, ...], min_side: int | None = None) -> int:
    """Levels of a 2x pyramid whose coarsest level's larger side is at most ``min_side`` (default :data:`MIN_SIDE`)."""
    min_side = MIN_SIDE if min_side is None else min_side
    n, s = 1, max(shape[-2:])
    while s > min_side and min(shape[-2:]) >= 2**n:
        s, n = -(-s // 2), n + 1
    return n


def write_label_levels(
    partial: Path, name: str, classes: list[str], colors: list[tuple[float, float, float, float]], world: dict
) -> int:
    """The pyramid and NGFF image-label metadata of ``labels/<name>`` (level 0 written by the engine)."""
    import dask.array as da
    import zarr

    root = zarr.open_group(str(partial), mode="r+")
    lg = root.require_group("labels")
    level0 = da.from_zarr(str(partial / "labels" / name / "0"))
    chunks = level0.chunksize
    write_label_group(
        lg,
        name,
        level0,
        scale=tuple(world["scale"]),
        translate=tuple(world["translate"]),
        unit=world["unit"],
        chunks=chunks,
        levels=n_levels(level0.shape),
        colors={0: (0.0, 0.0, 0.0, 0.0), **{k + 1: c for k, c in enumerate(colors)}},
        properties={0: {"class": "not predicted"}, **{k + 1: {"class": c} for k, c in enumerate(classes)}},
        written=1,
    )
    lg.attrs["ome"] = {"version": NGFF_VERSION, "labels": [name]}
    return len(zarr.open_group(str(partial / "labels" / name), mode="r").attrs["ome"]["multiscales"][0]["datasets"])


def write_probability_levels(partial: Path, classes: list[str], world: dict, factor: int) -> int:
    """Coarser levels (NaN-aware 2x means) and NGFF metadata of ``probabilities`` (level 0 written by the engine)."""
    import warnings

    import dask.array as da
    import zarr

    group = partial / PROBABILITIES
    prev = da.from_zarr(str(group / "0"))
    K, c = prev.shape[0], prev.chunksize[1]
    n = 1
    while max(prev.shape[1:]) > MIN_SIDE and min(prev.shape[1:]) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
            nxt = da.coarsen(np.nanmean, prev, {1: 2, 2: 2}, trim_excess=True).astype(np.float32)
            z = zarr.open_group(str(group), mode="r+").create_array(
                str(n), shape=nxt.shape, dtype=np.float32, chunks=(K, c, c), fill_value=np.nan,
                dimension_names=["c", "y", "x"], overwrite=True,
            )  # fmt: skip
            da.store(nxt.rechunk((K, c, c)), z, lock=False, compute=True)
        prev = da.from_zarr(str(group / str(n)))
        n += 1
    s = world["scale"][0]
    scale = (s * factor, s * factor)
    trans = tuple(t + s * (factor - 1) / 2 for t in world["translate"])
    zarr.open_group(str(group), mode="r+").attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": [
            ngff_multiscales(n, scale, trans, leading=("c",), unit=world["unit"], name="class probabilities")  # type: ignore[arg-type]
        ],
        "omero": {
            "channels": [{"label": k, "window": {"start": 0.0, "end": 1.0, "min": 0.0, "max": 1.0}} for k in classes]
        },
    }
    return n


@dataclass
class Segmentation:
    """A finished segmentation, opened lazily."""

    path: Path
    name: str
    classes: list[str]
    colors: list[tuple[float, float, float, float]]
    attrs: dict[str, Any]

    def label_levels(self) -> list[Any]:
        """Dask arrays ``(y, x)`` of the class map (0 = not predicted, k + 1 = class k), finest first."""
        import dask.array as da
        import zarr

        g = zarr.open_group(str(self.path / "labels" / self.name), mode="r")
        n = len(g.attrs["ome"]["multiscales"][0]["datasets"])
        return [da.from_zarr(str(self.path / "labels" / self.name / str(k))) for k in range(n)]

    @property
    def labels(self) -> Any:
        return self.label_levels()[0]

    def probability_levels(self) -> list[Any]:
        """Dask arrays ``(class, y, x)`` of the probabilities, finest first ([] when not written)."""
        import dask.array as da
        import zarr

        if not (self.path / PROBABILITIES).is_dir():
            return []
        g = zarr.open_group(str(self.path / PROBABILITIES), mode="r")
        n = len(g.attrs["ome"]["multiscales"][0]["datasets"])
        return [da.from_zarr(str(self.path / PROBABILITIES / str(k))) for k in range(n)]

    def world_transform(self, what: str = "labels") -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` of level 0 of ``labels`` or ``probabilities`` on the mosaic's world grid."""
        w = self.attrs["world_transform"]
        f = 1 if what == "labels" else int(self.attrs["probability_factor"])
        s = w["scale"][0]
        return (s * f, s * f), tuple(t + s * (f - 1) / 2 for t in w["translate"])  # type: ignore[return-value]


def _attrs(path: Path) -> dict[str, Any]:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs).get("ncm", {})
    except Exception:
        return {}


def is_segmentation(path: str | Path) -> bool:
    return _attrs(Path(path)).get("kind") == SEGMENTATION_KIND


def open_segmentation(path: str | Path) -> Segmentation:
    """A segmentation written by ``ncm predict SEG_BUNDLE MOSAIC OUT.zarr`` (one line when it is not one)."""
    path = Path(path)
    a = _attrs(path)
    if a.get("kind") != SEGMENTATION_KIND:
        raise NcmError("not a napari-ncm segmentation", path)
    if not a.get("complete"):
        raise NcmError("the segmentation is incomplete (an interrupted run); run the same command again", path)
    colors = [tuple(c) for c in a["colors"]]
    return Segmentation(path, a["name"], list(a["classes"]), colors, a)  # type: ignore[arg-type]
