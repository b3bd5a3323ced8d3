"""Batches finish what can be finished: one failing input is skipped and recorded, the rest is written and
equals a run without it; ``--strict`` stops at the first failure with nothing written (issue 15, item 4).
See docs/reliability.md."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from ncm_core.batch import FAILURES_FILE, Batch, BatchFailed, BatchWarning, Failure, read_failures
from ncm_core.errors import NcmError
from tests.test_cli import ncm


def _truncate(src: Path, dst: Path) -> Path:
    """A copy of ``src`` cut to half its bytes: the header reads, the pixels do not."""
    b = src.read_bytes()
    dst.write_bytes(b[: len(b) // 2])
    return dst


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _incomplete(r, n: int, m: int, where: Path, bad: list[str]) -> None:
    """Exit 3; one warning line per failed input naming it; the last line counts and names the failures file;
    no traceback; ``failures.csv`` names the bad inputs."""
    assert r.returncode == 3, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == f"ncm: error: {n} of {m} inputs failed (see {where / FAILURES_FILE})", r.stderr
    warned = [ln for ln in lines if ln.startswith("ncm: warning: ")]
    for b in bad:
        assert any(b in ln for ln in warned), r.stderr
    assert sorted(Path(f.input).name for f in read_failures(where)) == sorted(bad)
    assert all(f.reason and "\n" not in f.reason for f in read_failures(where))


def _refused(r, words: list[str], *gone: Path) -> None:
    """Exit 2, one error line (the last) holding ``words``, no traceback, nothing at ``gone`` (nor .partial)."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert [ln for ln in lines if "error:" in ln] == [lines[-1]], r.stderr
    for w in words:
        assert w in lines[-1], r.stderr
    for g in gone:
        assert not g.exists() and not g.with_name(g.name + ".partial").exists()


# ------------------------------------------------------------------------------------------- the mechanism


def test_batch_records_ncm_errors_and_lets_bugs_through(tmp_path):
    b = Batch(3)
    with b.attempt(tmp_path / "a.png") as a:
        raise NcmError("not a readable image", tmp_path / "a.png")
    assert a.failed and b.failures == [Failure(str(tmp_path / "a.png"), "not a readable image")]
    with b.attempt("b.png") as a:
        raise NcmError("bad mask", "masks/b.png")  # another file's error keeps its path
    assert b.failures[-1].reason == "masks/b.png: bad mask"
    with pytest.raises(ZeroDivisionError), b.attempt("c.png"):
        raise ZeroDivisionError  # a bug is not an input's failure
    b.check()  # two of three failed: the batch goes on
    with b.attempt("c.png"):
        raise NcmError("empty")
    with pytest.raises(BatchFailed, match="all 3 inputs failed.*the first: .*a.png: not a readable image"):
        b.check()
    with pytest.raises(NcmError, match="bad"), Batch(3, strict=True).attempt("x"):
        raise NcmError("bad")
    with pytest.raises(NcmError, match="bad"), Batch(1).attempt("x"):  # one input: as before batches
        raise NcmError("bad")
    assert b.write(tmp_path) == tmp_path / FAILURES_FILE and read_failures(tmp_path)[0].reason == "not a readable image"
    assert Batch(2).write(tmp_path / "none") is None and read_failures(tmp_path / "none") == []


# ------------------------------------------------------------------------------------------------ sections


@pytest.fixture(scope="module")
def sections(tmp_path_factory) -> Path:
    """Two good cross-sections, one whose active layer is narrower than a crop, one truncated TIFF."""
    import tifffile

    from ncm_core.data import synth

    w = tmp_path_factory.mktemp("sections")
    for name, width, seed in (("good1", 500, 0), ("narrow", 300, 1), ("good2", 520, 2)):
        tifffile.imwrite(w / f"{name}.tif", synth.cross_section(0.3, (200, width), thickness_px=100, seed=seed).image)
    _truncate(w / "good1.tif", w / "trunc.tif")
    return w


