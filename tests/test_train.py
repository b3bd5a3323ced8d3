"""Training from class folders: a bundle that keeps its split, progress, cancel, and clear errors."""

import threading

import numpy as np
import pytest
from PIL import Image

from ncm_core.errors import Cancelled, NcmError
from ncm_core.models.bundle import load_bundle
from ncm_core.training.classify import train


def test_train_writes_a_bundle_with_its_split(sem_folders, tmp_path):
    calls = []
    r = train(
        sem_folders,
        tmp_path / "m",
        tile_size=48,
        input_size=32,
        epochs=2,
        crops_per_image=4,
        batch_size=8,
        exclude_rows=(-16, None),
        progress=lambda d, t, m: calls.append((d, t)),
    )
    b = load_bundle(r.bundle)
    tr = b.config.training
    assert b.config.class_names == ["NCM333_pristine", "NCM811_cycled100", "NCM811_pristine"]
    assert b.config.tile_size == 48 and b.config.input.input_size == (32, 32) and b.config.input.in_chans == 1
    assert not set(tr["train_images"]) & set(tr["val_images"])  # no frame on both sides
    assert len(tr["val_images"]) == 3 and len(tr["history"]) == 2
    assert 1 <= r.best_epoch <= 2 and tr["best_epoch"] == r.best_epoch
    assert calls[-1][0] == calls[-1][1] and all(t == calls[0][1] for _, t in calls)


def test_cancel_stops_training_and_writes_nothing(sem_folders, tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        train(sem_folders, tmp_path / "m", tile_size=32, epochs=1, crops_per_image=2, cancel=stop)
    assert not (tmp_path / "m" / "model.safetensors").exists()


def _folders(root, spec):
    for name, n, shape in spec:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            Image.fromarray(np.full(shape, 100 + k, np.uint8)).save(root / name / f"{k}.png")
    return root


@pytest.mark.parametrize(
    "spec, words",
    [
        ([("a", 2, (64, 64)), ("b", 0, (64, 64))], "has no images"),
        ([("only", 3, (64, 64))], "only one class"),
        ([("a", 2, (64, 64)), ("b", 1, (64, 64))], "at least 2 are needed"),
        ([("a", 2, (20, 20)), ("b", 2, (20, 20))], "smaller than the tile size"),
    ],
)
def test_bad_datasets(tmp_path, spec, words):
    root = _folders(tmp_path / "d", spec)
    with pytest.raises(NcmError, match=words):
        train(root, tmp_path / "m", tile_size=32, epochs=1)


def test_unreadable_image_is_named(tmp_path):
    root = _folders(tmp_path / "d", [("a", 2, (64, 64)), ("b", 2, (64, 64))])
    (root / "b" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(NcmError, match="broken.png"):
        train(root, tmp_path / "m", tile_size=32, epochs=1)


def test_val_fraction_zero_means_no_validation_and_keeps_the_last_epoch(sem_folders, tmp_path):
    """0 is 0 (it used to become 0.25 on the command line): no frame held out, the last epoch is kept."""
    import warnings

    from ncm_core.training.config import NO_VALIDATION

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for no validation: no "no validation tiles" warning
        r = train(
            sem_folders,
            tmp_path / "m",
            tile_size=32,
            epochs=2,
            crops_per_image=4,
            batch_size=8,
            val_fraction=0,
            ood=False,
        )
    tr = load_bundle(r.bundle).config.training
    assert tr["val_fraction"] == 0 and tr["val_images"] == [] and len(tr["train_images"]) == 9
    assert r.best_epoch == 2 == len(r.history) and tr["best_epoch"] == 2 and tr["kept_epoch"] == NO_VALIDATION
    assert not r.validated and np.isnan(r.best_val_accuracy) and "val_accuracy" not in r.history[-1]


def test_val_fraction_zero_from_the_command_line(sem_folders, tmp_path):
    from .test_cli import ncm

    r = ncm(
        "train",
        sem_folders,
        tmp_path / "b",
        "--arch",
        "resnet10t",
        "--tile",
        32,
        "--epochs",
        2,
        "--crops",
        4,
        "--batch-size",
        8,
        "--val-fraction",
        0,
        "--no-ood",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "no validation data: the last epoch (2 of 2) is kept" in r.stdout
    tr = load_bundle(tmp_path / "b").config.training
    assert tr["val_fraction"] == 0 and tr["val_images"] == []


def test_options_object_and_keywords_are_one_interface(tmp_path):
    from ncm_core.training.config import TrainConfig

    with pytest.raises(NcmError, match="unknown option 'epoch' for TrainConfig; did you mean 'epochs'"):
        train(tmp_path, tmp_path / "m", epoch=3)
    with pytest.raises(NcmError, match="validation fraction must be at least 0 and below 1, got 1.5"):
        train(tmp_path, tmp_path / "m", TrainConfig(epochs=2), val_fraction=1.5)
    with pytest.raises(NcmError, match="monitor must be one of accuracy, balanced_accuracy, loss, got 'mape'"):
        train(tmp_path, tmp_path / "m", monitor="mape")
