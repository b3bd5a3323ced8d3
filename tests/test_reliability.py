"""Nothing lost, nothing silently wrong: a catalogue of bad inputs through the ``ncm`` command, and the
rules behind it at the API (outputs never touch inputs, ``--overwrite`` replaces only what napari-ncm
wrote, options checked at the boundary, hidden files skipped). See docs/reliability.md."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ncm_core.errors import NcmError
from tests.test_cli import ncm


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_bundle, sem_folders) -> Path:
    """Inputs of every kind in one folder: a bundle, class folders of frames, a mosaic with truth labels,
    a mosaic whose metadata says its pixels are -1 um, a foreign folder, a plain file, regression crops
    with a negative capacity."""
    from PIL import Image

    from ncm_core.data import synth
    from ncm_core.io.mosaic import write_ome_zarr

    w = tmp_path_factory.mktemp("world")
    shutil.copytree(tiny_bundle, w / "bundle")
    shutil.copytree(sem_folders, w / "frames")
    m = synth.sem_mosaic((96, 128), seed=3)
    write_ome_zarr(w / "m.zarr", m.image, pixel_size=m.pixel_size, chunks=64, labels={"truth": m.truth + 1})
    write_ome_zarr(w / "neg.zarr", m.image, pixel_size=-1.0, chunks=64)
    (w / "mine").mkdir()
    (w / "mine" / "thesis.docx").write_text("years of work")
    (w / "notes.txt").write_text("not an output")
    (w / "crops").mkdir()
    rng = np.random.default_rng(0)
    for k in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 120), np.uint8)).save(w / "crops" / f"s{k}.png")
    (w / "neg.csv").write_text("image,Q_1C\ns0,150\ns1,-3\ns2,140\ns3,130\n")
    return w


# (arguments, words the one error line must hold); {w} is the world folder
C12 = "a,b,c,d,e,f,g,h,i,j,k,l"  # names for the 12 classes of the sample mosaic's truth labels
CATALOGUE = [
    # outputs never touch inputs
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/m.zarr", "--overwrite"], ["m.zarr", "the output is an input"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/bundle", "--overwrite"], ["bundle", "the output is an input"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/m.zarr/labels/p.zarr"], ["lies inside an input"]),
    (["predict", "{w}/bundle", "{w}/m.zarr/labels/truth", "{w}/m.zarr", "--overwrite"], ["contains an input"]),
    (["explain", "{w}/bundle", "{w}/m.zarr", "{w}/m.zarr", "--overwrite", "-q"], ["the output is an input"]),
    (["explain", "{w}/bundle", "{w}/frames", "{w}/frames/maps", "-q"], ["lies inside an input"]),
    (["train", "{w}/frames", "{w}/frames/b", "-q"], ["lies inside an input"]),
    (["train", "{w}/frames", "{w}/frames", "--overwrite", "-q"], ["the output is an input"]),
    (["crops", "{w}/frames", "{w}/frames", "--overwrite", "-q"], ["the output is an input"]),
    (["crops", "{w}/frames", "{w}/c", "--masks", "{w}/c/masks", "-q"], ["c", "mask folder not found"]),
    (["sections", "{w}/m.zarr", "--out", "{w}/m.zarr", "--overwrite", "-q"], ["the output is an input"]),
    (["evaluate", "{w}/bundle", "{w}/frames", "--out", "{w}/frames"], ["the output is an input"]),
    (
        ["evaluate", "--prediction", "{w}/p.zarr", "--truth", "{w}/m.zarr/labels/truth", "--out", "{w}/m.zarr"],
        ["contains an input"],
    ),
    (["tune", "{w}/frames", "{w}/frames/study", "-q"], ["lies inside an input"]),
    (["pretrain", "{w}/frames", "{w}/frames/ssl", "-q"], ["lies inside an input"]),
    (["pretrain", "{w}/frames", "{w}/b", "--method", "mocco", "-q"], ["invalid choice", "'mocco'"]),
    # the training recipe, context in micrometres, regression models, session sample data
    (["train", "{w}/frames", "{w}/b", "--recipe", "fancy", "-q"], ["invalid choice", "'fancy'"]),
    (["train", "{w}/frames", "{w}/b", "--context-um", "-5", "-q"], ["--context-um", "above 0"]),
    (["crops", "{w}/frames", "{w}/c", "--context-um", "45", "-q"], ["needs the pixel size", "--pixel-size"]),
    (["train", "{w}/crops", "{w}/b", "--task", "regress", "--model", "magic", "-q"], ["invalid choice", "'magic'"]),
    (
        ["train", "{w}/crops", "{w}/b", "--task", "regress", "--targets", "{w}/neg.csv", "--learning-curve", "x"],
        ["learning-curve model", "'x'"],
    ),
    (["sample", "sem-sessions", "{w}/s", "--sessions", "0"], ["--sessions", "at least 1"]),
    # --overwrite replaces only what napari-ncm wrote; a finished bundle and sample folders need it
    (["train", "{w}/frames", "{w}/bundle", "-q"], ["bundle", "finished model bundle", "--overwrite"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/mine", "--overwrite"], ["mine", "not written by napari-ncm"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/notes.txt", "--overwrite"], ["notes.txt", "a file"]),
    (["sample", "sem-frames", "{w}/mine", "--frames", "1", "--size", "64"], ["mine", "output exists"]),
    (["sample", "sem-frames", "{w}/mine", "--frames", "1", "--overwrite"], ["mine", "not written by napari-ncm"]),
    (["sample", "sem-mosaic", "{w}/mine", "--overwrite"], ["mine", "not written by napari-ncm"]),
    (["crops", "{w}/frames", "{w}/mine", "--overwrite", "-q"], ["mine", "not written by napari-ncm"]),
    (["sections", "{w}/m.zarr", "--out", "{w}/mine", "--overwrite", "-q"], ["mine", "not written by napari-ncm"]),
    # side files checked before the prediction starts
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/p.zarr", "--summary", "{w}/nowhere/s.csv"], ["does not exist"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/p.zarr", "--summary", "{w}/m.zarr"], ["the output is an input"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/p.zarr", "--regions", "{w}/none.zarr"], ["region map not found"]),
    # options checked at the boundary
    (["train", "{w}/frames", "{w}/b", "--lr", "-1", "-q"], ["learning rate", "-1"]),
    (["train", "{w}/frames", "{w}/b", "--lr", "nan", "-q"], ["learning rate", "nan"]),
    (["train", "{w}/frames", "{w}/b", "--opt", "adamww", "-q"], ["unknown optimizer", "'adamw'"]),
    (["train", "{w}/frames", "{w}/b", "--sched", "cosin", "-q"], ["unknown scheduler", "'cosine'"]),
    (["train", "{w}/frames", "{w}/b", "--exclude-rows=5:2", "-q"], ["5:2", "reversed"]),
    (["train", "{w}/frames", "{w}/b", "--exclude-rows=0:", "-q"], ["0:", "every row"]),
    (["crops", "{w}/frames", "{w}/c", "--exclude-rows=5:2", "-q"], ["5:2", "reversed"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/p.zarr", "--exclude-rows=0:"], ["every row"]),
    (["train", "{w}/frames", "{w}/b", "--pixel-size", "-1", "-q"], ["pixel size", "-1"]),
    (["train", "{w}/frames", "{w}/b", "--pixel-size", "nan", "-q"], ["pixel size", "nan"]),
    (["sections", "{w}/m.zarr", "--out", "{w}/c", "--pixel-size", "-1", "-q"], ["pixel size", "-1"]),
    (["predict", "{w}/bundle", "{w}/neg.zarr", "{w}/p.zarr"], ["neg.zarr", "pixel size is -1", "--pixel-size"]),
    # options of segmentation bundles (issue 19): checked at the boundary, refused for a tile classifier
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--window", "0"], ["--window", "at least 1"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--halo", "-8"], ["--halo", "0 or more"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--overlap", "x"], ["--overlap", "whole number"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--blend", "soft"], ["--blend", "'soft'"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--chunk", "0"], ["--chunk", "at least 1"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--probability-factor", "0"], ["--probability-factor"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/s.zarr", "--window", "64"], ["--window", "tile classifier"]),
    # options added with issue 15's items 1 and 4
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/p.zarr", "--missing-chunks", "zero"], ["--missing-chunks", "'zero'"]),
    (["explain", "{w}/bundle", "{w}/m.zarr", "{w}/h.zarr", "--missing-chunks", "zero"], ["--missing-chunks", "'zero'"]),
    (["predict", "{w}/bundle", "{w}/m.zarr", "{w}/neg.zarr", "{w}/notes.txt"], ["notes.txt", "output is a folder"]),
    (
        ["predict", "{w}/bundle", "{w}/m.zarr", "{w}/neg.zarr", "{w}/preds", "--regions", "{w}/m.zarr/labels/truth"],
        ["--regions is a map of one mosaic"],
    ),
    # ncm generate / inpaint / superres (issue 20)
    (["generate", "train", "{w}/crops/s0.png", "{w}/g", "-q"], ["s0.png", "grey-level image", "segment it first"]),
    (["generate", "train", "{w}/crops/s0.png", "{w}/g", "--size", "48", "-q"], ["power of two", "48"]),
    (
        ["generate", "train", "{w}/crops/s0.png", "{w}/g", "--fraction-weight", "-1"],
        ["--fraction-weight", "at least 0"],
    ),
    (["generate", "train", "{w}/crops/s0.png", "{w}/g", "--ema", "1", "-q"], ["ema", "below 1"]),
    (["generate", "train", "{w}/crops/s0.png", "{w}/g", "--ema", "-0.5"], ["--ema", "at least 0"]),
    (["generate", "volume", "{w}/bundle", "{w}/v.zarr", "--size", "0,4,4", "-q"], ["--size", "'0,4,4'"]),
    (["generate", "volume", "{w}/bundle", "{w}/v.zarr", "-q"], ["bundle", "not a generator bundle"]),
    (["generate", "check", "{w}/bundle", "{w}/chk", "--volumes", "0", "-q"], ["--volumes", "at least 1"]),
    (
        ["inpaint", "{w}/crops/s0.png", "{w}/crops/s1.png", "{w}/f.png", "--kind", "fancy"],
        ["invalid choice", "'fancy'"],
    ),
    (["inpaint", "{w}/crops/s0.png", "{w}/crops/s1.png", "{w}/f.png", "--patch", "0"], ["--patch", "at least 1"]),
    (["inpaint", "{w}/crops/s0.png", "{w}/crops/s1.png", "{w}/f.zarr", "-q"], ["f.zarr", ".tif, .tiff or .png"]),
    (["superres", "train", "{w}/crops/s0.png", "{w}/sr", "--factor", "1", "-q"], ["factor must be between 2 and 8"]),
    (["superres", "train", "{w}/crops/s0.png", "{w}/sr", "--blur", "-1", "-q"], ["--blur", "at least 0"]),
    (["superres", "apply", "{w}/bundle", "{w}/m.zarr", "{w}/sr.zarr", "-q"], ["not a super-resolution bundle"]),
    # ncm measure (issue 19): the pore class, the parts measured, the side files
    (["measure", "{w}/m.zarr", "{w}/meas", "-q"], ["m.zarr", "say which class is pore: --pore CLASS"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--classes", "a,b", "-q"], ["m.zarr", "no class name", "--classes"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "z", "-q"], ["'z' is not one of"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "a", "--particle-class", "z", "-q"], ["'z'"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "a", "--region", "5:2,0:9"], ["leaves 0"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "a", "--axis", "4", "-q"], ["axis 4"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--pixel-size", "-1", "-q"], ["--pixel-size", "above 0"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--profile-bin", "0", "-q"], ["--profile-bin", "above 0"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--separation", "blob", "-q"], ["invalid choice", "'blob'"]),
    (["measure", "{w}/m.zarr", "{w}/meas", "--labels", "nope", "-q"], ["no label image 'nope'"]),
    (
        ["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "a", "--regions", "{w}/no.tif", "-q"],
        ["no.tif", "regions image not found"],
    ),
    (
        ["measure", "{w}/m.zarr", "{w}/meas", "--classes", C12, "--pore", "a", "--sections", "{w}/no.json", "-q"],
        ["no.json", "sections summary not found"],
    ),
    (["sample", "volume", "{w}/v", "--structure", "foam"], ["invalid choice", "'foam'"]),
    (["sample", "volume", "{w}/v", "--side", "0"], ["--side", "at least 1"]),
    (
        [
            "train",
            "{w}/crops",
            "{w}/b",
            "--task",
            "regress",
            "--targets",
            "{w}/neg.csv",
            "--input-size",
            "40x120",
            "-q",
        ],
        ["neg.csv", "negative", "s1"],
    ),
    # segmentation (issue 19): ncm train --task segment, ncm sample phases
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "-q"], ["frames", "no image with a label image"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--engine", "svm", "-q"], ["invalid choice", "'svm'"]),
    (
        ["train", "{w}/frames", "{w}/b", "--task", "segment", "--normalization", "mosaic", "-q"],
        ["invalid choice", "'mosaic'"],
    ),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--sigmas", "0,2", "-q"], ["feature sigmas"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--sigmas", "a", "-q"], ["--sigmas", "numbers"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--features", "hue", "-q"], ["feature groups", "hue"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--classes", "pore", "-q"], ["2 or more distinct"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--colors", "red", "-q"], ["#rrggbb", "'red'"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--leaves", "1", "-q"], ["leaves at least 2"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--trees", "0", "-q"], ["--trees", "at least 1"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--max-per-class", "0", "-q"], ["--max-per-class"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--threads", "0", "-q"], ["--threads", "at least 1"]),
    (["train", "{w}/frames", "{w}/b", "--task", "segment", "--patch-size", "16", "-q"], ["patch size 32 px"]),
    (["sample", "phases", "{w}/s", "--strokes", "0"], ["--strokes", "above 0"]),
    (["sample", "phase-mosaic", "{w}/mine", "--overwrite"], ["mine", "not written by napari-ncm"]),
]


@pytest.mark.parametrize("args, words", CATALOGUE, ids=[" ".join(a[:1] + a[3:5]) for a, _ in CATALOGUE])
def test_fault_catalogue(world, args, words):
    before = _snapshot(world)
    r = ncm(*[a.format(w=world) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1 and errors[0] == lines[-1], r.stderr  # one line (argparse adds its usage above)
    for w in words:
        assert w in lines[-1], r.stderr
    assert _snapshot(world) == before, "the run changed or left something in the folder"


# ---------------------------------------------------------------------------------------------- outputs, API


def test_output_kind_recognises_our_outputs_only(tmp_path, tiny_bundle, sem_folders):
    from ncm_core.outputs import output_kind

    assert output_kind(tiny_bundle) == "a model bundle"
    assert output_kind(sem_folders) == "sample data"  # written by synth.write_sem_dataset, which marks it
    shutil.copytree(sem_folders, tmp_path / "frames", ignore=shutil.ignore_patterns("ncm-sample.json"))
    assert output_kind(tmp_path / "frames") is None  # class folders of frames: the user's data
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text(json.dumps({"accuracy": 0.9}))
    assert output_kind(tmp_path / "ev") is None  # a metrics.json of someone else's
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "attributes": {"ome": {}}}))
    assert output_kind(tmp_path / "z") is None  # someone else's OME-Zarr
    (tmp_path / "z" / "zarr.json").write_text(json.dumps({"zarr_format": 3, "attributes": {"ncm": {"kind": "x"}}}))
    assert output_kind(tmp_path / "z") == "a zarr group written by napari-ncm"
    (tmp_path / "f.txt").write_text("x")
    assert output_kind(tmp_path / "f.txt") is None


def test_overwrite_replaces_only_what_we_wrote(tmp_path, tiny_bundle):
    from ncm_core.data import synth
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.outputs import OUTPUT_EXISTS, check_output

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("precious")
    with pytest.raises(NcmError, match=OUTPUT_EXISTS.split(";")[0]):
        check_output(mine, overwrite=False)
    with pytest.raises(NcmError, match="only replaces what napari-ncm wrote.*a folder not written"):
        check_output(mine, overwrite=True)
    assert (mine / "data.csv").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty", overwrite=False) == tmp_path / "empty"  # nothing to lose
    assert check_output(mine, overwrite=True, replace_any=True) == mine  # a save dialog that asked already

    m = synth.sem_mosaic((96, 128), seed=1)
    write_ome_zarr(tmp_path / "m.zarr", m.image, chunks=64)
    write_ome_zarr(tmp_path / "m.zarr", m.image, chunks=64, overwrite=True)  # our own image: replaced
    p = predict_mosaic(tiny_bundle, tmp_path / "m.zarr", tmp_path / "p.zarr")
    predict_mosaic(tiny_bundle, tmp_path / "m.zarr", p.path, overwrite=True)  # our own prediction: replaced
    before = _snapshot(tmp_path / "m.zarr")
    for out in (tmp_path / "m.zarr", tiny_bundle, tmp_path / "m.zarr" / "0" / "p.zarr"):
        with pytest.raises(NcmError, match="input"):
            predict_mosaic(tiny_bundle, tmp_path / "m.zarr", out, overwrite=True)
    assert _snapshot(tmp_path / "m.zarr") == before
    assert not list(tmp_path.glob("*.partial"))


def test_training_output_rules(tmp_path, sem_folders):
    from ncm_core.outputs import check_training_output, register_marker

    b = tmp_path / "b"
    b.mkdir()
    (b / "config.json").write_text(json.dumps({"format": "ncm-bundle"}))
    with pytest.raises(NcmError, match="finished model bundle"):
        check_training_output(b, overwrite=False)
    assert check_training_output(b, overwrite=True) == b
    (b / "checkpoint").mkdir()
    (b / "checkpoint" / "state.json").write_text("{}")
    assert check_training_output(b, overwrite=False) == b  # an unfinished run resumes by itself
    with pytest.raises(NcmError, match="lies inside an input"):
        check_training_output(sem_folders / "bundle", False, (sem_folders,))
    (tmp_path / "f").write_text("x")
    with pytest.raises(NcmError, match="a file"):
        check_training_output(tmp_path / "f", overwrite=True)

    from ncm_core.outputs import output_kind

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "result.npz").write_text("x")
    assert output_kind(tmp_path / "w") is None
    from ncm_core.outputs import MARKERS

    marker = ("a test output", lambda p: (p / "result.npz").exists())
    register_marker(*marker)
    try:
        assert output_kind(tmp_path / "w") == "a test output"
    finally:
        MARKERS.remove(marker)


def test_the_demo_replaces_only_a_demo_folder(tmp_path):
    from ncm_core.workflows.demo import run_demo

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "letter.txt").write_text("keep me")
    with pytest.raises(NcmError, match="did not write this one"):
        run_demo(tmp_path / "docs", quick=True, log=lambda s: None)
    assert (tmp_path / "docs" / "letter.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: __import__("ncm_core").training.config.TrainConfig(lr=0).validate(), "learning rate"),
        (lambda: __import__("ncm_core").training.config.TrainConfig(lr=float("inf")).validate(), "learning rate"),
        (lambda: __import__("ncm_core").training.config.RegressConfig(lr=-1e-3).validate(), "learning rate"),
        (lambda: __import__("ncm_core").training.config.RegressConfig(optimizer="radm").validate(), "radam"),
        (lambda: __import__("ncm_core").training.config.TrainConfig(scheduler="stpe").validate(), "'step'"),
        (lambda: __import__("ncm_core").training.config.TrainConfig(exclude_rows=(-2, -5)).validate(), "reversed"),
        (lambda: __import__("ncm_core").training.config.TrainConfig(pixel_size=0.0).validate(), "pixel size"),
        (lambda: __import__("ncm_core").data.crops.CropOptions(exclude_rows=(None, None)).validate(), "every row"),
        (lambda: __import__("ncm_core").inference.options.PredictOptions(exclude_rows=(3, 3)), "empty"),
        (lambda: __import__("ncm_core").data.section_detection.SectionOptions(pixel_size=float("nan")), "pixel"),
    ],
)
def test_options_are_checked_at_the_boundary(make, words):
    import ncm_core.data.crops
    import ncm_core.data.section_detection
    import ncm_core.inference.options
    import ncm_core.training.config  # noqa: F401

    with pytest.raises(NcmError) as e:
        make()
    assert words in str(e.value) and "\n" not in str(e.value)


def test_good_options_pass():
    from ncm_core.data.tiling import check_rows, parse_rows
    from ncm_core.training.config import RegressConfig, TrainConfig

    TrainConfig(optimizer="sgd", scheduler="step", exclude_rows=(-32, None), pixel_size=0.05).validate()
    RegressConfig().validate()  # lookahead_radam
    assert parse_rows("-32:") == (-32, None) and parse_rows("2:5") == (2, 5) and check_rows((10, -10)) == (10, -10)


def test_pixel_sizes_that_imply_tiny_tiles_are_refused(tmp_path, tiny_bundle):
    from ncm_core.data import synth
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr

    b = tmp_path / "b"
    shutil.copytree(tiny_bundle, b)
    cfg = json.loads((b / "config.json").read_text())
    cfg["pixel_size"] = 0.05
    (b / "config.json").write_text(json.dumps(cfg))
    m = synth.sem_mosaic((96, 128), seed=1)
    write_ome_zarr(tmp_path / "coarse.zarr", m.image, pixel_size=1.0, chunks=64)  # 20x coarser: 2 px tiles
    with pytest.raises(NcmError, match=r"tiles of 2 px.*--tile 32"):
        predict_mosaic(b, tmp_path / "coarse.zarr", tmp_path / "p.zarr")
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "p.zarr.partial").exists()


def test_negative_capacities_are_refused_under_mape_only(tmp_path):
    from ncm_core.data.targets import read_targets

    (tmp_path / "t.csv").write_text("image,Q_1C\na,150\nb,-3\n")
    with pytest.raises(NcmError, match="negative"):
        read_targets(tmp_path / "t.csv")
    assert read_targets(tmp_path / "t.csv", check_mape=False).values[1, 0] == -3


# ------------------------------------------------------------------------------------------------ hidden files


def _apple_double(folder: Path) -> None:
    """macOS AppleDouble copies beside every frame: ``._<name>`` holding the same pixels (the worst case)."""
    for f in sorted(folder.rglob("*.png")):
        shutil.copy(f, f.with_name("._" + f.name))


def test_appledouble_copies_do_not_leak_into_other_splits(tmp_path, sem_folders):
    from ncm_core.data.crops import build_crops

    frames = tmp_path / "frames"
    shutil.copytree(sem_folders, frames)
    _apple_double(frames)
    (frames / "NCM333_pristine" / ".x.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match=r"skipped 10 hidden files"):
        ts = build_crops(frames, tmp_path / "ts", size=32, per_frame=2, val_fraction=0.34, test_fraction=0.34)
    sources = {r.source for r in ts.records}
    assert len(sources) == 9 and not any(Path(s).name.startswith(".") for s in sources)


def test_hidden_files_are_skipped_in_every_listing(tmp_path, sem_folders):
    from ncm_core.data.datasets import scan_class_folders
    from ncm_core.explain.folders import find_images
    from ncm_core.training.regression_data import _crop_table

    frames = tmp_path / "frames"
    shutil.copytree(sem_folders, frames)
    _apple_double(frames)
    (frames / ".cache").mkdir()
    shutil.copy(next(frames.rglob("NCM*.png")), frames / ".cache" / "thumb.png")
    with pytest.warns(UserWarning, match="skipped 9 hidden"):
        assert len(scan_class_folders(frames).files) == 9
    with pytest.warns(UserWarning, match="skipped 10 hidden"):
        assert len(find_images(frames)) == 9  # a hidden folder's images too
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(frames.rglob("NCM*.png"))[:3]:
        shutil.copy(f, flat / f.name)
        shutil.copy(f, flat / ("._" + f.name))
    with pytest.warns(UserWarning, match="skipped 3 hidden"):
        files, sources, _, _ = _crop_table(flat)
    assert len(files) == 3 and not any(s.startswith(".") for s in sources)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no hidden files: no warning
        scan_class_folders(sem_folders)