def test_sections_skip_a_failing_mosaic(sections, tmp_path):
    w = sections
    crop = ["--crop", "48", "384", "-q"]
    r = ncm(
        "sections", w / "good1.tif", w / "narrow.tif", w / "trunc.tif", w / "good2.tif", "--out", tmp_path / "o", *crop
    )
    _incomplete(r, 2, 4, tmp_path / "o", ["narrow.tif", "trunc.tif"])
    reasons = {Path(f.input).name: f.reason for f in read_failures(tmp_path / "o")}
    assert "narrower than a crop" in reasons["narrow.tif"] and "cannot read pixels" in reasons["trunc.tif"]
    assert "crops: " in r.stdout
    assert ncm("sections", w / "good1.tif", w / "good2.tif", "--out", tmp_path / "alone", *crop).returncode == 0
    got, alone = _files(tmp_path / "o"), _files(tmp_path / "alone")
    info = json.loads(got.pop("sections.json"))
    assert [f["input"] for f in info.pop("failures")] == [str(w / "narrow.tif"), str(w / "trunc.tif")]
    assert info == json.loads(alone.pop("sections.json"))
    assert got.pop(FAILURES_FILE) and got == alone  # the same crops and manifest as without the bad ones

    r = ncm("sections", w / "good1.tif", w / "narrow.tif", "--out", tmp_path / "s", "--strict", *crop)
    _refused(r, ["narrow.tif", "narrower than a crop"], tmp_path / "s")
    r = ncm("sections", w / "narrow.tif", w / "trunc.tif", "--out", tmp_path / "none", *crop)
    _refused(r, ["all 2 mosaics failed", "narrow.tif"], tmp_path / "none")


def test_sections_api_returns_the_failures(sections, tmp_path):
    from ncm_core.data.sections import extract_sections

    w = sections
    with pytest.warns(BatchWarning, match="1 of 2 mosaics failed"):
        out = extract_sections([w / "good1.tif", w / "trunc.tif"], tmp_path / "o", crop=(48, 384))
    assert out == tmp_path / "o" and [Path(f.input).name for f in out.failures] == ["trunc.tif"]
    with pytest.raises(NcmError, match="trunc.tif: cannot read pixels"):
        extract_sections([w / "good1.tif", w / "trunc.tif"], tmp_path / "s", crop=(48, 384), strict=True)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extract_sections([w / "good1.tif"], tmp_path / "g", crop=(48, 384)).failures == ()


# --------------------------------------------------------------------------------------------------- crops


