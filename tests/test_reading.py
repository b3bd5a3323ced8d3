"""Pixels are checked as they are read: NaN/inf tiles, unreadable and missing chunks, strict mode and
``allow_incomplete`` (issue 15, item 1 and the second half of item 4)."""

import shutil

import numpy as np
import pytest
import zarr

from ncm_core.data import synth
from ncm_core.errors import NcmError
from ncm_core.evaluation.evaluate import evaluate_prediction
from ncm_core.inference.predict import PredictionIncomplete, predict_mosaic
from ncm_core.inference.reading import MISSING, NONFINITE, REASONS, UNREADABLE

NAN = REASONS[NONFINITE]
KW = dict(max_block_pixels=64 * 64, retry_delay=0.01, backend="torch", memory_format="contiguous")


@pytest.fixture(scope="module")
def image():
    return synth.sem_mosaic((128, 192), seed=7).image  # uint8, 4 x 6 tiles of 32 px


def _zarr(path, img, chunks=32):
    z = zarr.create_array(str(path), shape=img.shape, chunks=(chunks, chunks), dtype=img.dtype)
    z[:] = img
    return path


def _labels(pred):
    return np.asarray(pred.labels)


def test_nan_and_inf_pixels_leave_only_their_tiles_out(tiny_bundle, image, tmp_path):
    img = image.astype(np.float32)
    img[10:20, 40:50] = np.nan  # tile (0, 1)
    img[100, 150] = np.inf  # tile (3, 4)
    with pytest.warns(UserWarning, match="2 tiles not predicted: non-finite"):
        pred = predict_mosaic(tiny_bundle, img, tmp_path / "p.zarr", **KW)
    assert pred.attrs["not_predicted"] == {NAN: 2} and pred.attrs["n_predicted"] == 22
    lab = _labels(pred)
    assert lab[0, 1] == 0 and lab[3, 4] == 0 and (np.delete(lab.ravel(), [1, 22]) > 0).all()
    why = np.asarray(zarr.open_array(str(tmp_path / "p.zarr" / "unpredicted"), mode="r")[...])
    assert why[0, 1] == why[3, 4] == NONFINITE and why.sum() == 2 * NONFINITE
    assert np.isnan(np.asarray(pred.probabilities)[:, 0, 1]).all()
    # every other tile is exactly what the clean image gives (tiles are classified on their own)
    clean = predict_mosaic(tiny_bundle, image.astype(np.float32), tmp_path / "c.zarr", **KW)
    keep = lab > 0
    assert np.array_equal(lab[keep], _labels(clean)[keep])
    assert clean.attrs["not_predicted"] == {}


def test_a_mosaic_full_of_nan_is_not_labelled_class_one(tiny_bundle, image, tmp_path):
    """The case from the issue: 10 % NaN pixels made every tile class 1 with exit status 0."""
    img = image.astype(np.float32)
    img[np.random.default_rng(0).random(img.shape) < 0.1] = np.nan
    with pytest.warns(UserWarning, match="24 tiles not predicted"):
        pred = predict_mosaic(tiny_bundle, img, tmp_path / "p.zarr", **KW)
    assert (_labels(pred) == 0).all() and pred.attrs["n_predicted"] == 0


def test_strict_mode_stops_at_the_first_nan_in_one_line(tiny_bundle, image, tmp_path):
    img = image.astype(np.float32)
    img[100, 150] = np.nan
    with pytest.raises(NcmError, match="non-finite.*strict mode") as e:
        predict_mosaic(tiny_bundle, img, tmp_path / "p.zarr", strict=True, **KW)
    assert "\n" not in str(e.value) and "at pixel y 100, x 150" in str(e.value)
    assert not (tmp_path / "p.zarr").exists()


