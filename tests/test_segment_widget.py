"""The Segment widget in a real napari viewer (run under xvfb-run): strokes painted programmatically, the
live forest's prediction appears aligned with the image and agrees with the known phases, a forest bundle
trained from the strokes, a real thread worker, one line for bad strokes."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from ncm_core.data.synth_phases import paint_strokes, phase_sample  # noqa: E402


@pytest.fixture
def painted(make_napari_viewer):
    """A viewer with a 192 x 256 SEM-like phase image (scaled and shifted, as a real mosaic), the Segment
    dock, and a stroke layer it created, not yet painted."""
    viewer = make_napari_viewer()
    s = phase_sample("sem", (192, 256), seed=4)
    image = viewer.add_image(s.image, name="phases", scale=(0.05, 0.05), translate=(3.0, -1.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Segment")
    widget.image.value = image
    layer = widget.new_stroke_layer()
    return viewer, widget, layer, s


def test_live_prediction_appears_aligned_and_learns_the_phases(painted, tmp_path):
    viewer, widget, layer, s = painted
    assert np.allclose(layer.scale, (0.05, 0.05)) and np.allclose(layer.translate, (3.0, -1.0))
    assert list(layer.features["class"]) == ["unlabelled", "pore", "active", "binder"]
    layer.data = paint_strokes(s.truth, 3, fraction=0.02, seed=4)  # a person's strokes, about 2 % of the pixels
    result = widget.live_update(sync=True)
    assert result is not None, widget.status.value
    live = viewer.layers["phases live"]
    assert np.allclose(live.scale, (0.05, 0.05)) and np.allclose(live.translate, (3.0, -1.0))
    assert live.data.shape == s.truth.shape and live.opacity < 1
    assert (np.asarray(live.data) == s.truth + 1).mean() > 0.75  # the known phase map, from the strokes alone
    assert widget.status.value.startswith("Live:")
    # the strokes train a full forest bundle (validation on held-out strokes), ready to segment a mosaic
    widget.engine.value = "forest"
    widget.output.value = str(tmp_path / "forest")
    bundle = widget.run(sync=True)
    assert bundle is not None, widget.status.value
    assert (bundle / "forest.txt").is_file() and str(widget.bundle.value) == str(bundle)
    assert "mIoU" in widget.status.value


def test_live_mode_in_a_real_thread_worker(painted, qtbot):
    viewer, widget, layer, s = painted
    widget.live.value = True
    layer.data = paint_strokes(s.truth, 3, fraction=0.02, seed=4)  # the data event of a finished stroke
    qtbot.waitUntil(lambda: "phases live" in viewer.layers, timeout=120_000)
    qtbot.waitUntil(lambda: widget._live_worker is None, timeout=120_000)
    assert (np.asarray(viewer.layers["phases live"].data) > 0).mean() > 0.99


def test_strokes_of_one_class_are_refused_in_one_line(painted, notifications, tmp_path):
    notifications.expect(r"^error: Segment: .*only class 'active' is labelled", times=1)
    viewer, widget, layer, s = painted
    one = np.zeros(s.truth.shape, np.uint8)
    one[s.truth == 1] = 2
    layer.data = one
    widget.engine.value = "forest"
    widget.output.value = str(tmp_path / "b")
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and not (tmp_path / "b").exists()
    assert "\n" not in notifications.new()[0].message


def test_segment_mosaic_opens_aligned_labels(painted, tmp_path):
    pytest.importorskip("ncm_core.inference.segment")  # the streaming engine's segmentation task
    from ncm_core.data.synth_phases import write_phase_dataset
    from ncm_core.training.segment import train_segmenter

    viewer, widget, _, _ = painted
    data = write_phase_dataset(tmp_path / "phases", 2, "sem", (128, 128), fraction=0.02, seed=5)
    widget.bundle.value = str(train_segmenter(data, tmp_path / "forest", trees=10))
    widget.mosaic_out.value = str(tmp_path / "seg.zarr")
    out = widget.segment(sync=True)  # the image layer's own pixels: it came from no file
    assert out is not None, widget.status.value
    added = [ly for ly in viewer.layers if ly.name.startswith("seg ")]
    assert added and all(np.allclose(ly.scale[-2:], (0.05, 0.05)) for ly in added)
    assert all(np.allclose(ly.translate[-2:], (3.0, -1.0)) for ly in added)
    widget.mosaic_out.line_edit.value = ""  # cleared: a temporary segmentation.zarr: its layer is named once, not twice
    assert widget.segment(sync=True) is not None, widget.status.value
    assert "segmentation" in viewer.layers and not any(ly.name.startswith("segmentation segm") for ly in viewer.layers)


@pytest.mark.slow
def test_train_unet_draws_live_curves(painted, tmp_path):
    pytest.importorskip("ncm_core.training.segment_unet")  # the U-Net engine
    viewer, widget, layer, s = painted
    layer.data = paint_strokes(s.truth, 3, fraction=0.02, seed=4)
    widget.engine.value = "unet"
    assert widget.run_button.text == "Train U-Net"
    widget.epochs.value, widget.patch_size.value = 2, 64
    widget.output.value = str(tmp_path / "unet")
    bundle = widget.run(sync=True)
    assert bundle is not None, widget.status.value
    assert (bundle / "model.safetensors").is_file() and str(widget.bundle.value) == str(bundle)
    assert len(widget.history) == 2 and widget.figure.axes  # one point per epoch on the dock's curves


def test_sample_phases_open_with_truth_and_strokes_aligned(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ncm", "phases_section")  # through npe2, as from the File menu
    image, truth, strokes = (viewer.layers[n] for n in ("cross-section phases", "phases (truth)", "strokes"))
    assert image.rgb and image.data.shape[:2] == truth.data.shape == strokes.data.shape
    assert np.allclose(truth.scale, image.scale) and np.allclose(strokes.scale, image.scale)
    painted = np.asarray(strokes.data) > 0
    assert (
        0.005 < painted.mean() < 0.02 and (np.asarray(strokes.data)[painted] == np.asarray(truth.data)[painted]).all()
    )
    assert list(strokes.features["class"]) == ["unlabelled", "pore", "active", "binder", "collector"]


def test_the_view_is_read_in_full_resolution_pixels_and_capped(make_napari_viewer):
    from napari_ncm._segment_widget import LIVE_MAX_SIDE

    viewer = make_napari_viewer()
    base = np.zeros((256, 384), np.uint8)
    image = viewer.add_image([base, base[::2, ::2]], multiscale=True, name="pyramid")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Segment")
    image._data_level = 1  # napari shows the coarser level: the corners are its pixels
    image.corner_pixels = np.array([[10, 20], [63, 95]])
    assert widget.view_rect(image) == (20, 128, 40, 192)
    big = viewer.add_image(np.zeros((1, 1), np.uint8), name="big")
    big.data = np.zeros((LIVE_MAX_SIDE * 2, 100), np.uint8)
    big.corner_pixels = np.array([[0, 0], [LIVE_MAX_SIDE * 2 - 1, 99]])
    y0, y1, x0, x1 = widget.view_rect(big)
    assert (y1 - y0, x0, x1) == (LIVE_MAX_SIDE, 0, 100) and y0 == LIVE_MAX_SIDE // 2  # the centre of the view


def test_a_large_lazy_image_is_painted_on_disk_and_repredicted_tile_by_tile(make_napari_viewer, monkeypatch, tmp_path):
    import dask.array as da
    import zarr

    from napari_ncm import _segment_widget as sw
    from ncm_core.training.segment import describe, train_segmenter

    # "large" from 1 Mpx on and a 512 px view cap, so that a 3072 x 3072 mosaic plays a 100k x 100k one
    monkeypatch.setattr(sw, "LAZY_STROKES_PX", 2**20)
    monkeypatch.setattr(sw, "LIVE_MAX_SIDE", 512)
    s = phase_sample("sem", (256, 256), seed=4)
    mosaic = da.tile(da.from_array(s.image, chunks=256), (12, 12))  # lazy, never in memory
    viewer = make_napari_viewer()
    image = viewer.add_image(mosaic, name="mosaic", scale=(0.5, 0.5), translate=(10.0, -4.0))
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Segment")
    widget.image.value = image
    layer = widget.new_stroke_layer()
    assert isinstance(layer.data, zarr.Array) and layer.data.chunks == (sw.LIVE_TILE, sw.LIVE_TILE)

    def stroke(y: int, x: int) -> tuple:  # a person's strokes over one copy of the sample, at (y, x)
        rows, cols = np.nonzero(paint_strokes(s.truth, 3, fraction=0.02, seed=4))
        return (rows + y, cols + x), s.truth[rows, cols] + 1

    layer.data_setitem(*stroke(1100, 1560))  # inside tile (2, 3): napari writes its chunk to disk
    layer.paint((1200, 1700), int(s.truth[1200 % 256, 1700 % 256]) + 1)  # and a brush dab there
    assert sw.stored_tiles(layer.data) == [(2, 3)]
    image.corner_pixels = np.array([[1024, 1536], [1535, 2047]])  # the view: tile (2, 3)
    assert widget.live_update(sync=True) is not None, widget.status.value
    live = widget.live_segmenter
    assert live.tile_reads == 1  # the stored chunk, not the 36 tiles of the mosaic
    out = viewer.layers["mosaic live"]
    assert out.data.shape == (256, 256)  # the 512 px view at stride 2, not the mosaic
    # the live layer lies on the image: each stroke pixel's world position shows that pixel's prediction
    (rows, cols), _ = stroke(1100, 1560)
    world = np.array([image.data_to_world((r, c)) for r, c in zip(rows, cols, strict=True)])
    at = np.round([out.world_to_data(p) for p in world]).astype(int)
    preview = live.predict_view(1024, 1536, 1536, 2048, stride=2)
    assert np.array_equal(np.asarray(out.data)[at[:, 0], at[:, 1]], preview[rows - 1024, cols - 1536])
    assert (preview[rows - 1024, cols - 1536] == np.asarray(layer.data[rows, cols])).mean() > 0.8
    # a stroke elsewhere is read alone; erasing it drops its tile's samples
    before = live.tile_reads
    layer.data_setitem(*stroke(2600, 100))  # tile (5, 0)
    widget.live_update(sync=True)
    assert live.tile_reads == before + 1 and set(live._samples) == {(2, 3), (5, 0)}
    layer.data_setitem(stroke(2600, 100)[0], 0)
    widget.live_update(sync=True)
    assert live.tile_reads == before + 2 and set(live._samples) == {(2, 3)}
    layer.undo()  # napari sends no paint event for an undo: the widget finds the tile in the history
    widget.live_update(sync=True)
    assert live.tile_reads == before + 3 and set(live._samples) == {(2, 3), (5, 0)}
    # training reads the painted tiles with their margin, not the mosaic; the bundle is the CLI's kind
    ls = widget.label_set()
    assert sum(im.size for im in ls.images) <= 2 * (sw.LIVE_TILE + 2 * sw.TRAIN_MARGIN) ** 2
    assert sum(int((lab > 0).sum()) for lab in ls.labels) == int((np.asarray(layer.data) > 0).sum())
    bundle = train_segmenter(ls, tmp_path / "forest", engine="forest", trees=5)
    assert describe(bundle).startswith("forest segmenter of 3 classes")


def test_training_and_segmenting_keep_triton_out_before_torch_loads(painted, monkeypatch):
    """A U-Net first imports torch in the dock's worker: triton must be kept out before (next to Mesa's LLVM,
    under Xvfb, it crashes napari with SIGSEGV), for Train and for Segment mosaic alike."""
    import napari_ncm._torch

    viewer, widget, layer, s = painted
    layer.data = paint_strokes(s.truth, 3, fraction=0.02, seed=4)
    calls = []
    monkeypatch.setattr(napari_ncm._torch, "guard_triton", lambda: calls.append(widget._job_kind))
    widget.engine.value = "unet"
    for kind in ("train", "segment"):
        widget._job_kind = kind
        widget.bundle.value = "/nonexistent-bundle"
        assert widget._job() is not None
    assert calls == ["train", "segment"]