@pytest.fixture(scope="module")
def frames(sem_folders, tmp_path_factory) -> Path:
    """The sample class folders plus a truncated frame and a frame too small for a crop."""
    from PIL import Image

    w = tmp_path_factory.mktemp("frames") / "frames"
    shutil.copytree(sem_folders, w)
    first = sorted((w / "NCM333_pristine").glob("*.png"))[0]
    _truncate(first, w / "NCM333_pristine" / "zz_truncated.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(w / "NCM811_pristine" / "zz_small.png")
    return w


def test_crops_skip_a_failing_frame(frames, sem_folders, tmp_path):
    opts = ["--size", "32", "--per-frame", "2", "--val-fraction", "0.34", "--test-fraction", "0.34", "-q"]
    r = ncm("crops", frames, tmp_path / "ts", *opts)
    _incomplete(r, 2, 11, tmp_path / "ts", ["zz_truncated.png", "zz_small.png"])
    reasons = {Path(f.input).name: f.reason for f in read_failures(tmp_path / "ts")}
    assert "Truncated" in reasons["zz_truncated.png"] and "larger than the frame" in reasons["zz_small.png"]
    assert ncm("crops", sem_folders, tmp_path / "alone", *opts).returncode == 0
    got, alone = _files(tmp_path / "ts"), _files(tmp_path / "alone")
    meta, meta_alone = json.loads(got.pop("manifest.json")), json.loads(alone.pop("manifest.json"))
    assert len(meta["params"].pop("failures")) == 2
    meta["params"].pop("data"), meta_alone["params"].pop("data")
    assert meta == meta_alone  # the same splits as without the bad frames
    assert got.pop(FAILURES_FILE) and got == alone  # the same crops

    r = ncm("crops", frames, tmp_path / "s", "--strict", *opts)
    _refused(r, ["zz_truncated.png", "Truncated"], tmp_path / "s")


def test_crops_api_returns_the_failures(frames, tmp_path):
    from ncm_core.data.crops import build_crops

    with pytest.warns(BatchWarning, match="2 of 11 frames failed"):
        ts = build_crops(frames, tmp_path / "ts", size=32, per_frame=2, val_fraction=0.34, test_fraction=0.34)
    assert sorted(Path(f.input).name for f in ts.failures) == ["zz_small.png", "zz_truncated.png"]
    with pytest.raises(NcmError, match="zz_truncated.png"):
        build_crops(frames, tmp_path / "s", size=32, per_frame=2, val_fraction=0.34, test_fraction=0.34, strict=True)
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    few = tmp_path / "few"  # a class left with too few frames to split: the line says which frame failed
    shutil.copytree(frames, few)
    f = sorted((few / "NCM811_cycled100").glob("*.png"))[0]
    _truncate(sorted(frames.rglob("*.png"))[0], f)
    with pytest.raises(BatchFailed, match=r"has 2 source image.*3 of 11 frames failed, the first"):
        build_crops(few, tmp_path / "f", size=32, per_frame=2, val_fraction=0.34, test_fraction=0.34)
    assert not (tmp_path / "f").exists() and not (tmp_path / "f.partial").exists()


# -------------------------------------------------------------------------------------- evaluate, explain


def test_evaluate_skips_an_unreadable_image(frames, sem_folders, tiny_bundle, tmp_path):
    from ncm_core.evaluation.evaluate import evaluate

    data = tmp_path / "data"
    shutil.copytree(sem_folders, data)
    _truncate(next(iter(sorted(data.rglob("*.png")))), data / "NCM811_pristine" / "zz_truncated.png")
    r = ncm("evaluate", tiny_bundle, data, "--out", tmp_path / "ev", "--device", "cpu", "-q")
    _incomplete(r, 1, 10, tmp_path / "ev", ["zz_truncated.png"])
    assert "image accuracy" in r.stdout and "metrics written" in r.stdout
    assert (
        ncm("evaluate", tiny_bundle, sem_folders, "--out", tmp_path / "alone", "--device", "cpu", "-q").returncode == 0
    )
    for name in ("predictions.csv", "tiles.csv"):
        assert (tmp_path / "ev" / name).read_text() == (tmp_path / "alone" / name).read_text()
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert [Path(f["input"]).name for f in m["failures"]] == ["zz_truncated.png"]
    assert m["images"] == json.loads((tmp_path / "alone" / "metrics.json").read_text())["images"]

    r = ncm("evaluate", tiny_bundle, data, "--out", tmp_path / "s", "--strict", "--device", "cpu", "-q")
    _refused(r, ["zz_truncated.png"], tmp_path / "s")
    with pytest.warns(BatchWarning, match="1 of 10 images failed"):
        m = evaluate(tiny_bundle, data, device="cpu")
    assert [Path(f["input"]).name for f in m["failures"]] == ["zz_truncated.png"]
    assert evaluate(tiny_bundle, sem_folders, out=tmp_path / "ev", device="cpu")["failures"] == []
    assert not (tmp_path / "ev" / FAILURES_FILE).exists()  # the list of the earlier run is gone


def test_explain_skips_an_unreadable_image(tiny_bundle, tmp_path):
    from PIL import Image

    from ncm_core.workflows.explanations import explain_folder

    rng = np.random.default_rng(0)
    good, tiles = tmp_path / "good", tmp_path / "tiles"
    good.mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32), np.uint8)).save(good / f"t{k}.png")
    shutil.copytree(good, tiles)
    _truncate(good / "t0.png", tiles / "t9.png")
    r = ncm("explain", tiny_bundle, tiles, tmp_path / "x", "--device", "cpu", "-q")
    _incomplete(r, 1, 4, tmp_path / "x", ["t9.png"])
    assert "3 image(s)" in r.stdout
    assert ncm("explain", tiny_bundle, good, tmp_path / "alone", "--device", "cpu", "-q").returncode == 0
    got, alone = _files(tmp_path / "x" / "maps"), _files(tmp_path / "alone" / "maps")
    assert got == alone  # the same maps as without the bad image
    rows = _csv(tmp_path / "x" / "explanations.csv")
    assert [Path(r["image"]).name for r in rows] == [
        Path(r["image"]).name for r in _csv(tmp_path / "alone" / "explanations.csv")
    ]

    r = ncm("explain", tiny_bundle, tiles, tmp_path / "s", "--strict", "--device", "cpu", "-q")
    _refused(r, ["t9.png", "not a readable image"], tmp_path / "s")
    with pytest.warns(BatchWarning, match="1 of 4 images failed"):
        e = explain_folder(tiny_bundle, tiles, tmp_path / "api", device="cpu")
    assert e.images == 3 and [Path(f.input).name for f in e.failures] == ["t9.png"]


# ------------------------------------------------------------------------------------ predict, several


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory) -> Path:
    """Two small SEM mosaics (OME-Zarr) and a file that is not an image."""
    from ncm_core.data import synth
    from ncm_core.io.mosaic import write_ome_zarr

    w = tmp_path_factory.mktemp("mosaics")
    for k in (1, 2):
        m = synth.sem_mosaic((96, 128), seed=k)
        write_ome_zarr(w / f"m{k}.zarr", m.image, pixel_size=m.pixel_size, chunks=64)
    (w / "bad.png").write_bytes(b"not an image at all")
    (w / "worse.tif").write_bytes(b"nor this")
    return w


