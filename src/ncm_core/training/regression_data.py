"""Data of regression training: crops matched to their targets, grouped splits, input sizes.

Data are crops of cross-sections (``ncm sections``, whose manifest names each crop's source mosaic)
or plain images, and a targets CSV keyed by mosaic or image name (:mod:`ncm_core.data.targets`).
Every crop of a mosaic carries that mosaic's values; splits are grouped by mosaic (or by a grouping
column such as porosity) so that crops of one mosaic never sit on both sides.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.data.targets import Targets, read_targets
from ncm_core.errors import NcmError
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report


@dataclass
class RegressionData:
    """Crops prepared at the model input size with their targets and groups."""

    root: Path
    x: Any  # torch float32 (N, C, H, W), intensities scaled to [0, 1]
    y: np.ndarray  # (N, targets) in the CSV's units
    files: list[str]
    sources: list[str]  # mosaic (or image) of each crop
    groups: dict[str, list[str]]  # grouping column -> value per crop
    target_names: list[str]
    in_chans: int
    crop_size: tuple[int, int]  # crop (height, width) in source pixels
    targets: Targets
    pixel_size: float | None = None

    def split_groups(self, split_by: str | None) -> np.ndarray:
        """Group label of each crop: its source mosaic, or the value of a grouping column."""
        if split_by is None or split_by in ("source", "mosaic", "image"):
            return np.asarray(self.sources)
        if split_by not in self.groups:
            raise NcmError(
                f"no grouping column {split_by!r} (columns: {', '.join(self.groups) or 'none'}); name it with --group",
                self.targets.path,
            )
        return np.asarray(self.groups[split_by])


def _crop_table(data: Path) -> tuple[list[Path], list[str], tuple[int, int] | None, float | None]:
    """Crop files and their source names: from a sections manifest, else one image = one source."""
    from ncm_core.data.datasets import IMAGE_SUFFIXES, skip_hidden
    from ncm_core.data.sections import MANIFEST, SUMMARY, is_sections_folder

    if is_sections_folder(data):
        summary = json.loads((data / SUMMARY).read_text())
        with open(data / MANIFEST, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows:
            raise NcmError("the sections folder holds no crops", data)
        sizes = {m.get("pixel_size") for m in summary.get("mosaics", [])}
        px = sizes.pop() if len(sizes) == 1 else None
        return [data / r["file"] for r in rows], [r["source"] for r in rows], tuple(summary["crop"]), px
    files = skip_hidden(sorted(p for p in data.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), data)
    if not files:
        raise NcmError(f"no images ({', '.join(IMAGE_SUFFIXES)}) and no {MANIFEST} found", data)
    return files, [p.stem for p in files], None, None


def load_for_config(
    data: str | Path,
    targets: str | Path | Targets,
    c: Any,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> RegressionData:
    """:func:`load_regression_data` with the input size, groups, target columns and loss of a
    :class:`~ncm_core.training.config.RegressConfig` (training and cross-validation read data alike)."""
    return load_regression_data(
        data,
        targets,
        parse_size(c.input_size),
        groups=c.groups,
        target_columns=c.target_columns,
        loss=c.loss,
        progress=progress,
        cancel=cancel,
    )


def load_regression_data(
    data: str | Path,
    targets: str | Path | Targets,
    input_size: tuple[int, int] | None = None,
    *,
    groups: Sequence[str] = (),
    target_columns: Sequence[str] | None = None,
    loss: str = "mape",
    in_chans: int | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> RegressionData:
    """Read crops (a sections folder or a folder of images) and match them to the targets CSV.

    Crops are resized to ``input_size`` (height, width; default: their own
    size) once, here, so an epoch only moves tensors.
    """
    import torch

    from ncm_core.data.tilesets import _read_tile
    from ncm_core.models.preprocess import InputSpec, tiles_to_tensor

    root = Path(data).expanduser()
    if not root.is_dir():
        raise NcmError("crop folder not found" if not root.exists() else "expected a folder of crops", root)
    t = (
        targets
        if isinstance(targets, Targets)
        else read_targets(targets, targets=target_columns, groups=groups, check_mape=loss == "mape")
    )
    files, sources, crop, px = _crop_table(root)
    row_of = {}
    for s in sorted(set(sources)):
        i = t.index(s)
        if i is not None:
            row_of[s] = i
    matched = set(row_of.values())
    unmatched_rows = [img for k, img in enumerate(t.images) if k not in matched]
    if unmatched_rows:
        raise NcmError(
            f"{len(unmatched_rows)} row(s) of the targets CSV name images with no crops in {root}: "
            f"{', '.join(unmatched_rows[:5])}{', ...' if len(unmatched_rows) > 5 else ''}",
            t.path,
        )
    missing = sorted(set(sources) - set(row_of))
    if missing:
        warnings.warn(
            f"{t.path}: no targets for {len(missing)} mosaic(s) in {root} ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); their crops are left out",
            stacklevel=2,
        )
    keep = [k for k, s in enumerate(sources) if s in row_of]
    first = _read_tile(files[keep[0]])
    chans = in_chans or (1 if first.ndim == 2 else 3)
    size = tuple(input_size) if input_size else first.shape[:2]
    spec = InputSpec(in_chans=chans, input_size=size)
    xs = []
    for n, k in enumerate(keep):
        check_cancel(cancel)
        tile = _read_tile(files[k])
        if tile.shape[:2] != first.shape[:2]:
            raise NcmError(
                f"crop is {tile.shape[0]}x{tile.shape[1]} px but others are "
                f"{first.shape[0]}x{first.shape[1]}; all crops must have one size",
                files[k],
            )
        xs.append(tiles_to_tensor(tile[None], spec))
        if n % 50 == 0:
            report(progress, n, len(keep), "reading crops")
    x = torch.cat(xs)
    y = np.stack([t.values[row_of[sources[k]]] for k in keep])
    grp = {g: [t.groups[g][row_of[sources[k]]] for k in keep] for g in t.groups}
    return RegressionData(
        root,
        x,
        y,
        [str(files[k].relative_to(root)) for k in keep],
        [sources[k] for k in keep],
        grp,
        list(t.names),
        chans,
        tuple(crop or first.shape[:2]),
        t,
        px,
    )


def crop_features(data: RegressionData) -> tuple[np.ndarray, list[str]]:
    """Descriptor table ``(N, D)`` of the prepared crops and its names (:mod:`ncm_core.data.descriptors`):
    lengths in um (source px without a pixel size), the section's thickness where ``sections.json`` has it;
    pores are darker than the Otsu threshold of the crop's own section."""
    from ncm_core.data.descriptors import descriptor_matrix, section_thickness

    scale = data.crop_size[1] / data.x.shape[-1]  # prepared crops may be smaller copies of the crops
    px = 1.0 if data.pixel_size is None else float(data.pixel_size)
    thickness = section_thickness(data.root, data.sources, px)
    return descriptor_matrix(data.x.numpy(), pixel_size=px * scale, thickness=thickness, sources=data.sources)


