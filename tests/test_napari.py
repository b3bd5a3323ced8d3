"""The plugin in a real napari viewer (run under xvfb-run): sample data through npe2, the Predict
widget run synchronously and in a real thread worker, layers aligned with the tiles they came from,
reader and writer round trips."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from ncm_core.inference.predict import classify_tiles  # noqa: E402
from ncm_core.models.bundle import load_bundle  # noqa: E402


@pytest.fixture
def viewer_with_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-ncm", "sem_mosaic")  # through npe2, as from the File menu
    return viewer


def _dock(viewer, name, bundle):
    """The plugin's ``name`` dock widget on the sample mosaic with ``bundle`` chosen."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", name)
    widget.image.value = viewer.layers["SEM mosaic"]
    widget.bundle.value = str(bundle)
    return widget


def _predict_widget(viewer, bundle):
    return _dock(viewer, "Predict", bundle)


def click(viewer, world, drag=None):
    """A left click at world position ``world`` through the viewer's mouse callbacks (press, release);
    with ``drag`` (canvas pixels), the mouse moves that far between them (the start of a pan)."""
    import inspect

    event = SimpleNamespace(
        type="mouse_press", position=tuple(world), pos=np.array([100.0, 100.0]), button=1, modifiers=[]
    )
    gens = []
    for callback in list(viewer.mouse_drag_callbacks):
        g = callback(viewer, event)
        if inspect.isgenerator(g):
            try:
                next(g)
                gens.append(g)
            except StopIteration:
                pass
    steps = [] if drag is None else [("mouse_move", np.asarray(drag, float))]
    for kind, shift in [*steps, ("mouse_release", 0)]:
        event.type, event.pos = kind, event.pos + shift
        for g in list(gens):
            try:
                next(g)
            except StopIteration:
                gens.remove(g)


def outer_extent(layer):
    """The world rectangle a 2-D layer's pixels cover (napari's extent runs from pixel centre to centre)."""
    e = layer.extent.world
    half = np.asarray(layer.scale[-2:]) / 2
    return np.array([e[0][-2:] - half, e[1][-2:] + half])


def cell_value(layer, pred, i, j):
    """The value the prediction layer ``layer`` should show over grid cell (i, j): its class's label value."""
    values = layer.metadata["class_values"]
    k = int(np.asarray(pred.labels[i, j]))
    return 0 if k == 0 else values[k - 1]


