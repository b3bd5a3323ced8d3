"""Segmentation from painted strokes with the forest engine: it learns a known phase map from about 2 % of
the pixels, its bundle is text (no pickle), windows cut with its halo give the whole image's result, the live
mode predicts exactly what the bundle would, and the command line trains and reports the IoU."""

from __future__ import annotations

import numpy as np
import pytest

from ncm_core.data.synth_phases import paint_strokes, phase_sample, write_phase_dataset
from ncm_core.errors import NcmError
from ncm_core.models.segmenter import load_segmenter
from ncm_core.training.segment import iou_scores, split_validation, train_segmenter


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    """Three 160 x 160 SEM-like images with strokes over about 2 % of their pixels, and truth."""
    return write_phase_dataset(tmp_path_factory.mktemp("seg") / "phases", 3, "sem", (160, 160), fraction=0.02, seed=7)


@pytest.fixture(scope="module")
def forest(phases, tmp_path_factory):
    return train_segmenter(phases, tmp_path_factory.mktemp("b") / "forest", trees=40)


def _dense_miou(seg, sample) -> float:
    pred = seg.predict_image(sample.image.astype(np.float32))
    return iou_scores([pred], [sample.truth.astype(np.int32) + 1], list(sample.classes))["mIoU"]


def test_forest_learns_the_phases_of_unseen_images_from_strokes(forest):
    seg = load_segmenter(forest)
    assert seg.config.classes == ["pore", "active", "binder"] and seg.config.halo == 64
    t = seg.config.training
    assert t["validation"] == "images" and t["val_iou"]["mIoU"] > 0.6  # held-out image's strokes
    assert 0.01 < t["labelled_fraction"] < 0.03
    # dense truth of images never seen: mean IoU over pore, active and binder of at least 0.6
    scores = [_dense_miou(seg, phase_sample("sem", (160, 160), seed=70 + i)) for i in range(2)]
    assert np.mean(scores) >= 0.6, scores


def test_bundle_is_text_and_reloads_to_the_same_predictions(forest):
    assert sorted(p.name for p in forest.iterdir()) == ["config.json", "forest.txt"]
    assert (forest / "forest.txt").read_text().startswith("tree")  # LightGBM's text model, not a pickle
    a, b = load_segmenter(forest), load_segmenter(forest)
    x = a.config.normalize(phase_sample("sem", (96, 96), seed=1).image)[None, None]
    assert np.array_equal(a.predict_proba(x), b.predict_proba(x))
    assert a.predict_proba(x).shape == (1, 3, 96, 96)


def test_a_window_with_the_halo_gives_the_whole_image_result(forest):
    seg = load_segmenter(forest)
    s = phase_sample("sem", (200, 230), seed=3)
    x = seg.config.normalize(s.image)[None]
    whole = seg.predict_proba(x[None])[0]
    h = seg.config.halo
    y0, y1, x0, x1 = 80, 120, 100, 150  # an inner block, its window reaching past the image on two sides
    win = x[:, max(y0 - h, 0) : y1 + h, max(x0 - h, 0) : x1 + h]
    part = seg.predict_proba(win[None])[0][:, y0 - max(y0 - h, 0) :, x0 - max(x0 - h, 0) :][:, : y1 - y0, : x1 - x0]
    assert np.array_equal(part, whole[:, y0:y1, x0:x1])


def test_live_mode_predicts_what_its_bundle_predicts(tmp_path):
    from ncm_core.training.live import LiveSegmenter

    s = phase_sample("sem", (150, 170), seed=9)
    live = LiveSegmenter(s.image, s.classes, tile=64)
    strokes = paint_strokes(s.truth, 3, fraction=0.03, seed=9)
    assert not live.update(np.where(strokes == 1, 1, 0))  # one class painted: nothing to learn yet
    assert live.update(strokes)
    booster = live.booster
    import dask.array as da

    assert live.update(da.from_array(strokes, chunks=50)) and live.booster is booster  # same strokes, lazily: kept
    view = live.predict_view(10, 140, 5, 160)
    seg = live.segmenter()
    whole = seg.predict_image(s.image.astype(np.float32)) + 1
    assert np.array_equal(view, whole[10:140, 5:160])  # tiles with the halo = the whole image
    preview = live.predict_view(10, 140, 5, 160, stride=2)
    assert preview.shape == view.shape and np.array_equal(preview[::2, 1::2], view[::2, 1::2])
    assert (view == s.truth[10:140, 5:160] + 1).mean() > 0.7  # learnt from 3 % strokes (chance: about 0.4)
    saved = load_segmenter(seg.save(tmp_path / "live"))
    assert np.array_equal(saved.predict_image(s.image.astype(np.float32)) + 1, whole)


def test_a_single_image_validates_on_held_out_strokes(phases):
    from ncm_core.data.label_images import load_label_set

    one = load_label_set(phases)
    one.images, one.labels, one.names = one.images[:1], one.labels[:1], one.names[:1]
    split = split_validation(one, 0.25)
    assert split.how == "strokes"
    (_, tr), (_, va) = split.train[0], split.val[0]
    assert va.any() and not ((tr > 0) & (va > 0)).any()
    assert ((tr > 0) | (va > 0)).sum() == (one.labels[0] > 0).sum()


