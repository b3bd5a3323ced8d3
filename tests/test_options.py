"""Options objects: one home for each default, keywords that win, and what an explicit None means."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ncm_core.errors import NcmError
from ncm_core.options import given, merge_options
from ncm_core.training.config import RegressConfig, TrainConfig

from .test_cli import ncm


def test_keywords_win_and_none_keeps_the_default():
    c = merge_options(TrainConfig, None, {"epochs": 3, "tile_size": None})
    assert c.epochs == 3 and c.tile_size is None and c.batch_size == TrainConfig.batch_size
    base = TrainConfig(epochs=7)
    assert merge_options(TrainConfig, base, {"lr": 0.01}).epochs == 7  # the object's values, then keywords
    assert merge_options(TrainConfig, base, {"epochs": None}).epochs == 7


def test_an_unknown_keyword_names_the_closest_option():
    with pytest.raises(NcmError, match="unknown option 'epoch' for TrainConfig; did you mean 'epochs'"):
        merge_options(TrainConfig, None, {"epoch": 3})


def test_an_explicit_none_means_off_where_the_options_say_so():
    """patience=None has always meant no early stopping, augment=None no augmentation (API callers)."""
    from ncm_core.data.augment import parse_augment

    r = merge_options(RegressConfig, None, {"patience": None, "augment": None})
    assert r.patience == 0 and parse_augment(r.augment, "regress") == ()
    assert merge_options(RegressConfig, None, {}).patience == 20  # not given: the default
    t = merge_options(TrainConfig, None, {"augment": None})
    assert parse_augment(t.augment, "classify") == ()


def test_the_command_line_leaves_out_what_was_not_given():
    assert given(a=1, b=None, c=0, d=False) == {"a": 1, "c": 0, "d": False}


def test_the_regression_summary_puts_the_unit_after_the_value():
    from types import SimpleNamespace

    from ncm_core.cli.training import _kept

    r = SimpleNamespace(validated=True, best_value=2.95, best_epoch=1, history=[0, 0])
    assert _kept(r, "MAPE", ".2f", " %") == "best validation MAPE 2.95 % (epoch 1 of 2)"


def test_an_incomplete_heatmap_exits_3_with_one_line(tiny_bundle, tmp_path):
    """Unreadable blocks in `ncm explain` of a mosaic: the rest is kept, exit 3, as for `ncm predict`."""
    z = zarr.create_array(str(tmp_path / "d.zarr"), shape=(128, 128), chunks=(64, 64), dtype=np.uint8)
    z[:] = np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8)
    (tmp_path / "d.zarr" / "c" / "1" / "1").write_bytes(b"\x00garbage")
    r = ncm("explain", tiny_bundle, tmp_path / "d.zarr", tmp_path / "h.zarr", "--method", "gradcam", "-q")
    assert r.returncode == 3, r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("ncm: incomplete:") and "d.zarr" in line, line
    assert "Traceback" not in r.stderr and not (tmp_path / "h.zarr").exists()


def test_predict_takes_the_pixel_size_the_file_lacks(tiny_bundle, tmp_path):
    """`ncm predict --pixel-size`: the option reaches the run, its attributes and its NGFF transform."""
    import tifffile

    from ncm_core.inference.predict import open_prediction

    tifffile.imwrite(tmp_path / "m.tif", np.random.default_rng(1).integers(0, 255, (64, 96), dtype=np.uint8))
    r = ncm("predict", tiny_bundle, tmp_path / "m.tif", tmp_path / "p.zarr", "--pixel-size", "0.25", "-q")
    assert r.returncode == 0, r.stderr
    pred = open_prediction(tmp_path / "p.zarr")
    assert pred.attrs["pixel_size"] == 0.25 and pred.attrs["options"]["pixel_size"] == 0.25
    r = ncm("predict", tiny_bundle, tmp_path / "m.tif", tmp_path / "q.zarr", "--pixel-size", "-1", "-q")
    assert r.returncode == 2 and "pixel size" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "q.zarr").exists()
    assert not (tmp_path / "q.zarr.partial").exists()
