"""``ncm demo``: the whole path once, on the embedded sample data.

Generates SEM frames of the 12 NCM classes and a mosaic of class regions,
trains a classifier on random crops of the frames, predicts the mosaic tile by
tile, scores the tiles against the mosaic's ground truth and draws an overview.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncm_core.errors import NcmError
from ncm_core.outputs import is_empty_folder, output_kind, remove
from ncm_core.progress import ConsoleProgress, ProgressFn

#: frames per class, frame size, mosaic shape, epochs, random crops per frame and epoch, tile and input size
#: The default model is ResNet-10t: trained from scratch on 2 CPU cores it reached 88 % validation accuracy
#: in 110 s where EfficientNet-B0 reached 57 % in 213 s (docs/getting-started.md); EfficientNet is one
#: ``--arch`` away and is the SEM workflow's model when pretrained weights are given from a local file.
DEFAULT_ARCH = "resnet10t"
DEFAULT_OUT = "ncm-demo"
SETTINGS = {
    "full": dict(frames=6, frame=(544, 512), mosaic=(1100, 1500), epochs=14, crops=48, tile=64, input=64),
    "quick": dict(frames=2, frame=(224, 224), mosaic=(300, 420), epochs=1, crops=4, tile=64, input=32),
}


def run_demo(
    out: str | Path = DEFAULT_OUT,
    *,
    quick: bool = False,
    seed: int = 0,
    architecture: str = DEFAULT_ARCH,
    log: Callable[[str], None] = print,
    progress: Callable[[str], ProgressFn | None] | None = None,
) -> dict[str, Any]:
    """Run the demo into folder ``out`` (replaced) and return its metrics.

    ``quick`` uses tiny data and one epoch (for tests); ``progress`` makes a
    progress callback for a named step (the CLI passes a console bar).
    """
    from ncm_core.data import synth
    from ncm_core.evaluation.evaluate import evaluate_prediction, prediction_truth
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.training.classify import train
    from ncm_core.viz.prediction import confusion_matrix_figure, prediction_overview

    s = SETTINGS["quick" if quick else "full"]
    mk = progress or (lambda label: None)
    out = Path(out)
    if (out.exists() or out.is_symlink()) and not is_empty_folder(out) and output_kind(out) is None:
        raise NcmError("the demo replaces its folder, and napari-ncm did not write this one; choose another", out)
    remove(out)  # the demo's folder is replaced, not written under .partial: its files name each other
    out.mkdir(parents=True)
    t0 = time.monotonic()
    bar = 32 if not quick else 16
    log(
        f"[1/5] sample data: {len(synth.CLASS_NAMES)} classes x {s['frames']} SEM frames, "
        f"a {s['mosaic'][0]}x{s['mosaic'][1]} px mosaic"
    )
    frames = synth.write_sem_dataset(out / "data" / "sem_frames", s["frames"], s["frame"], info_bar=bar, seed=seed)
    sample = synth.sem_mosaic(s["mosaic"], seed=seed + 1)
    mosaic_path = write_ome_zarr(
        out / "mosaic.ome.zarr",
        sample.image,
        pixel_size=sample.pixel_size,
        chunks=256,
        levels=2,
        labels={"truth": sample.truth + 1},
        label_classes={"truth": list(sample.class_names)},
        name="sem_mosaic",
    )
    log(f"[2/5] training {architecture} on random {s['tile']} px crops ({s['epochs']} epochs)")
    t1 = time.monotonic()
    result = train(
        frames,
        out / "model",
        architecture=architecture,
        tile_size=s["tile"],
        input_size=s["input"],
        epochs=s["epochs"],
        crops_per_image=s["crops"],
        val_crops_per_image=max(4, s["crops"] // 2),
        batch_size=32,
        lr=2e-3,
        exclude_rows=(-bar, None),
        seed=seed,
        pixel_size=sample.pixel_size,
        progress=mk("train"),
    )
    train_s = time.monotonic() - t1
    log(f"      best validation accuracy {result.best_val_accuracy:.1%} at epoch {result.best_epoch} ({train_s:.0f} s)")
    log("[3/5] predicting the mosaic tile by tile")
    t2 = time.monotonic()
    pred = predict_mosaic(result.bundle, mosaic_path, out / "prediction.zarr", progress=mk("predict"))
    predict_s = time.monotonic() - t2
    log("[4/5] scoring tiles against the ground truth")
    truth = prediction_truth(pred, sample.truth, dict(enumerate(sample.class_names)))
    m = evaluate_prediction(pred, sample.truth, truth_tiles=truth)
    metrics = {
        "tile_accuracy": m["tile_accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "n_tiles": m["n_scored"],
        "grid": pred.grid.to_dict(),
        "architecture": architecture,
        "epochs": s["epochs"],
        "best_val_accuracy": result.best_val_accuracy,
        "train_seconds": round(train_s, 1),
        "predict_seconds": round(predict_s, 2),
        "total_seconds": round(time.monotonic() - t0, 1),
        "per_class": m["per_class"],
        "confusion_matrix": m["confusion_matrix"],
        "class_names": m["class_names"],
        "outputs": {"mosaic": str(mosaic_path), "bundle": str(result.bundle), "prediction": str(pred.path)},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log("[5/5] figures")
    prediction_overview(
        mosaic_path,
        pred,
        out / "overview.png",
        truth_tiles=truth,
        title=f"{architecture}: predicted class per {pred.grid.tile} px tile",
    )
    confusion_matrix_figure(
        m["confusion_matrix"],
        m["class_names"],
        out / "confusion_matrix.png",
        title=f"Mosaic tiles (accuracy {m['tile_accuracy']:.1%})",
    )
    metrics["total_seconds"] = round(time.monotonic() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def console_progress(label: str) -> ProgressFn:
    return ConsoleProgress(label)
