"""Regression labels: a CSV ``image,<target>,<target>,...`` plus optional grouping columns.

Each row names a mosaic (or an image) and gives its measured values, e.g. the
specific discharge capacity at 0.2C, 1C, 2C, 3C and 5C. Columns named as
groups (e.g. ``porosity``, ``batch``) are not targets: they decide grouped
splits and grouped error reports. Every problem is one line naming the file,
the row and the column.
"""

from __future__ import annotations

import csv
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ncm_core.errors import NcmError

IMAGE_COLUMN = "image"


@dataclass
class Targets:
    """Measured values per image: ``values[i, k]`` is target ``names[k]`` of ``images[i]``."""

    path: Path
    images: list[str]
    names: list[str]
    values: np.ndarray  # (images, targets) float64
    groups: dict[str, list[str]] = field(default_factory=dict)  # grouping column -> value per image

    def index(self, image: str) -> int | None:
        """Row of ``image``, matched by name, file name or stem."""
        keys = _keys(image)
        for i, name in enumerate(self.images):
            if keys & _keys(name):
                return i
        return None

    def c_rates(self) -> list[float] | None:
        """C-rates parsed from the target names (``Q_0.2C``, ``cap 1C``, ``5C``...), or None."""
        rates = []
        for n in self.names:
            m = re.search(r"(\d+(?:\.\d+)?)\s*C\b", n.replace("_", " "), flags=re.IGNORECASE)
            if not m:
                return None
            rates.append(float(m.group(1)))
        return rates


def parse_c_rates(names: Sequence[str]) -> list[float] | None:
    return Targets(Path("."), [], list(names), np.zeros((0, len(names)))).c_rates()


def _keys(name: str) -> set[str]:
    p = Path(str(name).strip().rstrip("/"))
    return {str(p), p.name, image_stem(p.name)}


def image_stem(name: str) -> str:
    """A file name without its image suffixes: ``a.ome.tif`` -> ``a``, ``b.zarr`` -> ``b``."""
    stem = Path(str(name).rstrip("/")).name
    suffixes = (".zarr", ".ome", ".tiff", ".tif", ".png", ".jpg", ".jpeg")
    while any(stem.lower().endswith(s) for s in suffixes):
        stem = next(stem[: -len(s)] for s in suffixes if stem.lower().endswith(s))
    return stem


def read_targets(
    path: str | Path, *, targets: Sequence[str] | None = None, groups: Sequence[str] = (), check_mape: bool = True
) -> Targets:
    """Read and check a targets CSV.

    ``targets`` picks target columns (default: every column but ``image`` and
    the ``groups``). Missing or non-numeric values, duplicate images and
    unknown columns are errors; a target that is zero or negative somewhere makes MAPE
    undefined or misleading (an error when ``check_mape``); a constant target gives a warning
    (R^2 is undefined for it).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise NcmError("targets CSV not found", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
            except csv.Error:
                dialect = csv.excel
            rows = list(csv.reader(f, dialect))
    except (OSError, UnicodeDecodeError) as exc:
        raise NcmError(f"cannot read the targets CSV ({exc})", path) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise NcmError("targets CSV is empty", path)
    header = [h.strip() for h in rows[0]]
    if IMAGE_COLUMN not in header:
        raise NcmError(
            f"targets CSV needs an {IMAGE_COLUMN!r} column naming each mosaic (found: {', '.join(header)})", path
        )
    for g in groups:
        if g not in header:
            raise NcmError(f"grouping column {g!r} is not in the CSV (columns: {', '.join(header)})", path)
    names = list(targets) if targets else [h for h in header if h != IMAGE_COLUMN and h not in groups]
    for n in names:
        if n not in header:
            raise NcmError(f"target column {n!r} is not in the CSV (columns: {', '.join(header)})", path)
        if n in groups or n == IMAGE_COLUMN:
            raise NcmError(f"column {n!r} cannot be both a target and the image or a group", path)
    if not names:
        raise NcmError("targets CSV has no target columns besides the image and group columns", path)
    if len(rows) < 2:
        raise NcmError("targets CSV has a header but no rows", path)
    col = {h: i for i, h in enumerate(header)}
    images, values, group_vals = [], [], {g: [] for g in groups}
    seen: dict[str, int] = {}
    for line, r in enumerate(rows[1:], start=2):
        r = r + [""] * (len(header) - len(r))
        image = r[col[IMAGE_COLUMN]].strip()
        if not image:
            raise NcmError(f"row {line}: the image name is empty", path)
        if image in seen:
            raise NcmError(f"row {line}: image {image!r} is listed twice (also in row {seen[image]})", path)
        seen[image] = line
        vals = []
        for n in names:
            cell = r[col[n]].strip()
            if not cell:
                raise NcmError(f"row {line}: {n} of {image!r} is missing", path)
            try:
                v = float(cell.replace(",", ".") if cell.count(",") == 1 and "." not in cell else cell)
            except ValueError:
                raise NcmError(f"row {line}: {n} of {image!r} is not a number ({cell!r})", path) from None
            if not math.isfinite(v):
                raise NcmError(f"row {line}: {n} of {image!r} is not finite ({cell!r})", path)
            vals.append(v)
        images.append(image)
        values.append(vals)
        for g in groups:
            group_vals[g].append(r[col[g]].strip())
    arr = np.asarray(values, np.float64)
    for k, n in enumerate(names):
        if check_mape and np.any(arr[:, k] == 0):
            i = int(np.flatnonzero(arr[:, k] == 0)[0])
            raise NcmError(
                f"target {n!r} is 0 for {images[i]!r}: MAPE is undefined at zero; use another loss "
                "(--loss mae, mse or huber)",
                path,
            )
        if check_mape and np.any(arr[:, k] < 0):
            i = int(np.flatnonzero(arr[:, k] < 0)[0])
            raise NcmError(
                f"target {n!r} is negative ({arr[i, k]:g}) for {images[i]!r}: a capacity cannot be, and MAPE "
                "scores it wrongly; correct the CSV or use another loss (--loss mae, mse or huber)",
                path,
            )
        if len(arr) > 1 and np.ptp(arr[:, k]) == 0:
            warnings.warn(
                f"{path}: target {n!r} has the same value ({arr[0, k]:g}) for every image: the model "
                "cannot learn anything about it and R^2 is undefined",
                stacklevel=2,
            )
    return Targets(path, images, names, arr, group_vals)