def standardise(x: Any, spec: Any) -> Any:
    """Prepared crops ``(N, C, H, W)`` standardised by the spec's mean and std (unchanged without them)."""
    import torch

    if spec.mean is None or spec.std is None:
        return x
    return (x - torch.as_tensor(spec.mean).view(1, -1, 1, 1)) / torch.as_tensor(spec.std).view(1, -1, 1, 1)


def grouped_kfold(groups: Sequence[str], folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) crop indices of ``folds`` folds; each group lands in exactly one test fold."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n = len(set(groups.tolist()))
    if folds < 2:
        raise NcmError(f"cross-validation needs at least 2 folds, got {folds}")
    if n < folds:
        raise NcmError(f"{folds}-fold cross-validation needs at least {folds} groups (mosaics), found {n}")
    return list(GroupKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(groups)), groups=groups))


def grouped_split(groups: Sequence[str], fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices with about ``fraction`` of the groups held out (at least one; none for 0)."""
    groups = np.asarray(groups)
    if not 0 <= fraction < 1:
        raise NcmError(f"validation fraction must be at least 0 and below 1, got {fraction}")
    if fraction == 0:
        return np.arange(len(groups)), np.zeros(0, np.int64)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise NcmError(f"a held-out split needs at least 2 mosaics (groups), found {len(uniq)}")
    rng = np.random.default_rng(seed)
    n_out = min(max(1, round(fraction * len(uniq))), len(uniq) - 1)
    held = set(rng.permutation(uniq)[:n_out].tolist())
    mask = np.isin(groups, list(held))
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def parse_size(value: Any) -> tuple[int, int] | None:
    """``(h, w)`` from ``"56x168"``, an int or a pair (None stays None); sides of at least 8 px."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            raise NcmError(f"expected a size like 56x168 (height x width), got {value!r}") from None
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or min(value) < 8:
        raise NcmError(f"a size is (height, width), each at least 8 px, got {value!r}")
    return int(value[0]), int(value[1])
