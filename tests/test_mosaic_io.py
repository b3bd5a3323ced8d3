"""open_mosaic: every source kind opens lazily with axes and pixel size; bad input gives one clear line."""

import json

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from ncm_core.errors import NcmError
from ncm_core.io.mosaic import open_mosaic, write_ome_zarr


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_numpy_and_dask_arrays(dtype, rng):
    a = (rng.random((50, 70)) * 200).astype(dtype)
    m = open_mosaic(a)
    assert m.axes == "yx" and m.shape == (50, 70) and m.dtype == dtype
    assert isinstance(m.data, da.Array)
    rgb = open_mosaic(da.from_array(np.zeros((3, 40, 30), dtype)))  # channels first -> last
    assert rgb.axes == "yxc" and rgb.shape == (40, 30) and rgb.channels == 3


def test_zarr_array_and_group(tmp_path, rng):
    a = (rng.random((100, 120)) * 255).astype(np.uint8)
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=a.shape, chunks=(32, 32), dtype=a.dtype)
    z[:] = a
    m = open_mosaic(tmp_path / "a.zarr")
    assert m.data.chunksize == (32, 32)
    assert np.array_equal(m.data.compute(), a)
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("img", shape=a.shape, dtype=a.dtype)[:] = a
    assert np.array_equal(open_mosaic(tmp_path / "g.zarr").data.compute(), a)


def test_ome_zarr_round_trip_multiscale_rgb(tmp_path, rng):
    a = (rng.random((130, 150, 3)) * 255).astype(np.uint8)
    lab = (rng.random((130, 150)) * 4).astype(np.uint8)
    p = write_ome_zarr(
        tmp_path / "m.ome.zarr", a, pixel_size=0.25, translate=(2.0, 3.0), chunks=64, levels=3, labels={"truth": lab}
    )
    m = open_mosaic(p)
    assert m.axes == "yxc" and m.shape == (130, 150) and m.pixel_size == 0.25
    assert m.translate == (2.0, 3.0) and len(m.levels) == 3
    assert m.levels[1].shape[:2] == (65, 75)
    assert np.array_equal(m.data.compute(), a)
    attrs = json.loads((p / "zarr.json").read_text())["attributes"]["ome"]
    t = attrs["multiscales"][0]["datasets"][1]["coordinateTransformations"]
    assert t[0]["scale"] == [1.0, 0.5, 0.5] and t[1]["translation"] == [0.0, 2.125, 3.125]
    assert np.array_equal(open_mosaic(p / "labels" / "truth").data.compute(), lab)


def test_tiff_is_read_lazily_tile_by_tile(tmp_path, rng):
    a = (rng.random((600, 700)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "big.tif", a, tile=(128, 128), resolution=(1 / 0.5, 1 / 0.5), resolutionunit=5)
    m = open_mosaic(tmp_path / "big.tif")
    assert m.data.chunksize == (128, 128)  # not one whole-file chunk
    assert m.pixel_size == pytest.approx(0.5)
    assert np.array_equal(m.data[100:300, 250:400].compute(), a[100:300, 250:400])


def test_ome_tiff_channels_and_physical_size(tmp_path, rng):
    a = (rng.random((3, 64, 80)) * 255).astype(np.uint8)
    tifffile.imwrite(
        tmp_path / "x.ome.tif", a, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.123, "PhysicalSizeY": 0.123}
    )
    m = open_mosaic(tmp_path / "x.ome.tif")
    assert m.axes == "yxc" and m.shape == (64, 80) and m.pixel_size == pytest.approx(0.123)
    assert np.array_equal(m.data.compute(), np.moveaxis(a, 0, -1))


def test_png_and_jpeg(tmp_path, rng):
    g = (rng.random((40, 50)) * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.png")
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "c.jpg")
    assert np.array_equal(open_mosaic(tmp_path / "g.png").data.compute(), g)
    c = open_mosaic(tmp_path / "c.jpg")
    assert c.axes == "yxc" and c.shape == (40, 50)


def test_palette_and_grey_alpha_pngs_read_as_numpy_decodes_them(tmp_path):
    """A palette PNG holds indices (no band axis); grey + alpha holds two bands: the lazy shape says so."""
    idx = (np.arange(40 * 50).reshape(40, 50) % 3).astype(np.uint8)
    pal = Image.fromarray(idx).convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    pal.save(tmp_path / "p.png")
    Image.fromarray(np.stack([idx * 80, idx * 0 + 255], -1), "LA").save(tmp_path / "la.png")
    p = open_mosaic(tmp_path / "p.png")
    assert p.data.shape == (40, 50) and np.array_equal(p.data.compute(), idx)
    la = open_mosaic(tmp_path / "la.png")
    assert la.data.shape == (40, 50, 2) and la.data.compute().shape == (40, 50, 2)


def _one_line(exc_info, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_bad_inputs_give_one_clear_line(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(NcmError) as e:
        open_mosaic(tmp_path / "notes.txt")
    _one_line(e, "notes.txt", "not an image")

    bad = tmp_path / "broken.zarr"
    bad.mkdir()
    (bad / "zarr.json").write_text("{not json")
    with pytest.raises(NcmError) as e:
        open_mosaic(bad)
    _one_line(e, "broken.zarr", "zarr")

    with pytest.raises(NcmError) as e:
        open_mosaic(np.zeros((0, 10)))
    _one_line(e, "empty")

    with pytest.raises(NcmError) as e:
        open_mosaic(tmp_path / "missing.tif")
    _one_line(e, "missing.tif", "no such file")

    (tmp_path / "fake.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(NcmError) as e:
        open_mosaic(tmp_path / "fake.tif")
    _one_line(e, "fake.tif", "TIFF")

    with pytest.raises(NcmError) as e:
        open_mosaic(np.zeros((5, 20, 20, 20)))
    _one_line(e, "2-D")
