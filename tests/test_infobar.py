"""Automatic detection of the SEM information bar, and ``--exclude-rows auto`` in crops and training."""

import json

import numpy as np
import pytest

from ncm_core.data import synth
from ncm_core.data.infobar import check_band, detect_info_bar, parse_band, resolve_band, widest
from ncm_core.data.synth_sections import cross_section
from ncm_core.errors import NcmError

SHAPE = (224, 256)


@pytest.mark.parametrize("name", synth.CLASS_NAMES)
def test_bar_with_text_is_found_to_the_row(name):
    comp, state = name.split("_")
    for seed, rows in ((0, 32), (1, 20), (2, 48), (3, 12)):
        img = synth.sem_frame(comp, state, SHAPE, info_bar=rows, seed=seed)
        assert detect_info_bar(img) == (-rows, None), (name, seed, rows)
        top = img[::-1]  # the same bar at the top
        assert detect_info_bar(top) == (None, rows)


@pytest.mark.parametrize("name", synth.CLASS_NAMES)
def test_frames_without_a_bar_never_give_one(name):
    comp, state = name.split("_")
    for seed in range(6):
        img = synth.sem_frame(comp, state, SHAPE, info_bar=None, seed=seed)
        assert detect_info_bar(img) is None, (name, seed)
        assert detect_info_bar(img[::-1]) is None, (name, seed)


def test_light_microscopy_and_flat_images_never_give_a_bar():
    rng = np.random.default_rng(0)
    for seed in range(4):
        s = cross_section(0.2 + 0.1 * seed, (300, 500), thickness_px=150, seed=seed)
        img = np.asarray(s.image)
        for y, x in rng.integers(0, [img.shape[0] - 200, img.shape[1] - 200], (6, 2)):
            crop = img[y : y + 200, x : x + 200]
            assert detect_info_bar(crop) is None
            assert detect_info_bar(crop.mean(-1) if crop.ndim == 3 else crop) is None
    assert detect_info_bar(np.zeros((128, 128), np.uint8)) is None
    assert detect_info_bar(rng.integers(0, 255, (128, 128)).astype(np.uint8)) is None
    # a flat band at the bottom without text is not a bar
    img = synth.sem_frame("NCM523", "formation", SHAPE, info_bar=None, seed=0)
    img[-30:] = 12
    assert detect_info_bar(img) is None


def test_band_settings():
    assert parse_band("auto") == "auto" and parse_band("") == "none" and parse_band("none") == "none"
    assert parse_band("-32:") == (-32, None)
    with pytest.raises(NcmError, match="'sometimes'"):
        check_band("sometimes")
    img = synth.sem_frame("NCM333", "pristine", SHAPE, info_bar=None, seed=0)
    assert resolve_band("detect", img) is None and resolve_band("none", img) is None
    with pytest.raises(NcmError, match=r"^frame.png: no information bar found"):
        resolve_band("auto", img, "frame.png")
    assert widest([None, (-20, None), (-32, None)]) == (-32, None) and widest([None]) is None


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    root = tmp_path_factory.mktemp("ib") / "frames"
    return synth.write_sem_dataset(root, 3, (160, 160), info_bar=24, classes=synth.CLASS_NAMES[:2], seed=5)


