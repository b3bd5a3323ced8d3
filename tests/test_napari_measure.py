"""The Measure widget in a real napari viewer (issue 19, item 4): a segmentation layer in, tables and
plots in the dock, separated particles and local thickness added as layers aligned with it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui


@pytest.fixture
def segmentation(make_napari_viewer):
    """A viewer with a segmentation of separate discs (radius 8 px) in pore, 0.5 um/px, shifted."""
    from napari_ncm._layers import class_labels_kwargs
    from ncm_core.data.synth_volumes import sphere_pack
    from ncm_core.io.colors import class_colors

    viewer = make_napari_viewer()
    s = sphere_pack((120, 160), radius=8, solid_fraction=0.3, seed=2)
    layer = viewer.add_labels(
        s.labels,
        name="phases",
        scale=(0.5, 0.5),
        translate=(10.0, 20.0),
        **class_labels_kwargs(["pore", "active"], class_colors(["pore", "active"])),
    )
    return viewer, layer, s.truth


def _widget(viewer, tmp_path):
    _, w = viewer.window.add_plugin_dock_widget("napari-ncm", "Measure")
    w.output.value = str(tmp_path / "measures")
    return w


def test_measure_widget_shows_tables_and_adds_aligned_layers(segmentation, tmp_path):
    viewer, layer, truth = segmentation
    w = _widget(viewer, tmp_path)
    assert w.labels.value is layer
    w.region.value = "10:110,0:160"
    w.run(sync=True)
    assert w.status.value.startswith("Done"), w.status.value
    s = w.summary
    assert s["unit"] == "um" and s["particles"]["d50"] == pytest.approx(truth["d50"] * 0.5, rel=0.05)
    cells = {w.table.item(i, 0).text(): w.table.item(i, 1).text() for i in range(w.table.rowCount())}
    assert "porosity" in cells and "d50" in cells and cells["d50"].endswith("um")
    # all the rows in view: the table is as tall as its rows (the dock scrolls, not the table)
    assert w.table.height() >= sum(w.table.rowHeight(i) for i in range(w.table.rowCount()))
    parts = viewer.layers["phases particles"]
    thick = viewer.layers["phases local thickness"]
    # the region starts at row 10: its layers sit 10 px (5 um) lower than the segmentation's origin
    assert np.allclose(parts.scale, layer.scale) and np.allclose(parts.translate, (15.0, 20.0))
    assert np.allclose(thick.translate, parts.translate) and parts.data.shape == (100, 160)
    # a particle's pixels lie over the segmentation's solid pixels in the world
    ys, xs = np.nonzero(parts.data)
    world = parts.data_to_world(np.array([ys[0], xs[0]]))
    y, x = np.round(layer.world_to_data(world)).astype(int)
    assert layer.data[y, x] == 2
    assert not w.canvas.isHidden() and not w.table.isHidden() and len(w.figure.axes) == 2


def test_measure_widget_bad_input_is_one_line(segmentation, tmp_path, notifications):
    viewer, layer, _ = segmentation
    w = _widget(viewer, tmp_path)
    w.classes.value = "a,b"
    assert w.run(sync=True) is None
    notifications.expect(r"^error: Measure: .*the Pore class field", times=1)
    assert "\n" not in notifications.new()[0].message
    assert not (tmp_path / "measures").exists()


def test_measure_widget_in_a_real_thread_worker(segmentation, tmp_path, qtbot):
    viewer, layer, _ = segmentation
    w = _widget(viewer, tmp_path)
    w.do_tortuosity.value = False
    worker = w.run()
    assert worker is not None and w.cancel_button.enabled
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert w.status.value.startswith("Done"), w.status.value
    assert "phases particles" in viewer.layers and "tortuosity" not in w.summary


def test_the_sample_volume_measures_to_its_truth(make_napari_viewer, tmp_path):
    """File > Open Sample > Pore / solid volume, then Measure: the d50 and porosity it was built with."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ncm", "phase_volume")
    layer = viewer.layers["phase volume"]
    w = _widget(viewer, tmp_path)
    w.do_tortuosity.value = False
    w.run(sync=True)
    truth = layer.metadata["truth"]
    assert w.summary["particles"]["d50"] == pytest.approx(truth["d50_um"], rel=0.01)
    assert w.summary["fractions"]["porosity"] == pytest.approx(truth["porosity"])
    assert viewer.layers["phase volume particles"].data.ndim == 3


def test_measure_widget_reads_a_multiscale_segmentation_at_full_resolution(segmentation, tmp_path):
    """A segmentation opened from a mosaic is multiscale: it is measured at level 0 (its scale's pixels), and
    the particles layer covers it, not a corner of it."""
    viewer, layer, truth = segmentation
    levels = [layer.data, layer.data[::2, ::2], layer.data[::4, ::4]]
    ms = viewer.add_labels(levels, name="mosaic", scale=layer.scale, translate=layer.translate, multiscale=True)
    ms.features = layer.features
    w = _widget(viewer, tmp_path)
    w.labels.value = ms
    w.do_tortuosity.value = False
    w.run(sync=True)
    assert w.status.value.startswith("Done"), w.status.value
    assert tuple(w.summary["shape"]) == layer.data.shape
    assert w.summary["particles"]["d50"] == pytest.approx(truth["d50"] * 0.5, rel=0.05)
    assert viewer.layers["mosaic particles"].data.shape == layer.data.shape


def test_measure_widget_chooses_the_segmentation_over_a_stroke_layer(segmentation, tmp_path):
    """A stroke layer painted first and a segmented mosaic opened later: Measure is for the segmentation, and a
    person's own choice stands until another segmentation arrives."""
    viewer, phases, _ = segmentation
    strokes = viewer.add_labels(np.zeros((120, 160), np.uint8), name="image strokes")
    w = _widget(viewer, tmp_path)
    assert w.labels.value is phases  # no segmentation yet: the first Labels layer, as before
    seg = viewer.add_labels(phases.data.copy(), name="segmentation", metadata={"ncm_segmentation": "seg.zarr"})
    assert w.labels.value is seg
    w.labels.value = strokes
    viewer.add_labels(np.zeros((8, 8), np.uint8), name="mask")
    assert w.labels.value is strokes
    seg2 = viewer.add_labels(phases.data.copy(), name="segmentation 2", metadata={"ncm_segmentation": "b.zarr"})
    assert w.labels.value is seg2
