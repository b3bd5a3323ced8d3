"""The plugin in a real napari viewer (run under xvfb-run): sample data through npe2, the Predict
widget run synchronously and in a real thread worker, layers aligned with the tiles they came from,
reader and writer round trips."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from ncm_core.bundle import load_bundle  # noqa: E402
from ncm_core.predict import classify_tiles  # noqa: E402


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ncm", "sem_mosaic")  # through npe2, as from the File menu
    return viewer


def _predict_widget(viewer, bundle):
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
    widget.image.value = viewer.layers["SEM mosaic"]
    widget.bundle.value = str(bundle)
    return widget


def test_predict_widget_adds_aligned_layers(viewer_with_sample, tiny_bundle, tmp_path):
    viewer = viewer_with_sample
    image = viewer.layers["SEM mosaic"]
    assert image.data.shape == (1100, 1500) and tuple(image.scale) == (0.05, 0.05)
    widget = _predict_widget(viewer, tiny_bundle)
    widget.output.value = str(tmp_path / "pred.zarr")
    pred = widget.run(sync=True)
    assert pred is not None, widget.status.value
    labels = viewer.layers["SEM mosaic classes"]
    assert labels.data.shape == pred.grid.shape == (35, 47)  # 1100/32, 1500/32 rounded up
    assert np.array_equal(np.asarray(labels.data), np.asarray(pred.labels))
    assert list(labels.features["class"]) == ["not predicted", *pred.class_names]
    probs = viewer.layers["SEM mosaic probabilities"]
    assert probs.data.shape == (3, 35, 47)

    # the class of grid cell (i, j) is drawn over the pixels of that tile
    b = load_bundle(tiny_bundle)
    img = np.asarray(image.data)
    g = pred.grid
    for i, j in [(0, 0), (10, 20), (33, 45)]:
        y0, y1, x0, x1 = g.cell_rect(i, j)
        direct = classify_tiles(b, img[None, y0:y1, x0:x1])[0]
        stored = np.asarray(pred.probabilities[:, i, j])
        assert np.allclose(stored, direct, atol=1e-4)  # the stored values are this tile's
        expected = int(np.asarray(pred.labels[i, j]))
        for py, px in [((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2), (y0 + 0.4, x0 + 0.4), (y1 - 1.4, x1 - 1.4)]:
            world = image.data_to_world((py, px))
            assert labels.get_value(world, world=True) == expected
            assert np.allclose(np.round(labels.world_to_data(world)), (i, j))


def test_predict_widget_in_a_real_thread_worker(viewer_with_sample, tiny_bundle, qtbot):
    viewer = viewer_with_sample
    widget = _predict_widget(viewer, tiny_bundle)
    worker = widget.run()
    assert worker is not None and widget.cancel_button.enabled
    # the widget's own 'finished' handler (connected before the worker started) clears widget.worker;
    # waiting on that cannot miss a signal emitted before this line
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    qtbot.waitUntil(lambda: "SEM mosaic classes" in viewer.layers, timeout=10_000)
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert widget.status.value.startswith("Done")


def test_cancel_in_the_worker_adds_nothing(viewer_with_sample, tiny_bundle, qtbot):
    viewer = viewer_with_sample
    widget = _predict_widget(viewer, tiny_bundle)
    n = len(viewer.layers)
    worker = widget.run()
    assert worker is not None
    widget.cancel()  # may stop the worker before it even starts: wait on the widget, not on the signal
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    assert len(viewer.layers) == n and widget.status.value == "Cancelled"


def test_widget_reports_bad_input_in_one_line(viewer_with_sample, tmp_path):
    widget = _predict_widget(viewer_with_sample, tmp_path / "no_bundle")
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and "no_bundle" in widget.status.value


def test_reader_opens_mosaic_with_truth_and_prediction(make_napari_viewer, tiny_bundle, tmp_path):
    from ncm_core import synth
    from ncm_core.mosaic import write_ome_zarr
    from ncm_core.predict import predict_mosaic

    m = synth.sem_mosaic((200, 260), seed=1)
    mp = write_ome_zarr(tmp_path / "m.ome.zarr", m.image, pixel_size=0.05, chunks=64, levels=2,
                        labels={"truth": m.truth + 1}, label_classes={"truth": list(m.class_names)})
    predict_mosaic(tiny_bundle, mp, tmp_path / "p.zarr")
    viewer = make_napari_viewer()
    viewer.open(str(mp), plugin="napari-ncm")
    viewer.open(str(tmp_path / "p.zarr"), plugin="napari-ncm")
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["m", "truth"] and "p classes" in names
    assert viewer.layers["m"].multiscale and tuple(viewer.layers["m"].scale) == (0.05, 0.05)
    truth = viewer.layers["truth"]
    assert np.array_equal(np.asarray(truth.data[0]), m.truth + 1)
    assert list(truth.features["class"]) == ["unlabelled", *m.class_names]


def test_writer_round_trip_keeps_classes_and_transform(viewer_with_sample, tiny_bundle, tmp_path):
    from ncm_core.mosaic import open_mosaic

    viewer = viewer_with_sample
    widget = _predict_widget(viewer, tiny_bundle)
    widget.run(sync=True)
    layer = viewer.layers["SEM mosaic classes"]
    [out] = layer.save(str(tmp_path / "classes.zarr"), plugin="napari-ncm")
    m = open_mosaic(out)
    assert np.array_equal(np.asarray(m.data), np.asarray(layer.data))
    assert m.translate == pytest.approx(tuple(layer.translate)) and m.pixel_size == pytest.approx(layer.scale[-1])


FRESH_NAPARI = """
import sys
import napari
viewer = napari.Viewer(show=False)           # OpenGL context first (Mesa llvmpipe under Xvfb)
assert "torch" not in sys.modules
viewer.open_sample("napari-ncm", "sem_frame")
_, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
widget.image.value = viewer.layers[0]
widget.bundle.value = sys.argv[1]
pred = widget.run(sync=True)                 # torch, torchvision and timm are first imported here
print("LAYERS", [layer.name for layer in viewer.layers], pred.grid.shape)
"""


def test_first_torch_import_inside_napari_does_not_crash(tiny_bundle, tmp_path):
    """torch imported after napari's canvas exists: triton must not load (it segfaults next to Mesa's LLVM)."""
    import subprocess
    import sys

    script = tmp_path / "fresh.py"
    script.write_text(FRESH_NAPARI)
    r = subprocess.run([sys.executable, str(script), str(tiny_bundle)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "NCM811_cycled100 frame classes" in r.stdout