def test_crops_skip_the_bar_by_default_and_say_so(frames, tmp_path, capsys):
    from ncm_core.cli import main

    assert main(["crops", str(frames), str(tmp_path / "t"), "--size", "64", "--per-frame", "6", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("ncm: note: information bar detected and left out in 6 of 6 images") == 1
    assert "rows -24:" in err
    meta = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert meta["params"]["exclude_rows"] == [-24, None] and meta["params"]["exclude_rows_setting"] == "detect"
    rects = [json.loads(json.dumps(r)) for r in meta["params"]["info_bars"].values()]
    assert rects == ["-24:"] * 6
    from ncm_core.data.tilesets import open_tile_set

    for r in open_tile_set(tmp_path / "t").records:
        assert r.rect[2] <= 160 - 24  # no crop touches the bar
    # an explicit band overrides; none disables
    assert main(["crops", str(frames), str(tmp_path / "n"), "--size", "64", "--per-frame", "6", "--quiet",
                 "--exclude-rows=none"]) == 0  # fmt: skip
    assert "information bar" not in capsys.readouterr().err
    meta = json.loads((tmp_path / "n" / "manifest.json").read_text())
    assert meta["params"]["exclude_rows"] is None and meta["params"]["info_bars"] == {}


def test_forced_auto_on_a_frame_without_a_bar_is_one_line(frames, tmp_path, capsys):
    import shutil

    from PIL import Image

    from ncm_core.cli import main

    data = tmp_path / "data"
    shutil.copytree(frames, data)
    bare = data / synth.CLASS_NAMES[0] / "bare.png"
    Image.fromarray(synth.sem_frame("NCM333", "pristine", (160, 160), info_bar=None, seed=9)).save(bare)
    args = ["crops", str(data), str(tmp_path / "t"), "--size", "64", "--per-frame", "4", "--quiet"]
    assert main([*args, "--exclude-rows", "auto"]) == 3  # the frame is left out, recorded as failed
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "no information bar found" in ln]
    assert len(lines) == 1 and "bare.png" in lines[0]
    assert "bare.png" in (tmp_path / "t" / "failures.csv").read_text()
    # the default (detect) uses the frame, without a band
    assert main([*args[:2], str(tmp_path / "d"), *args[3:]]) == 0
    assert "no information bar" not in capsys.readouterr().err


def test_training_leaves_out_the_bar_and_the_bundle_records_it(sem_folders, tmp_path, capsys):
    from ncm_core.cli import main
    from ncm_core.models.bundle import config_bundle

    args = ["train", str(sem_folders), str(tmp_path / "m"), "--arch", "resnet10t", "--tile", "48", "--epochs", "1"]
    assert main([*args, "--crops", "2", "--batch-size", "8", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("ncm: note: information bar detected and left out in 9 of 9 images") == 1
    t = config_bundle(tmp_path / "m").config.training
    assert t["exclude_rows"] == [-16, None] and t["exclude_rows_setting"] == "detect" and len(t["info_bars"]) == 9
    # an explicit band overrides detection; none disables it
    from ncm_core.training.classify import train

    r = train(sem_folders, tmp_path / "n", architecture="resnet10t", tile_size=48, epochs=1, exclude_rows="none")
    t = config_bundle(r.bundle).config.training
    assert t["exclude_rows"] is None and t["info_bars"] == {}


def test_predict_auto_finds_the_bar_once_and_refuses_a_mosaic_without(sem_folders, tmp_path, capsys):
    from PIL import Image

    from ncm_core.cli import main
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.training.classify import train

    r = train(sem_folders, tmp_path / "m", architecture="resnet10t", tile_size=48, epochs=1, crops_per_image=2)
    frame = tmp_path / "frame.png"
    Image.fromarray(synth.sem_frame("NCM811", "pristine", (240, 192), info_bar=24, seed=3)).save(frame)
    assert main(["predict", str(r.bundle), str(frame), str(tmp_path / "p.zarr"), "--exclude-rows", "auto", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("ncm: note:") == 1 and "frame.png: information bar detected, rows -24: left out" in err
    p = predict_mosaic(r.bundle, frame, tmp_path / "q.zarr", exclude_rows="auto")
    assert p.attrs["exclude_rows"] == [-24, None] and p.attrs["n_masked"] == 4  # the bottom row of tiles
    bare = tmp_path / "bare.png"
    Image.fromarray(synth.sem_frame("NCM811", "pristine", (240, 192), info_bar=None, seed=3)).save(bare)
    assert main(["predict", str(r.bundle), str(bare), str(tmp_path / "b.zarr"), "--exclude-rows", "auto", "-q"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ncm: error: {bare}: no information bar found")
    assert not (tmp_path / "b.zarr").exists()
    # by default a bar is left out where one is found, and a frame without one is predicted whole
    assert predict_mosaic(r.bundle, frame, tmp_path / "d.zarr").attrs["exclude_rows"] == [-24, None]
    assert predict_mosaic(r.bundle, bare, tmp_path / "e.zarr").attrs["exclude_rows"] is None
    assert predict_mosaic(r.bundle, frame, tmp_path / "f.zarr", exclude_rows="none").attrs["exclude_rows"] is None


def test_train_with_forced_auto_names_the_frame_without_a_bar(sem_folders, tmp_path):
    import shutil

    from PIL import Image

    from ncm_core.training.classify import train

    data = tmp_path / "data"
    shutil.copytree(sem_folders, data)
    bare = data / "NCM811_pristine" / "bare.png"
    Image.fromarray(synth.sem_frame("NCM811", "pristine", (144, 128), info_bar=None, seed=4)).save(bare)
    with pytest.raises(NcmError, match=rf"^{bare}: no information bar found \(--exclude-rows auto\)"):
        train(data, tmp_path / "m", architecture="resnet10t", tile_size=48, epochs=1, exclude_rows="auto")
    assert not (tmp_path / "m").exists()


def test_jpeg_frames_bars_are_found_and_bare_frames_give_none():
    """JPEG rings around the bar's text (real tabletop-SEM frames are JPEG): the bar is still found in
    nearly every frame, at each session's quality and at quality 30, and never in a frame without one."""
    import io

    from PIL import Image

    from ncm_core.data.synth_sessions import jpeg, session_frame

    def decoded(img, q):
        return np.asarray(Image.open(io.BytesIO(jpeg(img, q))))

    found, total = 0, 0
    for name in synth.CLASS_NAMES:
        img, look = session_frame(name, 1, 0, (256, 256))
        for q in (look.jpeg_quality, 30):
            band = detect_info_bar(decoded(img, q))
            # never a band that misses bar rows; a block of micrograph rows clipped to black may join it
            assert band is None or (-40 <= band[0] <= -32 and band[1] is None), (name, q, band)
            found += band is not None
            total += 1
        bare, _ = session_frame(name, 1, 1, (256, 256), info_bar=0)
        assert detect_info_bar(decoded(bare, 35)) is None, name
    assert found / total >= 0.9, f"{found} of {total}"


def test_a_black_chunk_at_the_edge_is_not_a_bar():
    """A chunk read as zeros at the bottom edge (lost from a zarr store) is flat, with the micrograph's
    bright particles beside it, but it has no plain margin rows across the frame: no bar."""
    img = synth.sem_mosaic((128, 192), seed=7).image.copy()
    img[96:128, 160:192] = 0
    assert detect_info_bar(img) is None
