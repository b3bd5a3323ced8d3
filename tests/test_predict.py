"""Mosaic prediction: tiling does not change the result, outputs overlay the mosaic, nothing half-written."""

import json
import threading

import numpy as np
import pytest
import zarr

from ncm_core import synth
from ncm_core.bundle import load_bundle
from ncm_core.errors import Cancelled, NcmError
from ncm_core.mosaic import open_mosaic, write_ome_zarr
from ncm_core.predict import classify_tiles, open_prediction, predict_mosaic
from ncm_core.tiling import TileGrid

from .conftest import decisive


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    m = synth.sem_mosaic((230, 310), seed=5)  # not a multiple of the 32 px tile
    return write_ome_zarr(tmp_path_factory.mktemp("m") / "mosaic.ome.zarr", m.image, pixel_size=0.05, chunks=64)


def test_blocks_give_the_same_classes_as_tile_by_tile(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", batch_size=7, max_block_pixels=64 * 64 * 3)
    g = pred.grid
    assert g.shape == (8, 10) and g.tile == 32  # 230/32 -> 8 rows with the last one padded
    img = np.asarray(open_mosaic(mosaic_path).data)
    padded = np.pad(img, ((0, 8 * 32 - 230), (0, 10 * 32 - 310)), mode="reflect")
    tiles = np.stack([padded[y0:y1, x0:x1] for i in range(8) for j in range(10)
                      for y0, y1, x0, x1 in [g.cell_rect(i, j)]])
    expected = classify_tiles(load_bundle(tiny_bundle), tiles).reshape(8, 10, 3)
    probs = np.moveaxis(np.asarray(pred.probabilities), 0, -1)
    assert np.allclose(probs, expected, atol=1e-4)
    ok = decisive(expected)
    assert ok.mean() > 0.9 and np.array_equal(pred.classes[ok], expected.argmax(-1)[ok])
    assert expected.std(axis=(0, 1)).max() > 0.05  # the model really tells tiles apart
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_outputs_carry_the_ngff_transform_that_overlays_the_mosaic(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    scale, trans = TileGrid((230, 310), 32).world_transform(0.05)
    assert pred.world_transform() == (scale, trans)
    meta = json.loads((tmp_path / "p.zarr" / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    t = meta["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert t[0]["scale"] == pytest.approx(list(scale)) and t[1]["translation"] == pytest.approx(list(trans))
    names = {p["label-value"]: p["class"] for p in meta["image-label"]["properties"]}
    assert names == {0: "not predicted", 1: "NCM333_pristine", 2: "NCM811_cycled100", 3: "NCM811_pristine"}
    assert pred.attrs["complete"] and pred.attrs["n_predicted"] == 80


def test_excluded_band_is_marked_not_predicted(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", exclude_rows=(-40, None))
    lab = np.asarray(pred.labels)
    # rows 190..229 are excluded: tile rows 5 (160..191), 6 and 7 touch them
    assert (lab[5:] == 0).all() and (lab[:5] > 0).all()
    assert np.isnan(np.asarray(pred.probabilities)[:, 5:]).all()
    assert pred.attrs["n_masked"] == 30


def test_cancel_leaves_no_output(tiny_bundle, mosaic_path, tmp_path):
    stop = threading.Event()
    seen = []

    def progress(done, total, msg):
        seen.append(done)
        if done >= 1:
            stop.set()

    with pytest.raises(Cancelled):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", progress=progress, cancel=stop,
                       max_block_pixels=64 * 64)
    assert not (tmp_path / "p.zarr").exists() and not (tmp_path / "p.zarr.partial").exists()
    with pytest.raises(NcmError, match="not found"):
        open_prediction(tmp_path / "p.zarr")


def test_existing_output_is_kept_unless_overwrite(tiny_bundle, mosaic_path, tmp_path):
    predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    with pytest.raises(NcmError, match="output exists"):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", overwrite=True)


def test_tile_size_follows_the_pixel_size(tiny_bundle, tmp_path):
    """A bundle trained at 0.05 um/px on a mosaic at 0.1 um/px uses 16 px tiles (the same area)."""
    b = load_bundle(tiny_bundle)
    b.config.pixel_size = 0.05
    img = np.zeros((64, 64), np.uint8)
    pred = predict_mosaic(b, open_mosaic(img, pixel_size=0.1), tmp_path / "p.zarr")
    assert pred.grid.tile == 16 and pred.grid.shape == (4, 4)


@pytest.mark.parametrize("kw, words", [
    (dict(mosaic=np.zeros((20, 20), np.uint8)), "smaller than one tile"),
    (dict(tile=0), "tile size"),
    (dict(batch_size=0), "batch size"),
])
def test_bad_parameters(tiny_bundle, mosaic_path, tmp_path, kw, words):
    mosaic = kw.pop("mosaic", mosaic_path)
    with pytest.raises(NcmError, match=words):
        predict_mosaic(tiny_bundle, mosaic, tmp_path / "p.zarr", **kw)
    assert not (tmp_path / "p.zarr").exists()


def test_damaged_chunk_is_one_line_naming_the_file(tiny_bundle, tmp_path):
    z = zarr.create_array(str(tmp_path / "d.zarr"), shape=(64, 64), chunks=(32, 32), dtype=np.uint8)
    z[:] = 7
    chunk = sorted(p for p in (tmp_path / "d.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")[-1]
    chunk.write_bytes(b"\x00garbage")
    with pytest.raises(NcmError) as e:
        predict_mosaic(tiny_bundle, tmp_path / "d.zarr", tmp_path / "p.zarr")
    assert "d.zarr" in str(e.value) and "cannot read pixels" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "p.zarr").exists()


def test_foreground_detection_skips_empty_tiles(tiny_bundle, tmp_path):
    """The right half of this mosaic is empty slide: with foreground=True its tiles are not predicted."""
    img = synth.sem_mosaic((128, 256), seed=3).image
    img[:, 128:] = 5
    pred = predict_mosaic(tiny_bundle, img, tmp_path / "p.zarr", foreground=True)
    lab = np.asarray(pred.labels)
    assert (lab[:, 4:] == 0).all() and (lab[:, :4] > 0).mean() > 0.7
    assert pred.attrs["n_masked"] >= 16
