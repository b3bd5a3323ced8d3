"""The prediction format: a zarr v3 group of per-tile classes, probabilities and OOD scores.

Output layout (``out``)::

    out/                   attrs["ncm"]: grid geometry, classes, bundle, options, counts, complete flag
    out/labels/0           uint8/uint16 (rows, cols): 0 = not predicted (masked), k + 1 = class k
    out/probabilities/0    float32 (classes, rows, cols): NaN where not predicted
    out/ood/0              float32 (rows, cols): out-of-distribution score / threshold (> 1 = unlike
                           the training tiles; see ncm_core.models.ood), when the bundle has a detector
    out/unpredicted        uint8 (rows, cols): why a tile the masks kept was not predicted: 0 = it was
                           (or it was masked), 1 = NaN/inf pixels, 2 = an unreadable chunk, 3 = a chunk
                           missing from the store, 4 = its block could not be read (ncm_core.inference.reading;
                           2-4 only in a result finished with allow_incomplete)
    out/blocks             uint8 per block: 0 = to do, 1 = done, 2 = failed, 3 = partly read (resume)
    out/digests            16 bytes per block: digest of the pixels it read (resume checks them)
    out/skipped            int32 per block and reason: tiles left out (counts of the codes above)
    out/rechecked          int32 per block (dense mode): tiles evaluated exactly

Both image sub-groups are NGFF 0.5 images (``labels`` an ``image-label`` with class
colours and names) whose coordinate transformations overlay them on the mosaic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.tiling import TileGrid
from ncm_core.errors import NcmError
from ncm_core.inference.engine import RunIncomplete
from ncm_core.io.colors import class_colors
from ncm_core.io.ngff import ngff_multiscales, write_label_group

PREDICTION_KIND = "ncm-prediction"


class PredictionIncomplete(RunIncomplete):
    """Some blocks could not be read; the rest is kept in ``<out>.partial`` for a re-run."""


@dataclass
class Prediction:
    """A finished prediction on disk, opened lazily."""

    path: Path
    grid: TileGrid
    class_names: list[str]
    pixel_size: float | None
    translate: tuple[float, float]
    attrs: dict[str, Any]

    @property
    def labels(self):
        """Dask array (rows, cols): 0 where not predicted, class index + 1 elsewhere."""
        import dask.array as da

        return da.from_zarr(str(self.path), component="labels/0")

    @property
    def probabilities(self):
        """Dask array (classes, rows, cols) of class probabilities (NaN where not predicted)."""
        import dask.array as da

        return da.from_zarr(str(self.path), component="probabilities/0")

    @property
    def ood(self):
        """Dask array (rows, cols) of out-of-distribution ratios (> 1 = flagged), or None."""
        import dask.array as da

        if not self.attrs.get("ood"):
            return None
        return da.from_zarr(str(self.path), component="ood/0")

    def read(self, name: str) -> np.ndarray:
        """``"labels"``, ``"probabilities"`` or ``"ood"`` in memory as numpy (the grid is small), read
        with zarr directly (no dask scheduler: faster for small grids)."""
        import zarr

        if name not in ("labels", "probabilities", "ood"):
            raise NcmError(f"a prediction holds labels, probabilities and ood, not {name!r}", self.path)
        if name == "ood" and not self.attrs.get("ood"):
            raise NcmError("this prediction has no out-of-distribution scores", self.path)
        return np.asarray(zarr.open_array(str(self.path / name / "0"), mode="r")[...])

    @property
    def classes(self) -> np.ndarray:
        """Class index per cell (-1 where not predicted), in memory (the grid is small)."""
        return self.read("labels").astype(np.int32) - 1

    def world_transform(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` that overlays the grid arrays on the mosaic."""
        return self.grid.world_transform(self.pixel_size or 1.0, self.translate)

    @property
    def colors(self) -> list[tuple[float, float, float, float]]:
        return class_colors(self.class_names)