def test_a_damaged_chunk_loses_only_its_own_tiles(tiny_bundle, image, tmp_path):
    """Blocks of 64 px hold four 32 px chunks: a garbage chunk costs its tile, not its block's four."""
    src = _zarr(tmp_path / "d.zarr", image)
    chunk = src / "c" / "0" / "1"  # pixels y 0:32, x 32:64: tile (0, 1), in block (0, 0)
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage")
    with pytest.raises(PredictionIncomplete) as e:
        predict_mosaic(tiny_bundle, src, tmp_path / "p.zarr", **KW)
    msg = str(e.value)
    assert "\n" not in msg and "1 region in 1 of 6 blocks" in msg and "y 0:32, x 32:64" in msg
    assert "--allow-incomplete" in msg
    status = np.asarray(zarr.open_array(str(tmp_path / "p.zarr.partial" / "blocks"), mode="r")[...])
    assert status[0, 0] == 3 and (np.delete(status.ravel(), 0) == 1).all()  # partly read, retried next time
    labels = np.asarray(zarr.open_array(str(tmp_path / "p.zarr.partial" / "labels" / "0"), mode="r")[...])
    assert labels[0, 1] == 0 and labels[0, 0] > 0 and labels[1, 0] > 0 and labels[1, 1] > 0  # the rest of the block

    # allow_incomplete: a finished prediction with the region marked, usable by evaluate
    with pytest.warns(UserWarning, match="marked as not computed"):
        pred = predict_mosaic(tiny_bundle, src, tmp_path / "p.zarr", allow_incomplete=True, **KW)
    assert pred.attrs["complete"] and pred.attrs["incomplete"]
    assert pred.attrs["not_predicted"] == {REASONS[UNREADABLE]: 1} and pred.attrs["n_predicted"] == 23
    assert pred.attrs["failed_regions"][0]["pixels"] == [0, 32, 32, 64]
    why = np.asarray(zarr.open_array(str(tmp_path / "p.zarr" / "unpredicted"), mode="r")[...])
    assert why[0, 1] == UNREADABLE and why.sum() == UNREADABLE
    truth = np.zeros(image.shape, np.int32)
    m = evaluate_prediction(pred, truth)
    assert m["n_scored"] == 23 and m["not_predicted"] == {REASONS[UNREADABLE]: 1}

    # repaired: a fresh run predicts every tile, and equals a run on the healthy copy
    chunk.write_bytes(good)
    full = predict_mosaic(tiny_bundle, src, tmp_path / "full.zarr", **KW)
    assert (_labels(full) > 0).all() and _labels(full)[0, 1] > 0
    keep = _labels(pred) > 0
    assert np.array_equal(_labels(pred)[keep], _labels(full)[keep])


def test_a_missing_chunk_is_reported_not_read_as_zeros(tiny_bundle, image, tmp_path):
    src = _zarr(tmp_path / "m.zarr", image)
    (src / "c" / "3" / "5").unlink()  # pixels y 96:128, x 160:192: zarr would read zeros
    with pytest.raises(PredictionIncomplete, match="missing from the store.*--missing-chunks fill") as e:
        predict_mosaic(tiny_bundle, src, tmp_path / "p.zarr", **KW)
    assert "y 96:128, x 160:192" in str(e.value) and "\n" not in str(e.value)
    with pytest.warns(UserWarning):
        pred = predict_mosaic(tiny_bundle, src, tmp_path / "p.zarr", allow_incomplete=True, **KW)
    assert pred.attrs["not_predicted"] == {REASONS[MISSING]: 1} and _labels(pred)[3, 5] == 0
    # a store that leaves out empty chunks on purpose: read as the fill value
    filled = predict_mosaic(tiny_bundle, src, tmp_path / "f.zarr", missing_chunks="fill", **KW)
    assert (_labels(filled) > 0).all() and filled.attrs["not_predicted"] == {}


def test_our_own_images_store_every_chunk(tmp_path):
    """write_ome_zarr keeps chunks that hold only zeros, so an absent chunk of it is a lost one."""
    from ncm_core.io.mosaic import open_mosaic, write_ome_zarr

    img = np.zeros((128, 128), np.uint8)
    img[:32] = 9
    write_ome_zarr(tmp_path / "z.ome.zarr", img, chunks=64)
    assert open_mosaic(tmp_path / "z.ome.zarr").absent_chunks() is None
    assert len(list((tmp_path / "z.ome.zarr" / "0" / "c").rglob("*"))) == 2 + 4  # 2 row folders, 4 chunks


def test_explain_leaves_nan_windows_out_instead_of_writing_zeros(tiny_bundle, image, tmp_path):
    from ncm_core.explain.heatmaps import explain_mosaic

    img = image.astype(np.float32)
    img[40:50, 40:50] = np.nan
    with pytest.warns(UserWarning, match="1 tile not explained: non-finite"):
        h = explain_mosaic(tiny_bundle, img, tmp_path / "h.zarr", "gradcam", overlap=0, factor=4, device="cpu")
    hm = np.asarray(h.data)[0]  # (32, 48) at 4 px per value; tile (1, 1) holds the NaN pixels
    assert np.isnan(hm[8:16, 8:16]).all()
    assert np.isfinite(np.delete(hm.reshape(4, 8, 6, 8), 1, axis=0)).all()
    assert h.attrs["not_computed"] == {NAN: 1}


def test_cli_exit_status_3_or_allow_incomplete(tiny_bundle, image, tmp_path, capsys):
    """``main`` in this process (what the ``ncm`` command runs), which saves a PyTorch import per run."""
    from ncm_core.cli import main

    src = _zarr(tmp_path / "d.zarr", image)
    (src / "c" / "0" / "1").write_bytes(b"\x00garbage")
    args = ["predict", str(tiny_bundle), str(src), str(tmp_path / "p.zarr"), "--backend", "torch", "-q"]
    assert main(args) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncm: incomplete:") and "d.zarr" in lines[0]
    assert not (tmp_path / "p.zarr").exists() and (tmp_path / "p.zarr.partial").exists()
    assert main([*args, "--allow-incomplete"]) == 0
    out, err = capsys.readouterr()
    assert "1 not predicted (unreadable chunk)" in out
    assert "ncm: warning:" in err and "marked as not computed" in err
    shutil.rmtree(tmp_path / "p.zarr")
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strict mode" in err[0]
