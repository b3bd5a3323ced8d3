"""Evaluating classifiers: on class-per-folder images and on predicted mosaics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import ModelBundle, load_bundle
from .datasets import load_image, scan_class_folders
from .errors import NcmError
from .mosaic import open_mosaic
from .predict import Prediction, classify_tiles, open_prediction
from .progress import CancelFlag, ProgressFn, check_cancel, report
from .tiling import TileGrid, extract_tiles


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion matrix (scikit-learn)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "per_class": {name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
                      for k, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }


def tile_truth(grid: TileGrid, truth: Any, n_classes: int, block: tuple[int, int] = (32, 32),
               lut: np.ndarray | None = None) -> np.ndarray:
    """Majority class of ``truth`` (class index per pixel) under each tile's in-image pixels.

    ``lut`` first maps raw values to class indices (-1 = ignore). Read block
    by block, so ``truth`` may be as large as the mosaic.
    """
    t = open_mosaic(truth).data
    if tuple(t.shape[:2]) != tuple(grid.image_shape):
        raise NcmError(f"truth map is {t.shape[0]}x{t.shape[1]} px but the prediction covers "
                       f"{grid.image_shape[0]}x{grid.image_shape[1]} px")
    H, W = grid.image_shape
    out = np.full(grid.shape, -1, np.int32)
    for r0, r1, c0, c1 in grid.blocks(block):
        y0, y1, x0, x1 = grid.region(r0, r1, c0, c1)
        reg = np.asarray(t[y0:min(y1, H), x0:min(x1, W)].compute(scheduler="synchronous"))
        if lut is not None:
            reg = lut[np.clip(reg.astype(np.int64), -1, len(lut) - 1)]
        for i in range(r0, r1):
            for j in range(c0, c1):
                a0, a1, b0, b1 = grid.cell_rect(i, j)
                v = reg[a0 - y0:min(a1, H) - y0, b0 - x0:min(b1, W) - x0].ravel()
                v = v[(v >= 0) & (v < n_classes)]
                if v.size:
                    out[i, j] = np.bincount(v.astype(np.int64), minlength=n_classes).argmax()
    return out


def value_lut(value_names: dict[int, str], class_names: list[str]) -> np.ndarray:
    """Lookup table: label value -> index in ``class_names`` (-1 for unknown values and names).

    The last entry is -1, so clipped out-of-range values map to 'ignore'.
    """
    top = max(value_names, default=0)
    lut = np.full(top + 2, -1, np.int64)
    for v, name in value_names.items():
        if v >= 0 and name in class_names:
            lut[v] = class_names.index(name)
    return lut


def evaluate_prediction(prediction: str | Path | Prediction, truth: Any,
                        truth_classes: dict[int, str] | None = None) -> dict[str, Any]:
    """Tile accuracy of a mosaic prediction against a per-pixel truth map.

    ``truth_classes`` names the class of each truth value (an NGFF label
    image's properties, see :func:`~ncm_core.mosaic.read_label_classes`);
    classes are matched to the prediction's by name. Without it, truth values
    are class indices of the prediction.
    """
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    if truth_classes is None:
        truth_classes = dict(enumerate(pred.class_names))
    if not set(truth_classes.values()) & set(pred.class_names):
        raise NcmError(f"no class of the truth map ({', '.join(sorted(set(truth_classes.values()))[:4])}, ...) "
                       f"is a class of the model ({', '.join(pred.class_names[:4])}, ...)")
    tt = tile_truth(pred.grid, truth, len(pred.class_names), lut=value_lut(truth_classes, pred.class_names))
    pc = pred.classes
    valid = (pc >= 0) & (tt >= 0)
    m = classification_metrics(tt[valid], pc[valid], pred.class_names)
    m["tile_accuracy"] = m.pop("accuracy")
    m["n_tiles"] = int(pred.grid.size)
    m["n_scored"] = int(valid.sum())
    return m


def evaluate(
    bundle: str | Path | ModelBundle, data: str | Path, *, out: str | Path | None = None, stride: int | None = None,
    exclude_rows: tuple[int | None, int | None] | None = None, batch_size: int = 64, device: str = "auto",
    progress: ProgressFn | None = None, cancel: CancelFlag = None,
) -> dict[str, Any]:
    """Evaluate a classifier on a class-per-folder dataset.

    Each image is tiled at the bundle's tile size (excluding ``exclude_rows``,
    by default the band excluded in training); tiles are classified, and the
    image's class is the argmax of its mean tile probability. Returns tile-
    and image-level metrics; with ``out``, writes ``metrics.json``,
    ``confusion_matrix.csv`` and ``predictions.csv`` (one row per image with
    all class probabilities) there.
    """
    from .train import resolve_device

    b = load_bundle(bundle)
    names = b.class_names
    ds = scan_class_folders(data, class_names=names)
    if exclude_rows is None and b.config.training.get("exclude_rows"):
        exclude_rows = tuple(b.config.training["exclude_rows"])
    dev = resolve_device(device)
    b.model.to(dev)
    tile_true, tile_pred, img_true, img_pred, rows = [], [], [], [], []
    for k, (f, y) in enumerate(zip(ds.files, ds.labels)):
        check_cancel(cancel)
        img = load_image(f, exclude_rows)
        try:
            grid = TileGrid(img.shape[:2], b.config.tile_size, stride, edge="drop")
        except NcmError as exc:
            raise NcmError(str(exc), f) from None
        win = extract_tiles(img, grid, 0, grid.shape[0], 0, grid.shape[1])
        tiles = win.reshape(-1, *win.shape[2:])
        probs = classify_tiles(b, tiles, dev, batch_size)
        mean = probs.mean(0)
        tile_true += [y] * len(probs)
        tile_pred += probs.argmax(1).tolist()
        img_true.append(y)
        img_pred.append(int(mean.argmax()))
        rows.append({"image": str(f.relative_to(ds.root)), "true": names[y], "predicted": names[int(mean.argmax())],
                     "confidence": float(mean.max()), "tiles": len(probs),
                     **{f"p_{n}": float(mean[c]) for c, n in enumerate(names)}})
        report(progress, k + 1, len(ds.files), f.name)
    metrics = {"tiles": classification_metrics(np.array(tile_true), np.array(tile_pred), names),
               "images": classification_metrics(np.array(img_true), np.array(img_pred), names),
               "bundle": str(b.path), "data": str(ds.root)}
    if out is not None:
        write_metrics(metrics, out, rows)
    return metrics


def write_metrics(metrics: dict[str, Any], out: str | Path, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write ``metrics.json``, the confusion matrix CSV(s) and optional per-item rows to folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for key, m in [("", metrics)] + [(k + "_", v) for k, v in metrics.items() if isinstance(v, dict)]:
        if "confusion_matrix" in m:
            with open(out / f"{key}confusion_matrix.csv", "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["true \\ predicted", *m["class_names"]])
                for name, row in zip(m["class_names"], m["confusion_matrix"]):
                    w.writerow([name, *row])
    if rows:
        with open(out / "predictions.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return out
