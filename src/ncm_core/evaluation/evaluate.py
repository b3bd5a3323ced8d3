"""Evaluating classifiers: on class-per-folder images and on predicted mosaics."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.batch import Batch
from ncm_core.data.datasets import load_image, scan_class_folders
from ncm_core.data.tiling import TileGrid, check_rows, extract_tiles
from ncm_core.errors import NcmError
from ncm_core.inference.predict import Prediction, classify_tensor, open_prediction
from ncm_core.io.mosaic import open_mosaic
from ncm_core.models.bundle import ModelBundle, load_bundle
from ncm_core.outputs import check_inputs
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report


def class_factors(
    class_names: list[str], names: tuple[str, str] = ("composition", "state"), sep: str = "_"
) -> dict[str, list[str]]:
    """Split class names ``<a><sep><b>`` into two factors (``NCM811_cycled100`` -> composition
    ``NCM811``, state ``cycled100``); empty when any name does not split."""
    parts = [n.split(sep, 1) for n in class_names]
    if len(class_names) < 2 or any(len(p) != 2 for p in parts):
        return {}
    return {names[0]: [p[0] for p in parts], names[1]: [p[1] for p in parts]}


def marginal_metrics(cm: Any, factor: list[str]) -> dict[str, Any]:
    """Accuracy and confusion matrix of one factor of the classes, by summing the full confusion matrix
    ``cm`` (rows true, columns predicted) over the classes that share a level of ``factor``.

    A prediction counts as right for the factor when its level matches the
    truth's, whatever the other factor (e.g. composition right, state wrong).
    """
    cm = np.asarray(cm)
    levels = list(dict.fromkeys(factor))
    onehot = np.zeros((len(factor), len(levels)), np.int64)
    for k, lv in enumerate(factor):
        onehot[k, levels.index(lv)] = 1
    m = onehot.T @ cm @ onehot
    total = m.sum()
    return {
        "accuracy": float(np.trace(m) / total) if total else float("nan"),
        "class_names": levels,
        "confusion_matrix": m.tolist(),
    }


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1 and the confusion matrix (scikit-learn),
    with marginal (e.g. composition-only and state-only) accuracies when the class names factor."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    labels = list(range(len(class_names)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "per_class": {
            name: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(s[k])}
            for k, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    } | _marginals(confusion_matrix(y_true, y_pred, labels=labels), class_names)


def _marginals(cm: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    factors = class_factors(class_names)
    if not factors:
        return {}
    marg = {f: marginal_metrics(cm, levels) for f, levels in factors.items()}
    return {"marginals": marg, **{f"{f}_accuracy": m["accuracy"] for f, m in marg.items()}}


def tile_truth(
    grid: TileGrid, truth: Any, n_classes: int | None, block: tuple[int, int] = (32, 32), lut: np.ndarray | None = None
) -> np.ndarray:
    """Majority class of ``truth`` (class index per pixel) under each tile's in-image pixels.

    ``lut`` first maps raw values to class indices (-1 = ignore). Values outside
    ``[0, n_classes)`` are ignored; ``n_classes=None`` keeps every non-negative
    value (region ids). Read block by block, so ``truth`` may be as large as the mosaic.
    """
    t = open_mosaic(truth).data
    if tuple(t.shape[:2]) != tuple(grid.image_shape):
        raise NcmError(
            f"truth map is {t.shape[0]}x{t.shape[1]} px but the prediction covers "
            f"{grid.image_shape[0]}x{grid.image_shape[1]} px"
        )
    H, W = grid.image_shape
    out = np.full(grid.shape, -1, np.int32)
    for r0, r1, c0, c1 in grid.blocks(block):
        y0, y1, x0, x1 = grid.region(r0, r1, c0, c1)
        reg = np.asarray(t[y0 : min(y1, H), x0 : min(x1, W)].compute(scheduler="synchronous"))
        if lut is not None:
            reg = lut[np.clip(reg.astype(np.int64), -1, len(lut) - 1)]
        for i in range(r0, r1):
            for j in range(c0, c1):
                a0, a1, b0, b1 = grid.cell_rect(i, j)
                v = reg[a0 - y0 : min(a1, H) - y0, b0 - x0 : min(b1, W) - x0].ravel()
                v = v[(v >= 0) & (v < n_classes)] if n_classes is not None else v[v >= 0]
                if v.size and n_classes is not None:
                    out[i, j] = np.bincount(v.astype(np.int64), minlength=n_classes).argmax()
                elif v.size:  # unbounded ids: count only the values present
                    vals, counts = np.unique(v.astype(np.int64), return_counts=True)
                    out[i, j] = vals[counts.argmax()]
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


def prediction_truth(prediction: Prediction, truth: Any, truth_classes: dict[int, str] | None = None) -> np.ndarray:
    """The true class of each tile of ``prediction`` (its grid's shape; -1 where unknown), from a per-pixel
    truth map whose values ``truth_classes`` names (default: class indices of the prediction)."""
    pred = prediction
    if truth_classes is None:
        truth_classes = dict(enumerate(pred.class_names))
    if not set(truth_classes.values()) & set(pred.class_names):
        raise NcmError(
            f"no class of the truth map ({', '.join(sorted(set(truth_classes.values()))[:4])}, ...) "
            f"is a class of the model ({', '.join(pred.class_names[:4])}, ...)"
        )
    return tile_truth(pred.grid, truth, len(pred.class_names), lut=value_lut(truth_classes, pred.class_names))


def evaluate_prediction(
    prediction: str | Path | Prediction,
    truth: Any,
    truth_classes: dict[int, str] | None = None,
    *,
    truth_tiles: np.ndarray | None = None,
) -> dict[str, Any]:
    """Tile accuracy of a mosaic prediction against a per-pixel truth map.

    ``truth_classes`` names the class of each truth value (an NGFF label
    image's properties, see :func:`~ncm_core.io.mosaic.read_label_classes`);
    classes are matched to the prediction's by name. Without it, truth values
    are class indices of the prediction. ``truth_tiles``: the tiles' classes when
    already known (:func:`prediction_truth`); ``truth`` is then not read.
    """
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    tt = prediction_truth(pred, truth, truth_classes) if truth_tiles is None else truth_tiles
    pc = pred.classes
    valid = (pc >= 0) & (tt >= 0)
    m = classification_metrics(tt[valid], pc[valid], pred.class_names)
    m["tile_accuracy"] = m.pop("accuracy")
    m["n_tiles"] = int(pred.grid.size)
    m["n_scored"] = int(valid.sum())
    m["not_predicted"] = dict(pred.attrs.get("not_predicted", {}))  # kept tiles left out, by reason
    return m


def aggregate_probabilities(probs: np.ndarray, class_names: list[str], ood: np.ndarray | None = None) -> dict[str, Any]:
    """One answer for a frame or region from its tiles' probabilities ``(n, classes)``.

    ``predicted`` is the argmax of the mean probability (its value is
    ``confidence``); ``majority`` is the most frequent tile class and
    ``majority_fraction`` its share of the tiles; ``ood_fraction`` the share of
    tiles flagged out of distribution.
    """
    probs = probs[~np.isnan(probs).any(1)]
    if len(probs) == 0:
        return {
            "tiles": 0,
            "predicted": "",
            "confidence": float("nan"),
            "majority": "",
            "majority_fraction": float("nan"),
        }
    mean = probs.mean(0)
    votes = np.bincount(probs.argmax(1), minlength=len(class_names))
    row = {
        "tiles": int(len(probs)),
        "predicted": class_names[int(mean.argmax())],
        "confidence": float(mean.max()),
        "majority": class_names[int(votes.argmax())],
        "majority_fraction": float(votes.max() / len(probs)),
    }
    if ood is not None:
        row["ood_fraction"] = float(np.mean(ood[~np.isnan(ood)] > 1)) if np.isfinite(ood).any() else float("nan")
    row.update({f"p_{n}": float(mean[c]) for c, n in enumerate(class_names)})
    return row


def summarize_prediction(
    prediction: str | Path | Prediction, regions: Any = None, region_names: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """Per-frame (whole mosaic) or per-region aggregates of a prediction's tiles.

    ``regions`` is a per-pixel map of region ids (0 = none), e.g. painted
    frames or sample areas; each tile belongs to the region covering most of
    it. Returns one row per region (or one for the whole mosaic) from
    :func:`aggregate_probabilities`.
    """
    pred = prediction if isinstance(prediction, Prediction) else open_prediction(prediction)
    # grid-sized arrays read with zarr directly (dask's compute would import distributed: start-up time)
    probs = np.moveaxis(pred.read("probabilities"), 0, -1)  # (rows, cols, classes)
    ood = None if pred.ood is None else pred.read("ood")
    if regions is None:
        row = aggregate_probabilities(
            probs.reshape(-1, probs.shape[-1]), pred.class_names, None if ood is None else ood.ravel()
        )
        return [{"region": "all", **row}]
    cell_region = tile_truth(pred.grid, regions, None)
    rows = []
    for r in sorted(int(v) for v in np.unique(cell_region) if v > 0):
        sel = cell_region == r
        row = aggregate_probabilities(probs[sel], pred.class_names, None if ood is None else ood[sel])
        rows.append({"region": (region_names or {}).get(r, str(r)), **row})
    return rows


def _tiles_of_folders(b: ModelBundle, data: Path, exclude_rows: Any, stride: int | None, strict: bool = False):
    """The images' batch (:mod:`ncm_core.batch`) and an iterator of (source name, true class, tiles,
    records) per image of class folders, each image tiled at the bundle's tile size; an image that fails
    is recorded in the batch and skipped."""
    ds = scan_class_folders(data, class_names=b.class_names)
    if exclude_rows is None and b.config.training.get("exclude_rows"):
        exclude_rows = tuple(b.config.training["exclude_rows"])
    batch = Batch(len(ds.files), strict=strict, what="images")
    return batch, _iter_folders(b, ds, exclude_rows, stride, batch)


def _iter_folders(b: ModelBundle, ds: Any, exclude_rows: Any, stride: int | None, batch: Batch):
    for f, y in zip(ds.files, ds.labels):
        with batch.attempt(f) as attempt:
            img = load_image(f, exclude_rows)
            try:
                grid = TileGrid(img.shape[:2], b.config.tile_size, stride, edge="drop")
            except NcmError as exc:
                raise NcmError(str(exc), f) from None
            win = extract_tiles(img, grid, 0, grid.shape[0], 0, grid.shape[1])
        if not attempt.failed:
            yield str(f.relative_to(ds.root)), y, win.reshape(-1, *win.shape[2:]), [None] * (grid.size)


def _tiles_of_set(b: ModelBundle, data: Path, split: str):
    """Count and iterator of (source frame, true class, tiles, records) per source of one split of a tile set."""
    from ncm_core.data.tilesets import open_tile_set

    ts = open_tile_set(data)
    if ts.tile_size != b.config.tile_size:
        raise NcmError(
            f"the tile set's tiles are {ts.tile_size} px but the model was trained on {b.config.tile_size} px tiles",
            data,
        )
    unknown = sorted(set(ts.class_names) - set(b.class_names))
    if unknown:
        raise NcmError(
            f"classes {unknown} of the tile set are not classes of the model ({len(b.class_names)} "
            f"classes: {', '.join(b.class_names[:6])}{', ...' if len(b.class_names) > 6 else ''})",
            data,
        )
    if not ts.split(split):
        raise NcmError(f"the tile set has no {split!r} tiles (splits: {', '.join(sorted(ts.counts()))})", data)
    x, y, _ = ts.load(split)
    recs = ts.split(split)
    by_source: dict[str, list[int]] = {}
    for k, r in enumerate(recs):
        by_source.setdefault(r.source, []).append(k)
    return len(by_source), (
        (src, b.class_names.index(ts.class_names[y[idx[0]]]), x[idx], [recs[k] for k in idx])
        for src, idx in by_source.items()
    )


def evaluate(
    bundle: str | Path | ModelBundle,
    data: str | Path,
    *,
    out: str | Path | None = None,
    split: str = "test",
    stride: int | None = None,
    exclude_rows: tuple[int | None, int | None] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    strict: bool = False,
    tta: bool | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> dict[str, Any]:
    """Evaluate a classifier on class folders of frames or on one split of a tile set.

    ``tta`` averages each tile's probabilities over flips and a quarter turn (None: as the bundle was
    trained, its recipe's choice). ``metrics["validation"]`` is the bundle's validation spread
    (:mod:`ncm_core.evaluation.report`).
    Frames are tiled at the bundle's tile size (excluding ``exclude_rows``, by
    default the band excluded in training); a tile set's ``split`` (default
    ``test``) is used as it is. Returns tile- and image-level metrics (an
    image's class is the argmax of its tiles' mean probability) with
    per-class precision/recall/F1 and, when class names are
    ``<composition>_<state>``, the composition-only and state-only accuracies.
    With ``out``, writes ``metrics.json``, confusion matrices (CSV and PNG),
    ``per_class.csv``, ``predictions.csv`` (one row per image: mean
    probabilities of all classes, majority vote, confidence, out-of-distribution
    share) and ``tiles.csv`` (one row per tile). An image of class folders that cannot be read or tiled
    is skipped and listed in ``metrics["failures"]`` (and ``failures.csv``); ``strict`` stops at it.
    """
    from ncm_core.data.tilesets import is_tile_set
    from ncm_core.devices import resolve_device
    from ncm_core.models.ood import has_ood
    from ncm_core.models.preprocess import tiles_to_tensor

    if out is not None:  # a folder beside the bundle's files is fine; the bundle or the data themselves are not
        check_inputs(out, (bundle,), inside_ok=True)
        check_inputs(out, (data,))
    check_rows(exclude_rows)
    from ncm_core.data.tilesets import check_split

    check_split(split, data)
    b = load_bundle(bundle)
    if b.config.task != "classify":
        raise NcmError("this evaluation is for classification bundles", b.path)
    names = b.class_names
    data = Path(data).expanduser()
    if is_tile_set(data):
        batch, (n_items, items) = Batch(0), _tiles_of_set(b, data, split)
    else:
        batch, items = _tiles_of_folders(b, data, exclude_rows, stride, strict)
        n_items = batch.total
    dev = resolve_device(device)
    b.model.to(dev)
    use_ood, tta = has_ood(b), bool(b.config.training.get("tta", False) if tta is None else tta)
    tile_true, tile_pred, img_true, img_pred, rows, tile_rows = [], [], [], [], [], []
    k = 0
    for k, (src, y, tiles, recs) in enumerate(items, start=1):
        check_cancel(cancel)
        x = tiles_to_tensor(tiles, b.config.input, "cpu")
        if use_ood:
            probs, ood = classify_tensor(b, x, dev, batch_size, ood=True, tta=tta)
        else:
            probs, ood = classify_tensor(b, x, dev, batch_size, tta=tta), None
        agg = aggregate_probabilities(probs, names, ood)
        tile_true += [y] * len(probs)
        tile_pred += probs.argmax(1).tolist()
        img_true.append(y)
        img_pred.append(names.index(agg["predicted"]))
        rows.append({"image": src, "true": names[y], **agg})
        for t, (p, r) in enumerate(zip(probs, recs)):
            tr = {
                "image": src,
                "tile": t if r is None else r.file,
                "true": names[y],
                "predicted": names[int(p.argmax())],
                "confidence": float(p.max()),
            }
            if ood is not None:
                tr["ood_ratio"] = float(ood[t])
            tile_rows.append({**tr, **{f"p_{n}": float(p[c]) for c, n in enumerate(names)}})
        report(progress, k, n_items, src)
    batch.check()  # every image failed: nothing is written
    if not rows:
        raise NcmError("no images to evaluate", data)
    metrics = {
        "tiles": classification_metrics(np.array(tile_true), np.array(tile_pred), names),
        "images": classification_metrics(np.array(img_true), np.array(img_pred), names),
        "bundle": str(b.path),
        "data": str(data),
        "split": split if is_tile_set(data) else None,
        "failures": batch.records(),
        "tta": tta,
        "validation": b.config.training.get("validation_spread"),
    }
    if use_ood:
        flagged = np.array([r["ood_ratio"] > 1 for r in tile_rows])
        metrics["ood_fraction"] = float(flagged.mean())
    if out is not None:
        write_metrics(metrics, out, rows, tile_rows)
        batch.write(out)
    batch.warn(out)
    return metrics


def write_metrics(
    metrics: dict[str, Any],
    out: str | Path,
    rows: list[dict[str, Any]] | None = None,
    tile_rows: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``metrics.json`` and, for each set of classification metrics in it, the confusion matrix
    (CSV and PNG), per-class precision/recall/F1 (CSV) and marginal confusion matrices; plus the
    per-image ``predictions.csv`` and per-tile ``tiles.csv`` rows, to folder ``out``."""
    from ncm_core.viz.prediction import confusion_matrix_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the format entry marks the folder as ours (ncm_core.outputs.output_kind)
    (out / "metrics.json").write_text(json.dumps({"format": "ncm-evaluation", **metrics}, indent=2))
    for key, m in [("", metrics)] + [(k + "_", v) for k, v in metrics.items() if isinstance(v, dict)]:
        if "confusion_matrix" not in m:
            continue
        _write_cm(out / f"{key}confusion_matrix.csv", m["confusion_matrix"], m["class_names"])
        acc = m.get("accuracy", m.get("tile_accuracy"))
        what = {"tiles_": "Tiles", "images_": "Images"}.get(key, "Tiles")
        confusion_matrix_figure(
            m["confusion_matrix"],
            m["class_names"],
            out / f"{key}confusion_matrix.png",
            title=f"{what}: accuracy {acc:.1%} (n = {m['n']})",
        )
        write_rows(out / f"{key}per_class.csv", [{"class": n, **v} for n, v in m["per_class"].items()])
        for factor, mm in m.get("marginals", {}).items():
            _write_cm(out / f"{key}{factor}_confusion_matrix.csv", mm["confusion_matrix"], mm["class_names"])
    if rows:
        write_rows(out / "predictions.csv", rows)
    if tile_rows:
        write_rows(out / "tiles.csv", tile_rows)
    return out


def _write_cm(path: Path, cm: Any, names: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ predicted", *names])
        for name, row in zip(names, cm):
            w.writerow([name, *row])


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """A CSV with one row per dict (the first dict's keys as header)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
