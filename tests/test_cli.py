"""The ncm command: sample data, the quick demo, and one-line errors with no traceback."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NCM = [sys.executable, "-m", "ncm_core.cli"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def ncm(*args, cwd=None):
    return subprocess.run([*NCM, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=ENV)


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "ncm"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "napari-ncm" in r.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["predict", "{tmp}/nothing", "{tmp}/m.png", "{tmp}/out.zarr"], ["nothing", "model bundle not found"]),
        (["predict", "{bundle}", "{tmp}/notes.txt", "{tmp}/out.zarr"], ["notes.txt", "not an image"]),
        (["predict", "{bundle}", "{tmp}/small.png", "{tmp}/out.zarr"], ["smaller than one tile"]),
        (["train", "{tmp}/nodata", "{tmp}/b"], ["nodata", "dataset folder not found"]),
        (["predict", "{bundle}", "{tmp}/small.png", "{tmp}/out.zarr", "--tile", "0"], ["must be at least 1"]),
        (["crops", "{frames}", "{tmp}/out.zarr", "--size", "500"], ["larger than the frame", ".png"]),
        (["crops", "{tmp}/nodata", "{tmp}/out.zarr"], ["nodata", "dataset folder not found"]),
        (["train", "{frames}", "{tmp}/b", "--augment", "mirror"], ["unknown augmentation"]),
        (["evaluate", "{bundle}", "{tmp}"], ["no class folders"]),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, tiny_bundle, sem_folders, args, words):
    import numpy as np
    from PIL import Image

    (tmp_path / "notes.txt").write_text("not an image")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small.png")
    r = ncm(*[a.format(tmp=tmp_path, bundle=tiny_bundle, frames=sem_folders) for a in args])
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in last, r.stderr
    assert not (tmp_path / "out.zarr").exists()


def test_sample_predict_evaluate(tmp_path, tiny_bundle):
    assert ncm("sample", "sem-mosaic", tmp_path / "m.zarr", "--shape", 200, 260).returncode == 0
    r = ncm("predict", tiny_bundle, tmp_path / "m.zarr", tmp_path / "p.zarr", "-q")
    assert r.returncode == 0, r.stderr
    assert "7x9 tiles of 32 px" in r.stdout
    r = ncm(
        "evaluate",
        "--prediction",
        tmp_path / "p.zarr",
        "--truth",
        tmp_path / "m.zarr/labels/truth",
        "--out",
        tmp_path / "ev",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # classes are matched by name: only tiles whose truth is one of the model's 3 classes are scored
    from ncm_core.data import synth
    from ncm_core.evaluation.evaluate import tile_truth, value_lut
    from ncm_core.inference.predict import open_prediction

    pred = open_prediction(tmp_path / "p.zarr")
    truth = tile_truth(
        pred.grid,
        synth.sem_mosaic((200, 260)).truth,
        3,
        lut=value_lut(dict(enumerate(synth.CLASS_NAMES)), pred.class_names),
    )
    assert m["n_tiles"] == 63 and m["n_scored"] == (truth >= 0).sum() > 0
    assert 0 <= m["tile_accuracy"] <= 1
    assert (tmp_path / "ev" / "confusion_matrix.csv").exists()


def test_quick_demo_runs_end_to_end(tmp_path):
    r = ncm("demo", "--quick", "--out", tmp_path / "demo", "-q")
    assert r.returncode == 0, r.stderr
    assert "tile accuracy:" in r.stdout
    out = tmp_path / "demo"
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["tile_accuracy"] <= 1 and m["n_tiles"] == 5 * 7  # 300x420 px in 64 px tiles
    for f in [
        "overview.png",
        "confusion_matrix.png",
        "model/model.safetensors",
        "prediction.zarr/zarr.json",
        "mosaic.ome.zarr/labels/truth/zarr.json",
    ]:
        assert (out / f).exists(), f


def test_unreachable_dask_scheduler_is_one_line(tmp_path, tiny_bundle):
    assert ncm("sample", "sem-mosaic", tmp_path / "m.zarr", "--shape", 100, 100).returncode == 0
    r = ncm(
        "predict", tiny_bundle, tmp_path / "m.zarr", tmp_path / "p.zarr", "-q", "--dask-scheduler", "tcp://127.0.0.1:9"
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot reach the dask scheduler at tcp://127.0.0.1:9" in r.stderr.strip().splitlines()[-1]


def test_crops_train_evaluate_from_the_command_line(tmp_path, sem_folders):
    r = ncm(
        "crops",
        sem_folders,
        tmp_path / "crops",
        "--size",
        32,
        "--per-frame",
        6,
        "--val-fraction",
        0.34,
        "--test-fraction",
        0.34,
        "--exclude-rows=-16:",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "3 classes; train 18 crops of 3 frames, val 18 crops of 3 frames, test 18 crops of 3 frames" in r.stdout
    r = ncm(
        "train",
        tmp_path / "crops",
        tmp_path / "b",
        "--task",
        "classify",
        "--arch",
        "resnet10t",
        "--epochs",
        2,
        "--batch-size",
        8,
        "--opt",
        "adam",
        "--lr",
        3e-3,
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "best validation accuracy" in r.stdout and (tmp_path / "b" / "model.safetensors").is_file()
    r = ncm("evaluate", tmp_path / "b", tmp_path / "crops", "--split", "test", "--out", tmp_path / "ev", "-q")
    assert r.returncode == 0, r.stderr
    assert "image accuracy" in r.stdout and "composition" in r.stdout and "state" in r.stdout
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["split"] == "test" and m["images"]["n"] == 3 and m["tiles"]["n"] == 18
    assert (tmp_path / "ev" / "tiles_confusion_matrix.png").stat().st_size > 1000


def test_cross_section_workflow_from_the_command_line(tmp_path, section_set, tiny_regressor):
    r = ncm(
        "sections",
        *sorted(section_set.glob("*.ome.tif"))[:3],
        "--out",
        tmp_path / "crops",
        "--crop",
        128,
        384,
        "--mode",
        "sliding",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "section_000: collector angle" in r.stdout and "um" in r.stdout
    info = json.loads((tmp_path / "crops" / "sections.json").read_text())
    assert [m["name"] for m in info["mosaics"]] == ["section_000", "section_001", "section_002"]
    targets = tmp_path / "t.csv"
    targets.write_text("\n".join((section_set / "targets.csv").read_text().splitlines()[:4]) + "\n")
    r = ncm(
        "train",
        tmp_path / "crops",
        tmp_path / "model",
        "--task",
        "regress",
        "--targets",
        targets,
        "--group",
        "porosity",
        "--input-size",
        "32x96",
        "--epochs",
        2,
        "--batch-size",
        8,
        "--l2",
        "1e-5",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "best validation MAPE" in r.stdout
    r = ncm("predict", tiny_regressor, section_set / "section_001.ome.tif", tmp_path / "pred", "-q")
    assert r.returncode == 0, r.stderr
    assert "Q_5C:" in r.stdout and (tmp_path / "pred" / "crops.csv").is_file()


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "{crops}", "{tmp}/m", "--task", "regress"], ["needs a targets CSV"]),
        (
            ["train", "{crops}", "{tmp}/m", "--task", "regress", "--targets", "{tmp}/bad.csv"],
            ["bad.csv", "row 2", "not a number"],
        ),
        (
            ["train", "{crops}", "{tmp}/m", "--task", "regress", "--targets", "{targets}", "--folds", "9"],
            ["9-fold cross-validation needs at least 9 groups"],
        ),
        (["sections", "{tmp}/flat.png", "--out", "{tmp}/out"], ["flat.png", "no current collector found"]),
        (["sections", "{section}", "--out", "{tmp}/out", "--crop", "400", "672"], ["do not fit"]),
    ],
)
def test_cross_section_bad_input_is_one_line(tmp_path, section_set, section_crops, args, words):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((300, 900), 90, np.uint8)).save(tmp_path / "flat.png")
    (tmp_path / "bad.csv").write_text("image,Q_1C\nsection_000,lots\n")
    r = ncm(
        *[
            a.format(
                tmp=tmp_path,
                crops=section_crops,
                targets=section_set / "targets.csv",
                section=section_set / "section_000.ome.tif",
            )
            for a in args
        ]
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in last, r.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_explain_tiles_with_checks_and_a_mosaic_heatmap(tiny_bundle, tmp_path):
    import numpy as np
    from PIL import Image

    from ncm_core.explain.heatmaps import open_heatmap

    rng = np.random.default_rng(0)
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32)).astype(np.uint8)).save(tiles / f"t{k}.png")
    r = ncm(
        "explain",
        tiny_bundle,
        tiles,
        tmp_path / "ex",
        "--method",
        "gradcam,occlusion",
        "--window",
        "8",
        "--target",
        "top-2",
        "--check",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "ex"
    assert {p.name for p in (out / "maps").iterdir()} == {
        f"t{k}__{m}.tif" for k in range(3) for m in ("gradcam", "occlusion")
    }
    checks = json.loads((out / "checks.json").read_text())
    assert set(checks["randomisation"]) == {"gradcam", "occlusion"} and checks["images"] == 3
    assert 0 <= checks["boundaries"]["gradcam"]["area_share"] <= 1
    assert all(
        (out / n).is_file() for n in ("overview.png", "randomisation.png", "deletion_insertion.png", "explanations.csv")
    )
    assert "randomisation rank correlation" in r.stdout
    mosaic = tmp_path / "m.png"
    Image.fromarray(rng.integers(0, 255, (96, 160)).astype(np.uint8)).save(mosaic)
    r = ncm(
        "explain",
        tiny_bundle,
        mosaic,
        tmp_path / "h.zarr",
        "--method",
        "gradram",
        "--target",
        "all",
        "-q",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    h = open_heatmap(tmp_path / "h.zarr")
    assert h.data.shape == (3, 24, 40) and h.signed and len(list(tmp_path.glob("h-*.png"))) == 3
    r = ncm("explain", tiny_bundle, mosaic, tmp_path / "h.zarr", "--method", "gradram")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "output exists" in r.stderr
    r = ncm("explain", tiny_bundle, mosaic, tmp_path / "x.zarr", "--target", "class:9")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "class 9 is out of range" in r.stderr
    assert not (tmp_path / "x.zarr").exists()