def test_predict_widget_adds_aligned_layers(viewer_with_sample, tiny_bundle, tmp_path):
    viewer = viewer_with_sample
    image = viewer.layers["SEM mosaic"]
    assert image.data.shape == (1100, 1500) and tuple(image.scale) == (0.05, 0.05)
    widget = _predict_widget(viewer, tiny_bundle)
    widget.output.value = str(tmp_path / "pred.zarr")
    pred = widget.run(sync=True)
    assert pred is not None, widget.status.value
    assert pred.grid.shape == (35, 47)  # 1100/32, 1500/32 rounded up
    labels = viewer.layers["SEM mosaic classes"]
    assert list(labels.features["class"]) == ["not predicted", *pred.class_names]
    # the class map covers exactly the image: the padded edge tiles are clipped at the image's border
    assert np.allclose(outer_extent(labels), outer_extent(image))
    # a class keeps its value from the truth layer (matched by name)
    truth = viewer.layers["truth"]
    truth_value = dict(zip(truth.features["class"], truth.features["index"], strict=True))
    assert labels.metadata["class_values"] == [truth_value[n] for n in pred.class_names]
    assert "SEM mosaic probabilities" not in viewer.layers  # per-class probabilities are on demand

    # the class of grid cell (i, j) is drawn over the pixels of that tile
    b = load_bundle(tiny_bundle)
    img = np.asarray(image.data)
    g = pred.grid
    f = labels.metadata["cell_factor"]
    for i, j in [(0, 0), (10, 20), (33, 45), (34, 46)]:
        y0, y1, x0, x1 = g.cell_rect(i, j)
        if (i, j) != (34, 46):  # a tile inside the image
            direct = classify_tiles(b, img[None, y0:y1, x0:x1])[0]
            stored = np.asarray(pred.probabilities[:, i, j])
            assert np.allclose(stored, direct, atol=1e-4)  # the stored values are this tile's
        y1, x1 = min(y1, 1100), min(x1, 1500)  # the edge tile: its part inside the image
        expected = cell_value(labels, pred, i, j)
        for py, px in [((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2), (y0 + 0.4, x0 + 0.4), (y1 - 1.4, x1 - 1.4)]:
            world = image.data_to_world((py, px))
            assert labels.get_value(world, world=True) == expected
            assert np.allclose(np.round(labels.world_to_data(world)) // f, (i, j))

    # a class's probability as a layer, on demand from the Tile probabilities dock
    dock = widget.probabilities_dock()
    assert dock.canvas.isHidden() and "Click a tile" in dock.info.text()  # a hint, not empty axes
    click(viewer, image.data_to_world((10 * 32 + 5, 20 * 32 + 5)))
    name = pred.class_names[1]
    layer = dock.add_probability_layer(name)
    assert layer.name == f"SEM mosaic P({name})" and layer.ndim == 2
    assert np.allclose(outer_extent(layer), outer_extent(image))
    world = image.data_to_world((10 * 32 + 5, 20 * 32 + 5))
    assert layer.get_value(world, world=True) == pytest.approx(float(pred.probabilities[1, 10, 20]))


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
    assert len(viewer.layers) == n and widget.status.value == widget.cancelled_text
    # the one block of the sample was not finished: the status does not promise kept blocks
    assert widget.status.value == "Cancelled before a block was finished"
    widget.last_progress = (2, 5)  # a run cancelled after two of five blocks
    assert widget.cancelled_text.startswith("Cancelled: 2 of 5 blocks are kept") and "resume" in widget.cancelled_text


def test_widget_reports_bad_input_in_one_line(viewer_with_sample, tmp_path, notifications):
    widget = _predict_widget(viewer_with_sample, tmp_path / "no_bundle")
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and "no_bundle" in widget.status.value
    notifications.expect(r"^error: Predict: .*no_bundle", times=1)  # one notification, one line
    assert "\n" not in notifications.new()[0].message


def test_reader_opens_mosaic_with_truth_and_prediction(make_napari_viewer, tiny_bundle, tmp_path):
    from ncm_core.data import synth
    from ncm_core.inference.predict import predict_mosaic
    from ncm_core.io.mosaic import write_ome_zarr

    m = synth.sem_mosaic((200, 260), seed=1)
    mp = write_ome_zarr(
        tmp_path / "m.ome.zarr",
        m.image,
        pixel_size=0.05,
        chunks=64,
        levels=2,
        labels={"truth": m.truth + 1},
        label_classes={"truth": list(m.class_names)},
    )
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
    # the prediction (classes in the bundle's order) takes the truth's label values and colours, by name
    pred = viewer.layers["p classes"]
    tv = dict(zip(truth.features["class"], truth.features["index"], strict=True))
    pv = dict(zip(pred.features["class"], pred.features["index"], strict=True))
    common = set(tv) & set(pv) - {"unlabelled", "not predicted"}
    assert len(common) == 3
    for name in common:
        assert tv[name] == pv[name]
        assert np.allclose(truth.colormap.map(np.array([tv[name]])), pred.colormap.map(np.array([pv[name]])))


def test_writer_round_trip_keeps_classes_and_transform(viewer_with_sample, tiny_bundle, tmp_path):
    from ncm_core.io.mosaic import open_mosaic

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


# ----------------------------------------------------------------------------------------- training
def _paint_three_classes(viewer, widget):
    """Paint two separate 96 px squares inside the regions of three truth classes, on a new annotation layer."""
    truth = np.asarray(viewer.layers["truth"].data)
    widget.image.value = viewer.layers["SEM mosaic"]
    layer = widget.new_annotation_layer()
    assert layer.data.shape == truth.shape and tuple(layer.scale) == tuple(viewer.layers["SEM mosaic"].scale)
    assert list(layer.features["class"])[1:] == widget.class_names()
    data = np.array(layer.data)
    for v in (1, 5, 9):
        ys, xs = np.nonzero(truth == v)
        y0, y1, x0, x1 = ys.min() + 24, ys.max() - 24, xs.min() + 24, xs.max() - 24
        data[y0 : y0 + 96, x0 : x0 + 96] = v
        data[y1 - 96 : y1, x1 - 96 : x1] = v
    layer.data = data
    return layer


def test_train_widget_from_painted_annotations_adds_a_bundle(viewer_with_sample, tmp_path):
    viewer = viewer_with_sample
    _, predict = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    _paint_three_classes(viewer, widget)
    widget.arch.value = "resnet10t"
    widget.tile.value = 32
    widget.epochs.value = 2
    widget.recipe.value = "basic"  # the recipe choice reaches the bundle
    widget.output.value = str(tmp_path / "bundle")
    result = widget.run(sync=True)
    assert result is not None, widget.status.value
    assert (tmp_path / "bundle" / "model.safetensors").is_file() and (tmp_path / "bundle" / "config.json").is_file()
    from ncm_core.models.bundle import load_bundle

    cfg = load_bundle(result.bundle).config
    names = widget.class_names()
    assert cfg.class_names == [names[0], names[4], names[8]] and cfg.tile_size == 32  # the user's order
    assert cfg.training["recipe"] == "basic" and cfg.training["augment"] == ["flip", "rot90"]
    assert not set(cfg.training["train_groups"]) & set(cfg.training["val_groups"])  # painted regions held out
    assert len(widget.history) == 2 and widget.figure.axes  # live curves were drawn
    assert str(predict.bundle.value) == str(result.bundle)  # the new bundle is ready to predict with
    assert widget.status.value.startswith("Done") and "held-out frames" in widget.status.value
    assert widget.cm_canvas.isVisible() or widget.cm_figure.axes  # the held-out confusion matrix is drawn


def test_train_widget_in_a_real_thread_worker(make_napari_viewer, sem_folders, tmp_path, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    widget.data.value = str(sem_folders)
    widget.arch.value = "resnet10t"
    widget.tile.value = 32
    widget.epochs.value = 2
    widget.output.value = str(tmp_path / "bundle")
    worker = widget.run()
    assert worker is not None and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.result is not None, widget.status.value
    assert len(widget.history) == 2 and (tmp_path / "bundle" / "model.safetensors").is_file()
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_train_widget_reports_unaligned_annotations(viewer_with_sample, tmp_path, notifications):
    notifications.expect(r"^error: Train: .*not aligned", times=1)
    viewer = viewer_with_sample
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    widget.source.value = "Annotations in this viewer"
    widget.image.value = viewer.layers["SEM mosaic"]
    widget.labels.value = viewer.add_labels(np.zeros((1100, 1500), np.uint8), name="painted")  # scale 1, not 0.05
    widget.output.value = str(tmp_path / "b")
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and "not aligned" in widget.status.value


def test_train_widget_speaks_in_its_own_words(make_napari_viewer, sem_folders, tiny_bundle, notifications):
    """Into a folder with a finished bundle: the advice names the dock's checkbox, not a CLI option."""
    notifications.expect(r"^error: Train: .*tick 'Replace a finished bundle there' to replace it$", times=1)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    widget.data.value = str(sem_folders)
    widget.output.value = str(tiny_bundle)
    assert widget.run(sync=True) is None
    assert "--overwrite" not in widget.status.value and "API" not in widget.status.value
    assert (tiny_bundle / "model.safetensors").is_file()  # nothing replaced


def test_clicking_a_tile_shows_its_class_probabilities(viewer_with_sample, tiny_bundle, tmp_path):
    viewer = viewer_with_sample
    widget = _predict_widget(viewer, tiny_bundle)
    widget.output.value = str(tmp_path / "pred.zarr")
    pred = widget.run(sync=True)
    dock = widget.probabilities_dock()
    assert dock is not None
    image = viewer.layers["SEM mosaic"]
    for i, j in [(3, 4), (20, 30)]:
        y0, y1, x0, x1 = pred.grid.cell_rect(i, j)
        world = image.data_to_world((y0 + 3, x1 - 4))  # a pixel near the tile's corner, not its centre
        click(viewer, world, drag=np.array([40.0, 0.0]))  # a pan, not a click
        assert dock.shown is None or dock.shown["cell"] != (i, j)
        click(viewer, world)
        assert dock.shown["cell"] == (i, j)
        expected = np.asarray(pred.probabilities[:, i, j])
        assert np.allclose(dock.shown["probabilities"], expected)
        bars = [p.get_width() for p in dock.ax.patches]
        assert np.allclose(bars, expected) and len(bars) == len(pred.class_names)
        assert pred.class_names[int(expected.argmax())] in dock.info.text()


def test_predict_widget_leaves_nan_tiles_out_and_says_so(make_napari_viewer, tiny_bundle, notifications):
    """A float image with a patch of NaN pixels: those tiles are not predicted, the status says how many and
    why, and every other tile is predicted (issue 15)."""
    from ncm_core.data import synth

    notifications.expect(r"not predicted: non-finite")  # the core's warning, where napari shows it
    viewer = make_napari_viewer()
    img = synth.sem_mosaic((128, 192), seed=2).image.astype(np.float32) / 255  # floats in [0, 1]
    img[40:50, 40:50] = np.nan  # tile (1, 1) of 32 px
    viewer.add_image(img, name="holes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
    assert widget.image.value is viewer.layers["holes"]  # the only image is preselected
    widget.bundle.value = str(tiny_bundle)
    widget.allow_incomplete.value = True  # finishes as well when regions cannot be read (none here)
    pred = widget.run(sync=True)
    assert pred is not None, widget.status.value
    assert "1 not predicted (non-finite pixels (NaN or inf))" in widget.status.value
    lab = np.asarray(pred.labels)
    assert lab[1, 1] == 0 and (np.delete(lab.ravel(), 7) > 0).all()


def test_prediction_has_an_ood_layer(viewer_with_sample, tiny_bundle, tmp_path, notifications):
    notifications.expect(r"^warning: .*look unlike the model's training tiles")
    viewer = viewer_with_sample
    widget = _predict_widget(viewer, tiny_bundle)
    pred = widget.run(sync=True)
    layer = viewer.layers["SEM mosaic out-of-distribution"]
    f = layer.metadata["cell_factor"]
    flagged = (np.asarray(pred.ood) > 1).astype(np.uint8)
    assert np.array_equal(np.asarray(layer.data)[::f, ::f], flagged)  # one value per tile, clipped at the border
    assert tuple(layer.scale) == tuple(viewer.layers["SEM mosaic classes"].scale)
    assert "unlike the training tiles" in widget.status.value


# ----------------------------------------------------------------------------------------- tuning
def test_tune_widget_runs_a_tiny_study_and_hands_over_the_best_bundle(make_napari_viewer, sem_folders, tmp_path):
    import json

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Tune")
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}))
    widget.data.value = str(sem_folders)
    widget.space.value = str(space)
    widget.trials.value = 3
    widget.max_epochs.value = 2
    widget.arch.value = "resnet10t"
    widget.tile.value = 32
    widget.exclude_rows.value = "-16:"
    widget.output.value = str(tmp_path / "study")
    result = widget.run(sync=True)
    assert result is not None, widget.status.value
    assert len(widget.rows) == 3 and len(widget.table.data.to_list()) == 3  # one row per finished trial
    assert {r["state"] for r in widget.rows} <= {"COMPLETE", "PRUNED"} and widget.figure.axes
    assert widget.use_best.enabled
    widget.use_best_bundle()
    predict = next(w for w in viewer.window.dock_widgets.values() if type(w).__name__ == "PredictWidget")
    assert str(predict.bundle.value) == str(result.best_bundle) == str(tmp_path / "study" / "best")


# ------------------------------------------------------------------------------------------ cross-sections
def test_sections_widget_shows_collector_and_crops_aligned(make_napari_viewer, section_set):
    from ncm_core.io.mosaic import open_mosaic

    viewer = make_napari_viewer()
    m = open_mosaic(section_set / "section_002.ome.tif")
    image = viewer.add_image(np.asarray(m.data), rgb=True, scale=(0.123, 0.123), translate=(10.0, 20.0), name="section")
    _, w = viewer.window.add_plugin_dock_widget("napari-ncm", "Cross-section")
    w.image.value = image
    w.crop_h.value, w.crop_w.value = 128, 384
    geom = w.detect(sync=True)
    assert geom is not None, w.status.value
    truth = json.loads((section_set / "truth.json").read_text())["section_002"]
    assert abs(geom.angle_deg - truth["tilt_deg"]) < 0.05 and "deg" in w.status.value
    crops, line = viewer.layers["section crops"], viewer.layers["section collector"]
    assert len(crops.data) == len(geom.crops) and len(line.data) == 1
    # the crop outlines sit where the crops were cut from: corner pixel centres map to the same world points
    r0, c0 = geom.crops[0]
    corner = geom.to_mosaic(r0, c0)  # centre of the crop's first pixel, mosaic (y, x)
    outline = crops.data[0][0]  # its outer corner, half a pixel further out along -u and -d
    u, d = np.asarray(geom.u), np.asarray(geom.d)
    assert np.allclose(outline, corner - 0.5 * u - 0.5 * d, atol=1e-6)
    assert np.allclose(crops.data_to_world(outline), image.data_to_world(outline))


def test_sections_widget_predicts_value_layers(make_napari_viewer, section_set, tiny_regressor, tmp_path):
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.training.regression import predict_section

    viewer = make_napari_viewer()
    m = open_mosaic(section_set / "section_000.ome.tif")
    image = viewer.add_image(np.asarray(m.data), rgb=True, name="section")
    _, w = viewer.window.add_plugin_dock_widget("napari-ncm", "Cross-section")
    w.image.value = image
    w.bundle.value = str(tiny_regressor)
    sp = w.predict(sync=True)
    assert sp is not None, w.status.value
    direct = predict_section(tiny_regressor, m, device="cpu")
    assert np.allclose(sp.values, direct.values, atol=1e-4)
    layer = viewer.layers["section Q_5C"]
    assert np.allclose(layer.features["Q_5C"], sp.values[:, 4]) and len(layer.data) == len(sp.values)
    assert viewer.layers["section Q_0.2C"].visible and not layer.visible
    assert not w.canvas.isHidden() and w.figure.axes
    w.crops_out.value = str(tmp_path / "crops")
    assert w.extract(sync=True) is not None and (tmp_path / "crops" / "sections.csv").is_file()


def test_train_widget_regression_with_cross_validation(make_napari_viewer, section_crops, section_set, tmp_path):
    viewer = make_napari_viewer()
    _, w = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    w.task.value = "Regress values (cross-section crops)"
    assert w.arch.value == "ncm_vgg" and w.optimizer.value == "lookahead_radam" and w.batch_size.value == 38
    assert not w.targets.native.isHidden() and w.tile.native.isHidden() and w.source.native.isHidden()
    w.data.value = str(section_crops)
    w.targets.value = str(section_set / "targets.csv")
    w.group.value = "porosity"
    w.reg_input.value = "32x96"
    w.epochs.value, w.batch_size.value, w.folds.value = 2, 8, 3
    w.output.value = str(tmp_path / "cv")
    r = w.run(sync=True)
    assert r is not None, w.status.value
    assert len(r.folds) == 3 and "MAPE" in w.status.value and not w.cm_canvas.isHidden()
    assert {h["fold"] for h in w.history} == {3}  # the curves show the fold being trained
    assert (tmp_path / "cv" / "rate_capability.png").is_file()
    assert "ranking by MAPE per mosaic: " in w.status.value and "cnn" in w.status.value  # the baselines
    # one model, handed to a docked Cross-section widget
    _, sections = viewer.window.add_plugin_dock_widget("napari-ncm", "Cross-section")
    w.folds.value = 0
    w.output.value = str(tmp_path / "one")
    r = w.run(sync=True)
    assert r is not None and "validation MAPE" in w.status.value
    assert str(sections.bundle.value) == str(tmp_path / "one")


def _explain_widget(viewer, bundle):
    return _dock(viewer, "Explain", bundle)


def test_explain_widget_adds_aligned_heatmaps_and_explains_a_clicked_tile(viewer_with_sample, tiny_bundle, tmp_path):
    viewer = viewer_with_sample
    image = viewer.layers["SEM mosaic"]
    widget = _explain_widget(viewer, tiny_bundle)
    assert widget.target.choices[:3] == ("predicted", "top-2", "all") and "NCM811_pristine" in widget.target.choices
    widget.method.value = "gradram"
    widget.target.value = "top-2"
    widget.out.value = str(tmp_path / "gradram.zarr")
    hm = widget.run(sync=True)
    assert hm is not None, widget.status.value
    first, second = viewer.layers["SEM mosaic gradram top-1 class"], viewer.layers["SEM mosaic gradram top-2 class"]
    assert first.visible and not second.visible and first.colormap.name == "RdBu_r"
    lo, hi = first.contrast_limits
    assert lo == pytest.approx(-hi)
    # heatmap pixel (0, 0) sits on the centre of the 4 x 4 mosaic pixels it summarises
    f = hm.factor
    np.testing.assert_allclose(first.data_to_world((0, 0)), image.data_to_world(((f - 1) / 2, (f - 1) / 2)))
    np.testing.assert_allclose(first.data_to_world((10, 20)), image.data_to_world((10 * f + 1.5, 20 * f + 1.5)))
    # click: the tile's probabilities and the maps of its two most probable classes
    res = widget.explain_tile(70, 100, sync=True)
    where, ex = widget.tile_result
    assert res is not None and where == (64, 96, 32) and ex.maps.shape == (1, 2, 32, 32)
    tile = np.asarray(image.data[64:96, 96:128])
    probs = classify_tiles(load_bundle(tiny_bundle), tile[None])[0]
    np.testing.assert_allclose(ex.scores[0], probs, atol=1e-5)
    assert list(ex.targets[0]) == list(np.argsort(-probs)[:2])
    assert not widget.canvas.isHidden() and len(widget.figure.axes) >= 3
    box = viewer.layers["SEM mosaic explained tile"].data[0]
    np.testing.assert_allclose(box.min(0), [63.5, 95.5]) and np.testing.assert_allclose(box.max(0), [95.5, 127.5])


def test_explain_widget_explains_a_folder_of_tiles(viewer_with_sample, tiny_bundle, tmp_path):
    from PIL import Image

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for k in range(2):
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (32, 32)).astype(np.uint8)).save(tiles / f"t{k}.png")
    widget = _explain_widget(viewer_with_sample, tiny_bundle)
    widget.folder.value = str(tiles)
    widget.out.value = str(tmp_path / "explained")
    r = widget.explain_folder(sync=True)
    assert r is not None, widget.status.value
    assert {p.name for p in (tmp_path / "explained" / "maps").iterdir()} == {"t0__gradcam.tif", "t1__gradcam.tif"}
    assert widget.status.value == r.summary() and "2 image(s) x 1 method(s)" in r.summary()


def test_explain_widget_in_a_real_thread_worker(viewer_with_sample, tiny_bundle, qtbot):
    viewer = viewer_with_sample
    widget = _explain_widget(viewer, tiny_bundle)
    worker = widget.run()
    assert worker is not None and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    qtbot.waitUntil(lambda: "SEM mosaic gradcam predicted class" in viewer.layers, timeout=10_000)
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_reader_opens_a_heatmap(make_napari_viewer, tiny_bundle, tmp_path):
    from ncm_core.explain.heatmaps import explain_mosaic

    rng = np.random.default_rng(0)
    explain_mosaic(
        tiny_bundle,
        rng.integers(0, 255, (96, 128)).astype(np.uint8),
        tmp_path / "occ.zarr",
        "occlusion",
        window=(8, 8),
        device="cpu",
    )
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "occ.zarr"), plugin="napari-ncm")
    assert [la.name for la in layers] == ["occ predicted class"] and layers[0].colormap.name == "RdBu_r"