def test_predict_several_mosaics_skips_a_failing_one(mosaics, tiny_bundle, tmp_path):
    from ncm_core.inference.predict import open_prediction

    w = mosaics
    args = ["--device", "cpu", "--backend", "torch", "-q"]
    r = ncm(
        "predict",
        tiny_bundle,
        w / "m1.zarr",
        w / "bad.png",
        w / "m2.zarr",
        tmp_path / "out",
        *args,
        "--summary",
        tmp_path / "s.csv",
    )
    _incomplete(r, 1, 3, tmp_path / "out", ["bad.png"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [FAILURES_FILE, "m1.zarr", "m2.zarr"]
    for k in (1, 2):
        assert ncm("predict", tiny_bundle, w / f"m{k}.zarr", tmp_path / f"alone{k}.zarr", *args).returncode == 0
        a, b = open_prediction(tmp_path / "out" / f"m{k}.zarr"), open_prediction(tmp_path / f"alone{k}.zarr")
        np.testing.assert_array_equal(a.read("labels"), b.read("labels"))
        np.testing.assert_allclose(a.read("probabilities"), b.read("probabilities"), rtol=1e-6, atol=1e-7)
    rows = _csv(tmp_path / "s.csv")
    assert [Path(r["mosaic"]).name for r in rows] == ["m1.zarr", "m2.zarr", "bad.png"]
    assert rows[0]["predicted"] and not rows[0]["failed"] and "not a readable image" in rows[2]["failed"]

    r = ncm("predict", tiny_bundle, w / "m1.zarr", w / "bad.png", tmp_path / "strict", "--strict", *args)
    _refused(r, ["bad.png", "not a readable image"], tmp_path / "strict")
    r = ncm("predict", tiny_bundle, w / "m1.zarr", w / "m2.zarr", tmp_path / "out", *args)
    _refused(r, ["m1.zarr", "output exists"])  # every output is checked before the first run


def test_predict_mosaics_api(mosaics, tiny_bundle, tmp_path):
    from ncm_core.inference.several import predict_mosaics

    w = mosaics
    with pytest.warns(BatchWarning, match="1 of 2 mosaics failed"):
        r = predict_mosaics(tiny_bundle, [w / "bad.png", w / "m1.zarr"], tmp_path / "o", device="cpu")
    assert (
        list(r.predictions) == [str(w / "m1.zarr")]
        and r.predictions[str(w / "m1.zarr")].path == tmp_path / "o" / "m1.zarr"
    )
    assert [Path(f.input).name for f in r.failures] == ["bad.png"] and r.total == 2
    with pytest.raises(BatchFailed, match="all 2 mosaics failed"):
        predict_mosaics(tiny_bundle, [w / "bad.png", w / "worse.tif"], tmp_path / "n")
    with pytest.raises(NcmError, match="both named 'm1'"):
        predict_mosaics(tiny_bundle, [w / "m1.zarr", w / "m1.zarr"], tmp_path / "n")
    assert not (tmp_path / "n").exists()


def test_a_mosaic_with_failed_blocks_is_recorded_and_keeps_its_partial(mosaics, tiny_bundle, tmp_path, monkeypatch):
    """A run that ends with failed blocks (RunIncomplete) is one failure of the batch; the other mosaics run."""
    import ncm_core.inference.predict as predict
    from ncm_core.inference.engine import RunIncomplete
    from ncm_core.inference.several import predict_mosaics

    real = predict.predict_mosaic

    def flaky(bundle, mosaic, out, *a, **kw):
        if Path(mosaic).name == "m1.zarr":
            raise RunIncomplete("1 of 4 blocks could not be read; run again to retry them", out, [{"block": 0}])
        return real(bundle, mosaic, out, *a, **kw)

    monkeypatch.setattr(predict, "predict_mosaic", flaky)
    with pytest.warns(BatchWarning, match="1 of 2 mosaics failed"):
        r = predict_mosaics(tiny_bundle, [mosaics / "m1.zarr", mosaics / "m2.zarr"], tmp_path / "o", device="cpu")
    assert list(r.predictions) == [str(mosaics / "m2.zarr")]
    assert r.failures == (
        Failure(
            str(mosaics / "m1.zarr"),
            f"{tmp_path / 'o' / 'm1.zarr'}: 1 of 4 blocks could not be read; run again to retry them",
        ),
    )
    with pytest.raises(RunIncomplete):  # strict: the first failure as it is (exit 3 on the command line)
        predict_mosaics(tiny_bundle, [mosaics / "m1.zarr", mosaics / "m2.zarr"], tmp_path / "s", strict=True)
