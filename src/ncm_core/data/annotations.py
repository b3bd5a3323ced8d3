"""Training tiles from annotations on a mosaic: painted class labels and/or rectangles.

The user paints class labels on a mosaic (napari Labels layer: value k is
class ``names[k]``) or draws rectangles. Each connected painted region of one
class, and each rectangle (overlapping rectangles of one class merged), is a
*group*; groups are split into train/validation(/test) before tiles are cut,
so tiles of one painted region never land in two splits. A tile of the
mosaic's grid is taken when at least ``min_coverage`` of its pixels belong to
one group. Tiles are read block by block from the (lazy) mosaic; only
annotated tiles are read. The result is a tile set (:mod:`ncm_core.data.tilesets`)
that :func:`ncm_core.training.classify.train` reads like the crops of ``ncm crops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.tilesets import TileSet, TileSetWriter, split_groups
from ncm_core.data.tiling import TileGrid, extract_tiles
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import open_mosaic
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report


@dataclass(frozen=True)
class Rectangle:
    """An annotated rectangle in image pixels (half-open), with its class name."""

    cls: str
    y0: float
    x0: float
    y1: float
    x1: float


def _check_labels(labels: Any, shape: tuple[int, int]) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise NcmError(f"labels must be a 2-D array like the image, got {lab.ndim} dimensions")
    H, W = shape
    h, w = lab.shape
    if (h, w) == (H, W):
        return lab  # the usual case: no copy of a mosaic-sized array
    outside = int(np.count_nonzero(lab[H:, :])) + int(np.count_nonzero(lab[:H, W:]))
    if outside:
        raise NcmError(
            f"{outside} labelled pixels lie outside the image ({H}x{W} px; labels are {h}x{w} px): "
            "erase them or paint on a labels layer of the image's size"
        )
    out = np.zeros((H, W), lab.dtype)
    out[: min(h, H), : min(w, W)] = lab[:H, :W]
    return out


def _label_groups(lab: np.ndarray, names: dict[int, str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """A map of group ids (0 = none) and, per id - 1, (group name, class name): connected regions per class."""
    from scipy import ndimage

    values = [int(v) for v in np.unique(lab) if v != 0]
    unnamed = [v for v in values if v not in names]
    if unnamed:
        raise NcmError(
            f"label value(s) {unnamed} have no class name (named: "
            f"{', '.join(f'{k}={v}' for k, v in sorted(names.items()))})"
        )
    gid = np.zeros(lab.shape, np.int32)
    groups: list[tuple[str, str]] = []
    for v in values:
        comp, n = ndimage.label(lab == v, structure=np.ones((3, 3), bool))
        gid[comp > 0] = comp[comp > 0] + len(groups)
        groups += [(f"region {names[v]} #{k + 1}", names[v]) for k in range(n)]
    return gid, groups


def _rect_groups(
    rects: Sequence[Rectangle], shape: tuple[int, int]
) -> tuple[list[tuple[int, int, int, int]], list[int], list[tuple[str, str]]]:
    """Clipped integer rectangles, their group index, and the groups (overlapping same-class rectangles merged)."""
    H, W = shape
    boxes = []
    for k, r in enumerate(rects):
        y0, x0 = max(0, int(np.floor(min(r.y0, r.y1)))), max(0, int(np.floor(min(r.x0, r.x1))))
        y1, x1 = min(H, int(np.ceil(max(r.y0, r.y1)))), min(W, int(np.ceil(max(r.x0, r.x1))))
        if y1 <= y0 or x1 <= x0:
            raise NcmError(f"rectangle {k + 1} ({r.cls}) lies outside the image ({H}x{W} px)")
        boxes.append((y0, x0, y1, x1))
    parent = list(range(len(rects)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            A, B = boxes[a], boxes[b]
            if rects[a].cls == rects[b].cls and A[0] < B[2] and B[0] < A[2] and A[1] < B[3] and B[1] < A[3]:
                parent[find(a)] = find(b)
    roots = sorted({find(a) for a in range(len(rects))})
    index = [roots.index(find(a)) for a in range(len(rects))]
    groups = [(f"rectangle {rects[r].cls} #{k + 1}", rects[r].cls) for k, r in enumerate(roots)]
    return boxes, index, groups


def annotated_cells(
    grid: TileGrid,
    labels: np.ndarray | None,
    names: dict[int, str],
    rects: Sequence[Rectangle],
    min_coverage: float,
) -> tuple[dict[tuple[int, int], int], list[tuple[str, str]], int]:
    """Cell -> group index for cells covered at least ``min_coverage`` by one group; the groups; and the
    number of cells dropped because two classes claim them."""
    t = grid.tile
    H, W = grid.image_shape
    cover: dict[tuple[int, int], list[tuple[float, int]]] = {}
    groups: list[tuple[str, str]] = []
    if labels is not None:
        gid, groups = _label_groups(labels, names)
        rows, cols = grid.shape
        for i in range(rows):  # one band of cells at a time: memory ~ one row of tiles
            y0 = grid.offset[0] + i * grid.stride
            band = gid[y0 : y0 + t, grid.offset[1] :]
            if not band.any():
                continue
            for j in range(cols):
                x0 = j * grid.stride
                cell = band[:, x0 : x0 + t]
                if not cell.any():
                    continue
                ids, counts = np.unique(cell[cell > 0], return_counts=True)
                k = counts.argmax()
                cover.setdefault((i, j), []).append((counts[k] / (t * t), int(ids[k]) - 1))
    if rects:
        boxes, index, rgroups = _rect_groups(rects, (H, W))
        base = len(groups)
        groups = groups + rgroups
        for (y0, x0, y1, x1), g in zip(boxes, index):
            i0 = max(0, (y0 - grid.offset[0] - t) // grid.stride)
            j0 = max(0, (x0 - grid.offset[1] - t) // grid.stride)
            for i in range(i0, grid.shape[0]):
                a0, a1, _, _ = grid.cell_rect(i, 0)
                if a0 >= y1:
                    break
                for j in range(j0, grid.shape[1]):
                    _, _, b0, b1 = grid.cell_rect(i, j)
                    if b0 >= x1:
                        break
                    area = max(0, min(a1, y1) - max(a0, y0)) * max(0, min(b1, x1) - max(b0, x0))
                    if area:
                        cover.setdefault((i, j), []).append((area / (t * t), base + g))
    cells: dict[tuple[int, int], int] = {}
    conflicts = 0
    for cell, cands in cover.items():
        best: dict[int, float] = {}
        for f, g in cands:  # merged rectangles of one group: take the largest share
            best[g] = max(best.get(g, 0.0), f)
        ok = [(f, g) for g, f in best.items() if f >= min_coverage]
        if not ok:
            continue
        classes = {groups[g][1] for _, g in ok}
        if len(classes) > 1:
            conflicts += 1
            continue
        cells[cell] = max(ok)[1]
    return cells, groups, conflicts


@dataclass(frozen=True)
class AnnotationTilesOptions:
    """Options of :func:`tiles_from_annotations`.

    ``tile`` grid tile size in px (required); ``min_coverage`` the share of a tile's pixels that one
    region must cover (more than half); ``val_fraction``, ``test_fraction`` shares of each class's
    regions held out whole.
    """

    tile: int | None = None
    min_coverage: float = 0.75
    val_fraction: float = 0.25
    test_fraction: float = 0.0
    seed: int = 0
    overwrite: bool = False

    def validate(self) -> AnnotationTilesOptions:
        if self.tile is None:
            raise NcmError("a tile size is needed (tile=...)")
        if not 0.5 < self.min_coverage <= 1:
            raise NcmError(f"minimum coverage must be in (0.5, 1], got {self.min_coverage}")
        return self


def class_order(names: dict[int, str], rectangles: Any, used: set[str]) -> list[str]:
    """The annotated classes in the user's order: painted classes by label value, then rectangle
    classes as they first appear (a class keeps its place from the annotation layer to the bundle)."""
    order = [names[v] for v in sorted(names)] + [r.cls for r in rectangles or ()]
    return [n for n in dict.fromkeys(order) if n in used] + sorted(used - set(order))


def tiles_from_annotations(
    image: Any,
    out: str | Path,
    options: AnnotationTilesOptions | None = None,
    *,
    labels: Any = None,
    names: dict[int, str] | Sequence[str] | None = None,
    rectangles: Sequence[Rectangle] = (),
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> TileSet:
    """Write the grid tiles under painted labels and/or rectangles of ``image`` as a tile set in ``out``.

    Settings: ``options`` or keyword ``overrides`` of :class:`AnnotationTilesOptions` (``tile=96``, ...).

    Parameters
    ----------
    labels
        Painted class values (0 = unlabelled), the image's height and width.
    names
        Class name per label value: ``{1: "NCM811_pristine", ...}`` or a list
        for values 1, 2, ...
    rectangles
        :class:`Rectangle` s in image pixels.
    """
    o = merge_options(AnnotationTilesOptions, options, overrides).validate()
    tile, min_coverage, val_fraction, test_fraction = o.tile, o.min_coverage, o.val_fraction, o.test_fraction
    seed = o.seed
    mosaic = open_mosaic(image)
    H, W = mosaic.shape
    if labels is None and not rectangles:
        raise NcmError("nothing annotated: paint labels or draw rectangles first")
    if names is None:
        names = {}
    if not isinstance(names, dict):
        names = {k + 1: str(n) for k, n in enumerate(names)}
    names = {int(k): str(v) for k, v in names.items()}
    lab = None if labels is None else _check_labels(labels, (H, W))
    grid = TileGrid((H, W), tile, edge="drop")
    cells, groups, conflicts = annotated_cells(grid, lab, names, rectangles, min_coverage)
    if not cells:
        raise NcmError(
            f"no {tile} px tile is at least {min_coverage:.0%} covered by one annotated region; paint "
            "larger regions or use a smaller tile"
        )
    if conflicts:
        import warnings

        warnings.warn(f"{conflicts} tiles are claimed by regions of two classes and are left out", stacklevel=2)
    class_names = class_order(names, rectangles, {groups[g][1] for g in cells.values()})
    if len(class_names) < 2:
        raise NcmError(f"only one class is annotated ({class_names[0]!r}); a classifier needs at least two")
    used = sorted(set(cells.values()))
    splits_by_group = split_groups(
        {groups[g][0]: class_names.index(groups[g][1]) for g in used},
        class_names,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        strict=False,
    )
    writer = TileSetWriter(out, class_names, tile, overwrite=o.overwrite)
    src = mosaic.source or mosaic.name or "image"
    try:
        keep = np.zeros(grid.shape, bool)
        for i, j in cells:
            keep[i, j] = True
        block = grid.block_shape_for(tuple(mosaic.data.chunksize[:2]), 1024 * 1024)
        blocks = [b for b in grid.blocks(block) if keep[b[0] : b[1], b[2] : b[3]].any()]
        for k, (r0, r1, c0, c1) in enumerate(blocks):
            check_cancel(cancel)
            y0, y1, x0, x1 = grid.region(r0, r1, c0, c1)
            region = np.asarray(mosaic.data[y0 : min(y1, H), x0 : min(x1, W)].compute(scheduler="synchronous"))
            win = extract_tiles(region, grid, r0, r1, c0, c1)
            for i in range(r0, r1):
                for j in range(c0, c1):
                    if not keep[i, j]:
                        continue
                    gname, cls = groups[cells[(i, j)]]
                    a0, a1, b0, b1 = grid.cell_rect(i, j)
                    writer.add(
                        np.ascontiguousarray(win[i - r0, j - c0]),
                        splits_by_group[gname],
                        cls,
                        src,
                        gname,
                        (a0, b0, a1, b1),
                        f"r{i:05d}_c{j:05d}",
                    )
            report(progress, k + 1, len(blocks), "tiles")
        params = {
            "kind": "annotations",
            "image": src,
            "image_shape": [H, W],
            "tile": tile,
            "min_coverage": min_coverage,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "label_names": {str(k): v for k, v in names.items()},
            "rectangles": len(rectangles),
            "groups": len(used),
            "conflicts": conflicts,
        }
        return writer.finish(params, splits_by_group)
    except BaseException:
        writer.abort()
        raise
