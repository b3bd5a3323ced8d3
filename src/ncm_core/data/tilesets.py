"""Tile sets: fixed training tiles on disk, split by source, with a manifest.

A tile set is a folder that ``ncm crops`` (random crops of SEM frames) and
napari annotations (tiles under painted labels or drawn rectangles) both
write, and that :func:`ncm_core.training.classify.train` reads::

    tiles/
      manifest.json      format, class names, tile size, parameters, the groups in each split
      manifest.csv       one row per tile: file, split, class, source, group, y0, x0, y1, x1
      train/<class>/*.png
      val/<class>/*.png
      test/<class>/*.png  (when a test split was asked for)

A *group* is the unit that is never split: a source frame for crops, a
painted region or rectangle for annotations. Groups are assigned to splits
before any tile is cut, and :func:`check_leakage` refuses a set in which one
group feeds two splits. ``split/`` folders are ordinary class folders, so
``ncm evaluate BUNDLE tiles/test`` works too.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.errors import NcmError
from ncm_core.io.mosaic import read_json
from ncm_core.outputs import check_output, finalize, partial_path, remove

FORMAT = "ncm-tiles"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
COLUMNS = ["file", "split", "class", "source", "group", "y0", "x0", "y1", "x1"]


@dataclass
class TileRecord:
    """One tile: its file (relative to the set), split, class, source image, group and pixel rectangle there."""

    file: str
    split: str
    cls: str
    source: str
    group: str
    rect: tuple[int, int, int, int]  # y0, x0, y1, x1 in the source image's pixels

    def row(self) -> dict[str, Any]:
        y0, x0, y1, x1 = self.rect
        return {
            "file": self.file,
            "split": self.split,
            "class": self.cls,
            "source": self.source,
            "group": self.group,
            "y0": y0,
            "x0": x0,
            "y1": y1,
            "x1": x1,
        }


@dataclass
class TileSet:
    """A tile set on disk (see the module docstring)."""

    root: Path
    class_names: list[str]
    tile_size: int
    records: list[TileRecord]
    params: dict[str, Any] = field(default_factory=dict)
    failures: tuple[Any, ...] = ()  # frames that failed while the set was built (ncm_core.batch.Failure)

    def split(self, name: str) -> list[TileRecord]:
        return [r for r in self.records if r.split == name]

    def groups(self, name: str) -> list[str]:
        return sorted({r.group for r in self.split(name)})

    def counts(self) -> dict[str, dict[str, int]]:
        """Tiles per split and class."""
        out: dict[str, dict[str, int]] = {}
        for r in self.records:
            out.setdefault(r.split, {}).setdefault(r.cls, 0)
            out[r.split][r.cls] += 1
        return out

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Tiles of one split as an array ``(n, t, t[, c])``, their class indices and groups."""
        recs = self.split(split)
        if not recs:
            return np.zeros((0, self.tile_size, self.tile_size)), np.zeros(0, np.int64), []
        tiles = []
        for r in recs:
            t = _read_tile(self.root / r.file)
            if t.shape[:2] != (self.tile_size, self.tile_size):
                raise NcmError(
                    f"tile is {t.shape[0]}x{t.shape[1]} px but the set's tile size is {self.tile_size} px",
                    self.root / r.file,
                )
            tiles.append(t)
        shapes = {t.shape for t in tiles}
        if len(shapes) > 1:
            raise NcmError(f"tiles of split {split!r} differ in channels ({sorted(shapes)})", self.root)
        y = np.array([self.class_names.index(r.cls) for r in recs], np.int64)
        return np.stack(tiles), y, [r.group for r in recs]


