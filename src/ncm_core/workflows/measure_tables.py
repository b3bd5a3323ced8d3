"""Tables of ``ncm measure``: one CSV (a row per item) and one JSON (summary and rows) per measure."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_table(part: Path, name: str, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """``name.csv`` (one row per item) and ``name.json`` (the summary and the rows)."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(part / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["empty"])
        w.writeheader()
        w.writerows([{k: _fmt(v) for k, v in r.items()} for r in rows])
    (part / f"{name}.json").write_text(json.dumps(jsonable({**summary, "rows": list(rows)}), indent=2))


def _fmt(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else f"{float(v):.6g}"
    return v.item() if isinstance(v, np.generic) else v


def jsonable(x: Any) -> Any:
    """``x`` with numpy values as Python ones and non-finite floats as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x