def open_prediction(path: str | Path) -> Prediction:
    """Open a prediction written by :func:`predict_mosaic`."""
    import zarr

    path = Path(path)
    if not path.exists():
        raise NcmError("prediction not found", path)
    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs).get("ncm")
    except Exception as exc:
        raise NcmError(f"not a readable zarr group ({type(exc).__name__})", path) from None
    if not attrs or attrs.get("kind") != PREDICTION_KIND:
        raise NcmError("not a napari-ncm prediction (no 'ncm' metadata)", path)
    if not attrs.get("complete"):
        raise NcmError("prediction is incomplete (the run that wrote it did not finish)", path)
    return Prediction(
        path,
        TileGrid.from_dict(attrs["grid"]),
        list(attrs["class_names"]),
        attrs.get("pixel_size"),
        tuple(attrs.get("translate", (0.0, 0.0))),
        attrs,
    )


def is_prediction(path: str | Path) -> bool:
    """True if ``path`` is a zarr group written by :func:`predict_mosaic`."""
    p = Path(path)
    for meta in (p / "zarr.json", p / ".zattrs"):
        if meta.is_file():
            try:
                return PREDICTION_KIND in meta.read_text()
            except OSError:
                return False
    return False


def create_arrays(
    root: Any,
    grid: TileGrid,
    block: tuple[int, int],
    names: list[str],
    scale: Any,
    trans: Any,
    unit: str | None,
    ood: bool = False,
    rechecked: bool = False,
) -> None:
    """Declare the output arrays of a prediction in the new group ``root`` (the engine adds ``blocks``)."""
    import dask
    import dask.array as da
    from dask.local import get_sync

    n_cls, (rows, cols) = len(names), grid.shape
    colors = class_colors(list(names))
    lab_dtype = np.uint8 if n_cls < 255 else np.uint16
    # in this thread; a function, not the name "synchronous", for which dask imports distributed
    with dask.config.set(scheduler=get_sync):
        write_label_group(
            root,
            "labels",
            da.zeros((rows, cols), dtype=lab_dtype, chunks=block),
            scale=scale,
            translate=trans,
            unit=unit,
            chunks=block,
            colors={k + 1: colors[k] for k in range(n_cls)},
            properties={0: {"class": "not predicted"}, **{k + 1: {"class": names[k]} for k in range(n_cls)}},
            source="../",
        )
    pg = root.create_group("probabilities")
    pg.create_array(
        "0",
        shape=(n_cls, rows, cols),
        dtype=np.float32,
        chunks=(n_cls, *block),
        fill_value=np.nan,
        dimension_names=["c", "y", "x"],
    )
    pg.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [ngff_multiscales(1, scale, trans, leading=("c",), unit=unit, name="probabilities")],
        "omero": {
            "channels": [
                {
                    "label": n,
                    "color": "".join(f"{int(c * 255):02x}" for c in colors[k][:3]),
                    "window": {"start": 0, "end": 1, "min": 0, "max": 1},
                }
                for k, n in enumerate(names)
            ]
        },
    }
    if ood:
        og = root.create_group("ood")
        og.create_array(
            "0", shape=(rows, cols), dtype=np.float32, chunks=block, fill_value=np.nan, dimension_names=["y", "x"]
        )
        og.attrs["ome"] = {"version": "0.5", "multiscales": [ngff_multiscales(1, scale, trans, unit=unit, name="ood")]}
    root.create_array(  # why a kept tile was not predicted (ncm_core.inference.reading codes)
        "unpredicted", shape=(rows, cols), dtype=np.uint8, chunks=block, fill_value=0, dimension_names=["y", "x"]
    )
    if rechecked:  # dense mode: tiles per block that were evaluated exactly
        nb = (-(-rows // block[0]), -(-cols // block[1]))
        root.create_array(
            "rechecked", shape=nb, dtype=np.int32, chunks=(1, 1), fill_value=0, dimension_names=["y", "x"]
        )