def is_tile_set(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def check_leakage(records: Iterable[TileRecord], where: str | Path | None = None) -> None:
    """Raise if a group (source frame or annotated region) feeds more than one split."""
    seen: dict[str, str] = {}
    for r in records:
        s = seen.setdefault(r.group, r.split)
        if s != r.split:
            raise NcmError(
                f"leakage: group {r.group!r} has tiles in both {s!r} and {r.split!r}; "
                "rebuild the tile set (groups must be split before tiles are cut)",
                where,
            )


def open_tile_set(path: str | Path) -> TileSet:
    """Read a tile set's manifest and check it (classes known, files present, no leakage)."""
    root = Path(path).expanduser()
    meta = read_json(root / "manifest.json", "tile-set manifest")
    if meta.get("format") != FORMAT:
        raise NcmError(f"not a napari-ncm tile set (format is {meta.get('format')!r})", root / "manifest.json")
    names = list(meta.get("class_names") or [])
    csv_path = root / "manifest.csv"
    if not csv_path.is_file():
        raise NcmError("tile set has no manifest.csv", root)
    records = []
    with open(csv_path, newline="") as fh:
        for k, row in enumerate(csv.DictReader(fh), start=2):
            try:
                rect = (int(row["y0"]), int(row["x0"]), int(row["y1"]), int(row["x1"]))
                rec = TileRecord(row["file"], row["split"], row["class"], row["source"], row["group"], rect)
            except (KeyError, TypeError, ValueError) as exc:
                raise NcmError(f"line {k} is malformed ({exc})", csv_path) from None
            if rec.cls not in names:
                raise NcmError(f"line {k}: class {rec.cls!r} is not in the manifest's classes", csv_path)
            if rec.split not in SPLITS:
                raise NcmError(f"line {k}: unknown split {rec.split!r}", csv_path)
            records.append(rec)
    check_leakage(records, csv_path)
    return TileSet(root, names, int(meta["tile_size"]), records, dict(meta.get("params") or {}))


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Shares held out for validation and test: each in [0, 1), leaving something to train on."""
    for name, f in (("validation", val_fraction), ("test", test_fraction)):
        if not 0 <= f < 1:
            raise NcmError(f"{name} fraction must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1:
        raise NcmError(f"validation and test fractions leave nothing to train on ({val_fraction} + {test_fraction})")


def check_split(split: str, data: str | Path) -> None:
    """A split name must be one a tile set has; class folders have none (all their frames are scored)."""
    if split not in SPLITS:
        raise NcmError(f"unknown split {split!r}; a tile set has the splits {', '.join(SPLITS)} (--split)")
    if split != "test" and not is_tile_set(Path(data).expanduser()):
        raise NcmError(
            f"--split {split} applies to tile sets (ncm crops); class folders have no splits, all their frames "
            "are scored",
            data,
        )


def split_groups(
    group_classes: dict[str, int],
    class_names: list[str],
    *,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    strict: bool = True,
    where: str | Path | None = None,
) -> dict[str, str]:
    """Assign whole groups to ``train``/``val``/``test``, stratified by class.

    Each class with enough groups gets at least one validation (and test)
    group. With ``strict`` a class with too few groups is an error (frames);
    otherwise its groups all train and a warning says it is not validated
    (painted regions).
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    out: dict[str, str] = {}
    need = 1 + (val_fraction > 0) + (test_fraction > 0)
    short = []
    for c, name in enumerate(class_names):
        groups = sorted(g for g, k in group_classes.items() if k == c)
        if not groups:
            continue
        if len(groups) < need:
            if strict:
                raise NcmError(
                    f"class {name!r} has {len(groups)} source image(s); {need} are needed to hold "
                    "whole images out for validation and test",
                    where,
                )
            short.append(name)
            out.update(dict.fromkeys(groups, "train"))
            continue
        groups = [groups[i] for i in rng.permutation(len(groups))]
        n_test = max(1, round(test_fraction * len(groups))) if test_fraction > 0 else 0
        n_val = max(1, round(val_fraction * len(groups))) if val_fraction > 0 else 0
        while n_test + n_val >= len(groups):  # keep at least one training group
            if n_test > 1:
                n_test -= 1
            else:
                n_val -= 1
        for g in groups[:n_test]:
            out[g] = "test"
        for g in groups[n_test : n_test + n_val]:
            out[g] = "val"
        for g in groups[n_test + n_val :]:
            out[g] = "train"
    if short:
        warnings.warn(
            f"classes {short} have too few separate regions to hold one out; they are only trained on, "
            "not validated (annotate more separate regions of them)",
            stacklevel=2,
        )
    return out


def _encode(tile: np.ndarray) -> tuple[str, Any]:
    """File suffix and writer for a tile: PNG for 8/16-bit grey and 8-bit RGB(A), else TIFF."""
    if tile.dtype == np.uint8 or (tile.dtype == np.uint16 and tile.ndim == 2):
        return ".png", _write_png
    return ".tif", _write_tif


def _read_tile(path: Path) -> np.ndarray:
    """A tile file written by :class:`TileSetWriter` (PNG or plain TIFF), read whole.

    Tiles are small and many: a direct read, not the lazy :func:`~ncm_core.io.mosaic.open_mosaic`
    (which costs ~70x more per file and is made for mosaics).
    """
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im)
        import tifffile

        from ncm_core.io.pixels import check_finite

        return check_finite(tifffile.imread(path), path)
    except FileNotFoundError:
        raise NcmError("tile listed in manifest.csv is missing", path) from None
    except NcmError:
        raise
    except Exception as exc:
        raise NcmError(f"not a readable tile ({type(exc).__name__}: {exc})", path) from None


def _write_png(path: Path, tile: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(tile)).save(path, compress_level=1)


def _write_tif(path: Path, tile: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, np.ascontiguousarray(tile))


class TileSetWriter:
    """Write a tile set into ``out.partial`` and move it to ``out`` when complete.

    An interrupted build leaves no folder that looks like a finished set.
    """

    def __init__(self, out: str | Path, class_names: list[str], tile_size: int, *, overwrite: bool = False) -> None:
        self.out = check_output(Path(out).expanduser(), overwrite)
        self.tmp = partial_path(self.out)
        remove(self.tmp)
        self.tmp.mkdir(parents=True)
        self.class_names, self.tile_size = list(class_names), tile_size
        self.records: list[TileRecord] = []

    def add(
        self,
        tile: np.ndarray,
        split: str,
        cls: str,
        source: str,
        group: str,
        rect: tuple[int, int, int, int],
        stem: str,
    ) -> TileRecord:
        suffix, write = _encode(tile)
        rel = f"{split}/{cls}/{stem}{suffix}"
        path = self.tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path, tile)
        rec = TileRecord(rel, split, cls, source, group, tuple(int(v) for v in rect))
        self.records.append(rec)
        return rec

    def finish(self, params: dict[str, Any], splits: dict[str, str]) -> TileSet:
        check_leakage(self.records, self.out)
        with open(self.tmp / "manifest.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(r.row() for r in self.records)
        by_split = {s: sorted(g for g, v in splits.items() if v == s) for s in SPLITS}
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class_names": self.class_names,
            "tile_size": self.tile_size,
            "params": params,
            "groups": by_split,
            "counts": TileSet(self.out, self.class_names, self.tile_size, self.records).counts(),
        }
        (self.tmp / "manifest.json").write_text(json.dumps(meta, indent=2))
        finalize(self.tmp, self.out)
        return TileSet(self.out, self.class_names, self.tile_size, self.records, params)

    def abort(self) -> None:
        remove(self.tmp)