def test_command_line_trains_and_reports_iou(phases, tmp_path, capsys):
    from ncm_core.cli import main

    rc = main(["train", "--task", "segment", str(phases), str(tmp_path / "b"), "--trees", "10", "-q"])
    out = capsys.readouterr().out
    assert rc == 0 and "forest segmenter of 3 classes (pore, active, binder)" in out and "mIoU" in out
    rc = main(["train", "--task", "segment", str(phases), str(tmp_path / "b"), "--trees", "10", "-q"])
    assert rc == 2 and "output exists" in capsys.readouterr().err


def test_options_that_cannot_work_are_one_line(phases, tmp_path):
    for kw, words in [
        ({"sigmas": (0.0,)}, "feature sigmas"),
        ({"features": ("colour",)}, "feature groups"),
        ({"classes": ("a", "b")}, "label value 3 has no class name"),
        ({"colors": ("red", "blue", "green")}, "#rrggbb"),
    ]:
        with pytest.raises(NcmError, match=words):
            train_segmenter(phases, tmp_path / "x", **kw)
    assert not (tmp_path / "x").exists()


def test_live_mode_on_a_40000_px_mosaic_reads_only_the_painted_tiles():
    import tracemalloc

    import dask.array as da

    from ncm_core.training.live import LiveSegmenter

    s = phase_sample("sem", (500, 500), seed=9)
    mosaic = da.tile(da.from_array(s.image, chunks=500), (80, 80))  # 40000 x 40000: 1.6 GB, never in memory
    strokes = paint_strokes(s.truth, 3, fraction=0.03, seed=9)
    live = LiveSegmenter(mosaic, s.classes, tile=512, forest={"trees": 5})
    tracemalloc.start()
    # strokes in tile (30, 41) only: handed over as a copy of that tile, as the widget does while painting
    tile = np.zeros((512, 512), np.uint8)
    tile[6:506, 6:506] = strokes
    assert live.update({(30, 41): tile}, [(30, 41)])
    grid = live.predict_view(30 * 512, 31 * 512, 41 * 512, 42 * 512, stride=2, full=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert live.tile_reads == 1 and set(live._samples) == {(30, 41)}
    assert peak < 200e6  # the features of one tile, not the mosaic's 1.6 GB
    # one value per 2 x 2 block: the block's top-left pixel of the full-resolution preview
    full = live.predict_view(30 * 512, 31 * 512, 41 * 512, 42 * 512, stride=2)
    assert grid.shape == (256, 256) and np.array_equal(grid, full[::2, ::2])
    # a stroke in another tile adds its samples; erasing it (the tile is all 0 now) drops them again
    assert live.update({(3, 7): tile}, [(3, 7)]) and set(live._samples) == {(30, 41), (3, 7)}
    assert live.update({(3, 7): np.zeros_like(tile)}, [(3, 7)]) and set(live._samples) == {(30, 41)}
    assert live.tile_reads == 3


def test_the_forest_segments_a_mosaic_exactly_like_the_whole_image_borders_included(forest, tmp_path):
    """100 % of pixels, the image's own borders included: the engine pads windows at the border the way the
    features' filters extend the whole image."""
    from ncm_core.inference.segment import segment_mosaic
    from ncm_core.inference.segmentation import open_segmentation
    from ncm_core.io.mosaic import open_mosaic

    seg = load_segmenter(forest)
    s = phase_sample("sem", (300, 340), seed=5)
    whole = seg.predict_image(s.image.astype(np.float32)) + 1
    out = segment_mosaic(forest, open_mosaic(s.image), tmp_path / "seg.zarr", window=256, chunk=64, overlap=0)
    labels = np.asarray(open_segmentation(out).label_levels()[0])
    assert labels.shape == whole.shape
    assert np.array_equal(labels, whole), f"{(labels != whole).mean():.4%} of pixels differ"


def test_per_image_normalisation_segments_a_brighter_acquisition_like_the_original(phases, forest, tmp_path):
    """The same microstructure imaged with more gain and a higher black level: a forest that scales pixels by its
    training images' fixed range misreads it; one trained with ``normalization="image"`` scales each image by
    its own range and segments it as well as the original, in one piece and as a mosaic alike."""
    from ncm_core.inference.segment import segment_mosaic
    from ncm_core.inference.segmentation import open_segmentation
    from ncm_core.io.mosaic import open_mosaic

    fixed = load_segmenter(forest)
    bundle = train_segmenter(phases, tmp_path / "per-image", trees=40, normalization="image")
    per_image = load_segmenter(bundle)
    assert per_image.config.normalization == "image"
    s = phase_sample("sem", (160, 160), seed=70)
    img = s.image.astype(np.float32)
    brighter = 1.4 * img + 0.25 * float(img.max() - img.min())

    def miou(seg, image):
        pred = seg.predict_image(image)
        return iou_scores([pred], [s.truth.astype(np.int32) + 1], list(s.classes))["mIoU"]

    assert abs(miou(per_image, brighter) - miou(per_image, img)) < 0.03
    assert miou(fixed, brighter) < miou(per_image, brighter) - 0.1, (miou(fixed, brighter), miou(per_image, brighter))
    out = segment_mosaic(bundle, open_mosaic(brighter), tmp_path / "seg.zarr", window=192, chunk=64, overlap=0)
    labels = np.asarray(open_segmentation(out).label_levels()[0])
    assert np.array_equal(labels, per_image.predict_image(brighter) + 1)  # the mosaic's range, measured once
