"""The 'generalise' training recipe (docs/sem-classification.md): augmentations of a session's look,
per-tile standardisation at training and prediction time, class-balanced sampling, the weight average
the bundle keeps, test-time augmentation, and the report of how steady validation was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ncm_core.data import synth
from ncm_core.data.augment import AUGMENTATIONS
from ncm_core.data.datasets import augment_tiles, random_crops
from ncm_core.errors import NcmError

CLASSES = ("NCM333_pristine", "NCM811_pristine", "NCM811_cycled100")


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    frame = synth.sem_frame("NCM811", "pristine", (160, 160), info_bar=None, seed=3)
    return random_crops([frame], [0], 48, 6, np.random.default_rng(0), False)[0]


@pytest.mark.parametrize("op", AUGMENTATIONS["classify"])
def test_each_augmentation_is_deterministic_by_seed(tiles, op):
    a = augment_tiles(tiles, np.random.default_rng(7), (op,))
    b = augment_tiles(tiles, np.random.default_rng(7), (op,))
    c = augment_tiles(tiles, np.random.default_rng(8), (op,))
    assert a.dtype == tiles.dtype and a.shape == tiles.shape
    assert np.array_equal(a, b), "the same seed must give the same tiles"
    assert not np.array_equal(a, c), "another seed must give other tiles"
    assert not np.array_equal(a, tiles), f"{op} left every tile as it was"


def test_crops_with_zoom_and_looks_are_deterministic_by_seed():
    frame = synth.sem_frame("NCM333", "pristine", (200, 200), info_bar=None, seed=1)
    ops = AUGMENTATIONS["classify"]
    a = random_crops([frame], [0], 40, 5, np.random.default_rng(1), ops)[0]
    b = random_crops([frame], [0], 40, 5, np.random.default_rng(1), ops)[0]
    c = random_crops([frame], [0], 40, 5, np.random.default_rng(2), ops)[0]
    assert a.shape == (5, 40, 40) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_recipes_resolve_and_single_fields_override():
    from ncm_core.training.config import TrainConfig
    from ncm_core.training.recipe import recipe_settings

    basic = recipe_settings(TrainConfig(recipe="basic"))
    assert basic == {
        "standardize": False,
        "augment": ("flip", "rot90"),
        "balanced": False,
        "label_smoothing": 0.0,
        "ema": False,
        "tta": False,
    }
    gen = recipe_settings(TrainConfig(ema=False, augment="flip"))
    assert gen["standardize"] and gen["balanced"] and gen["tta"] and gen["label_smoothing"] > 0
    assert gen["ema"] is False and gen["augment"] == "flip"
    with pytest.raises(NcmError, match="recipe"):
        TrainConfig(recipe="fancy").validate()  # type: ignore[arg-type]


def test_balanced_sampling_draws_classes_equally(tmp_path):
    from ncm_core.training.classify_data import frames_source

    root = tmp_path / "frames"
    for cls, n in (("rare", 2), ("common", 8)):
        (root / cls).mkdir(parents=True)
        for k in range(n):
            img = synth.sem_frame("NCM811" if cls == "rare" else "NCM333", "pristine", (64, 64), info_bar=None, seed=k)
            Image.fromarray(img).save(root / cls / f"f{k}.png")
    plain = frames_source(root, 32, 0.0, 10, 4, "none", (), 0)
    balanced = frames_source(root, 32, 0.0, 10, 4, "none", (), 0, balanced=True)
    assert np.bincount(plain.epoch(np.random.default_rng(0))[1]).tolist() == [80, 20]  # common, rare
    counts = np.bincount(balanced.epoch(np.random.default_rng(0))[1])
    assert counts.sum() == 100 and abs(counts[0] - counts[1]) < 25


# --------------------------------------------------------------------------- a bundle trained with the recipe
@pytest.fixture(scope="module")
def generalised(sem_folders, tmp_path_factory, request):
    """A bundle trained with the 'generalise' recipe (no held-out frames: the last epoch's average is
    kept), and the weight average as it was after the last step."""
    from ncm_core.training import classify
    from ncm_core.training.recipe import WeightAverage

    seen = {}

    class Watched(WeightAverage):
        def __init__(self, model, decay):
            super().__init__(model, decay)
            seen["ema"] = self

        def update(self, model):
            super().update(model)
            self.raw = {k: v.detach().clone() for k, v in model.state_dict().items()}

    mp = pytest.MonkeyPatch()
    mp.setattr(classify, "WeightAverage", Watched)
    out = tmp_path_factory.mktemp("recipe") / "bundle"
    try:
        classify.train(
            sem_folders,
            out,
            architecture="resnet10t",
            tile_size=32,
            epochs=2,
            crops_per_image=16,
            batch_size=16,
            val_fraction=0,
            exclude_rows=(-16, None),
            ood=False,
        )
    finally:
        mp.undo()
    return out, seen["ema"]


def test_the_bundle_stores_the_ema_weights(generalised):
    from safetensors.torch import load_file

    out, ema = generalised
    stored = load_file(str(out / "model.safetensors"))
    averaged = ema.module.state_dict()
    assert ema.updates > 0 and set(stored) == set(averaged)
    for k, v in averaged.items():
        assert np.array_equal(stored[k].numpy(), v.cpu().numpy()), k
    raw = {k: v.numpy() for k, v in ema.raw.items() if v.dtype.is_floating_point}
    moved = [k for k, v in raw.items() if not np.allclose(v, stored[k].numpy())]
    assert moved, "the stored weights are the last raw weights, not their average"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["ema"] and cfg["training"]["recipe"] == "generalise"


def test_standardisation_is_applied_at_predict_time(generalised, tmp_path):
    """Prediction standardises each tile as training did: a mosaic with another brightness and contrast
    (a linear change of its intensities) gets the same probabilities."""
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.models.bundle import read_bundle_config

    out, _ = generalised
    assert read_bundle_config(out).input.standardize == (1.0, 99.0)
    m = synth.sem_mosaic((96, 128), grid=(1, 2), seed=4, classes=CLASSES[:2]).image
    dim = (m.astype(np.float32) / 255 * 0.4 + 0.3).astype(np.float32)
    paths = [write_ome_zarr(tmp_path / f"{n}.ome.zarr", img) for n, img in (("m", m), ("dim", dim))]
    p = [predict_mosaic(out, q, tmp_path / f"p{k}.zarr", ood=False).read("probabilities") for k, q in enumerate(paths)]
    assert np.isfinite(p[0]).all()
    assert np.allclose(p[0], p[1], atol=2e-3)


def test_predict_with_tta_averages_the_views_and_dense_mode_refuses_standardised_tiles(generalised, tmp_path):
    from ncm_core.inference.classify import classify_tensor
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.models.bundle import load_bundle
    from ncm_core.models.preprocess import tiles_to_tensor

    out, _ = generalised
    m = synth.sem_mosaic((64, 96), grid=(1, 2), seed=5, classes=CLASSES[:2]).image
    path = write_ome_zarr(tmp_path / "m.ome.zarr", m)
    pred = predict_mosaic(out, path, tmp_path / "p.zarr", ood=False, tta=True, backend="torch")
    got = np.moveaxis(pred.read("probabilities"), 0, -1).reshape(-1, 3)
    b = load_bundle(out)
    tiles = np.stack([m[y : y + 32, x : x + 32] for y in range(0, 64, 32) for x in range(0, 96, 32)])
    want = classify_tensor(b, tiles_to_tensor(tiles, b.config.input), tta=True)
    assert np.allclose(got, want, atol=1e-4)
    assert not np.allclose(want, classify_tensor(b, tiles_to_tensor(tiles, b.config.input)), atol=1e-4)
    with pytest.raises(NcmError, match="standardises each tile"):
        predict_mosaic(out, path, tmp_path / "d.zarr", stride=16, dense=True)


def test_test_time_augmentation_averages_the_views(generalised):
    import torch

    from ncm_core.inference.classify import classify_tensor, tta_views
    from ncm_core.models.bundle import load_bundle

    b = load_bundle(generalised[0])
    x = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    views = [classify_tensor(b, v) for v in tta_views(x)]
    assert np.allclose(classify_tensor(b, x, tta=True), np.mean(views, 0), atol=1e-6)
    assert not np.allclose(views[0], views[1])


# --------------------------------------------------------------------------------------------- the report
def test_spread_warning_fires_on_a_jumpy_history_only():
    from ncm_core.evaluation.report import validation_spread

    jumpy = [0.317, 0.356, 0.098, 0.329, 0.186, 0.483, 0.549, 0.747, 0.761, 0.567]
    stable = [0.30, 0.62, 0.81, 0.85, 0.84, 0.855]
    s = validation_spread([{"epoch": k + 1, "val_accuracy": v} for k, v in enumerate(jumpy)])
    assert s["warning"] and "epochs 9 and 10" in s["warning"] and "\n" not in s["warning"]
    assert s["epochs"] == [8, 9, 10] and s["largest_move"] == pytest.approx(0.194)
    s = validation_spread([{"epoch": k + 1, "val_accuracy": v} for k, v in enumerate(stable)])
    assert s["warning"] is None and s["spread"] == pytest.approx(0.015)
    assert validation_spread([{"epoch": 1, "train_loss": 1.0}]) is None


def test_frame_report_aggregates_probabilities_not_votes():
    from ncm_core.evaluation.report import frame_report

    # frame "a" (class 0): two crops lean weakly to class 1, one is sure of class 0 -> mean says class 0
    probs = np.array([[0.45, 0.55], [0.45, 0.55], [0.99, 0.01], [0.2, 0.8]])
    r = frame_report(probs, np.array([0, 0, 0, 1]), ["a", "a", "a", "b"], ["x", "y"])
    assert r["frames"]["accuracy"] == 1.0 and r["per_class_recall"] == {"x": 1.0, "y": 1.0}
    assert r["crop_accuracy"] == 0.5 and r["frames"]["confusion_matrix"] == [[1, 0], [0, 1]]


# ------------------------------------------------------------------------------------------------ bad input
def _folder(root: Path, frames: dict[str, list[np.ndarray]]) -> Path:
    for cls, imgs in frames.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for k, img in enumerate(imgs):
            Image.fromarray(img).save(root / cls / f"f{k}.png")
    return root


def test_a_class_with_one_frame_cannot_be_held_out(tmp_path):
    from ncm_core.training.classify import train

    g = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    root = _folder(tmp_path / "d", {"many": [g, g, g], "single": [g]})
    with pytest.raises(NcmError, match="class 'single' has only 1 image.*hold one out") as e:
        train(root, tmp_path / "b", architecture="resnet10t", tile_size=32, exclude_rows="none")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["channels", "bit depths"])
def test_mixed_images_in_a_training_folder_are_one_error_line(tmp_path, kind):
    from ncm_core.training.classify import train

    g = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    odd = np.stack([g] * 3, -1) if kind == "channels" else g.astype(np.uint16) * 257
    root = _folder(tmp_path / "d", {"a": [g, g], "b": [g, odd]})
    with pytest.raises(NcmError, match="grayscale and colour" if kind == "channels" else "bit depths") as e:
        train(root, tmp_path / "b", architecture="resnet10t", tile_size=32, exclude_rows="none")
    assert "\n" not in str(e.value)


def test_context_in_micrometres_sets_the_crop_size(sem_folders, tmp_path):
    from ncm_core.data.crops import build_crops

    ts = build_crops(sem_folders, tmp_path / "set", context_um=4.0, pixel_size=0.1, per_frame=2, exclude_rows="none")
    assert ts.tile_size == 40 and ts.params["context_um"] == 4.0
    with pytest.raises(NcmError, match="needs the pixel size"):
        build_crops(sem_folders, tmp_path / "set2", context_um=4.0, per_frame=2)


@pytest.mark.slow
def test_train_and_evaluate_from_the_command_line_report_recall_and_spread(sem_folders, tmp_path):
    from .test_cli import ncm

    args = ["--arch", "resnet10t", "--tile", 32, "--epochs", 3, "--crops", 4, "--batch-size", 8, "--no-ood", "-q"]
    r = ncm("train", sem_folders, tmp_path / "b", *args, "--recipe", "basic", "--ema", "--label-smoothing", 0.05)
    assert r.returncode == 0, r.stderr
    assert "held-out frames: accuracy" in r.stdout and "frame recall per class:" in r.stdout
    assert "validation accuracy over epochs 1-3:" in r.stdout
    assert r.stderr.count("ncm: warning: validation accuracy moved") <= 1
    assert (tmp_path / "b" / "report" / "validation_frames_confusion.png").is_file()
    t = json.loads((tmp_path / "b" / "config.json").read_text())["training"]
    assert t["recipe"] == "basic" and t["ema"] and not t["standardize"] and t["label_smoothing"] == 0.05
    assert set(t["validation_report"]["per_class_recall"]) <= set(CLASSES)
    e = ncm("evaluate", tmp_path / "b", sem_folders, "--tta", "--out", tmp_path / "ev", "-q")
    assert e.returncode == 0, e.stderr
    assert "image recall per class:" in e.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["tta"] is True and m["validation"]["epochs"] == [1, 2, 3]
