"""A whole session in a real napari viewer, as a person runs it (under xvfb-run).

Every widget is driven through its real buttons (Qt clicks), every long task runs in its thread
worker, napari's exception hooks are installed (as ``napari.run()`` does) and every notification is
recorded: the session fails on any error or warning notification it does not expect, on a class
whose colour differs between layers, and on a Cancel that takes more than two seconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = [pytest.mark.gui, pytest.mark.slow]

from tests.test_napari import click  # noqa: E402

CANCEL_LIMIT_S = 2.0


def press(button) -> None:
    """A real click on a magicgui push button."""
    button.native.click()


def wait_done(qtbot, widget, timeout_s: float = 180) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=int(timeout_s * 1000))


def run_and_wait(qtbot, widget, button=None, timeout_s: float = 180) -> None:
    press(button or widget.run_button)
    assert widget.worker is not None, widget.status.value  # it runs in a thread worker
    wait_done(qtbot, widget, timeout_s)


def cancel_latency(qtbot, widget, under_way, button=None, timeout_s: float = 120) -> float:
    """Press Run (or ``button``), wait until ``under_way()`` (the work is in its long part), press Cancel;
    the seconds from the Cancel click to the worker's end."""
    press(button or widget.run_button)
    assert widget.worker is not None, widget.status.value
    qtbot.waitUntil(lambda: under_way() or widget.worker is None, timeout=int(timeout_s * 1000))
    assert widget.worker is not None, f"{widget.task_name} ended before it could be cancelled: {widget.status.value}"
    t0 = time.monotonic()
    press(widget.cancel_button)
    wait_done(qtbot, widget, 120)
    return time.monotonic() - t0


def after(seconds: float):
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0 > seconds


def class_colors_of(layer) -> dict[str, tuple[float, ...]]:
    """``{class name: RGBA}`` as a Labels layer draws it (its features name the label values)."""
    out = {}
    for value, name in zip(layer.features["index"], layer.features["class"], strict=True):
        if int(value):
            out[str(name)] = tuple(np.round(np.asarray(layer.colormap.map(np.array([int(value)])))[0], 4))
    return out


def class_values_of(layer) -> dict[str, int]:
    return {str(n): int(v) for v, n in zip(layer.features["index"], layer.features["class"], strict=True) if int(v)}


def assert_same_classes(a, b) -> None:
    """Every class in both layers has the same label value and the same colour in both."""
    ca, cb = class_colors_of(a), class_colors_of(b)
    common = set(ca) & set(cb)
    assert common, (list(ca), list(cb))
    for name in sorted(common):
        assert ca[name] == cb[name], f"{name}: {ca[name]} in {a.name!r}, {cb[name]} in {b.name!r}"
        assert class_values_of(a)[name] == class_values_of(b)[name], name


def paint_three_classes(viewer, train) -> list[str]:
    """Paint two separate squares inside the truth regions of classes 1, 2 and 4 on a new annotation
    layer made by the Train widget; returns the painted class names (in an order that is not
    alphabetical: NCM333_pristine, NCM333_formation, NCM523_pristine)."""
    truth = np.asarray(viewer.layers["truth"].data)
    press(train.new_labels)
    layer = viewer.layers["SEM mosaic annotations"]
    assert layer.mode == "paint" and layer.brush_size >= train.tile.value  # strokes wide enough for a tile
    data = np.array(layer.data)
    for v in (1, 2, 4):
        ys, xs = np.nonzero(truth == v)
        y0, y1, x0, x1 = ys.min() + 24, ys.max() - 24, xs.min() + 24, xs.max() - 24
        data[y0 : y0 + 96, x0 : x0 + 96] = v
        data[y1 - 96 : y1, x1 - 96 : x1] = v
    layer.data = data
    names = train.class_names()
    painted = [names[0], names[1], names[3]]
    assert painted != sorted(painted)
    return painted


def test_a_whole_session(make_napari_viewer, tiny_bundle, tmp_path, qtbot, notifications):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer(show=True)  # a window on the (virtual) screen, as a person has
    latency: dict[str, float] = {}
    with notification_manager:  # napari's exception and warning hooks, as napari.run() installs them
        # ---------------------------------------------------------------- open the SEM sample, Predict
        viewer.open_sample("napari-ncm", "sem_mosaic")
        image, truth = viewer.layers["SEM mosaic"], viewer.layers["truth"]
        _, predict = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
        assert predict.image.value is image  # the only image layer is chosen
        predict.bundle.value = str(tmp_path / "no-bundle-here")  # a person's first slip: one error, one line
        not_a_zarr = tmp_path / "notes.txt"
        not_a_zarr.write_text("a file, not a prediction")
        press(predict.run_button)
        notifications.expect(r"^error: Predict: .*no-bundle-here", times=1)
        assert predict.status.value.startswith("Error:") and "\n" not in predict.status.value
        predict.bundle.value = str(tiny_bundle)
        predict.output.value = str(not_a_zarr)  # an error inside the worker: shown once, never re-raised
        run_and_wait(qtbot, predict)
        notifications.expect(r"^error: Predict: .*notes\.txt", times=1)
        assert predict.status.value.startswith("Error:")
        predict.output.value = str(tmp_path / "pred.zarr")
        run_and_wait(qtbot, predict)
        assert predict.status.value.startswith("Done"), predict.status.value
        classes = viewer.layers["SEM mosaic classes"]
        assert_same_classes(classes, truth)  # one colour (and value) per class name, truth and prediction
        assert "SEM mosaic probabilities" not in viewer.layers  # no hidden 3-D layer, no class slider
        assert viewer.dims.ndim == 2

        # ---------------------------------------------------------------- click a tile
        dock = predict.probabilities_dock()
        assert dock.canvas.isHidden()  # a hint until the first click
        click(viewer, image.data_to_world((300, 400)))
        assert dock.shown is not None and dock.shown["cell"] == (300 // 32, 400 // 32)
        assert not dock.canvas.isHidden()
        prob_layer = dock.add_probability_layer()
        assert prob_layer.ndim == 2 and viewer.dims.ndim == 2

        # ---------------------------------------------------------------- annotate and Train
        _, train = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
        assert train.image.value is image
        train.tile.value = 32
        painted = paint_three_classes(viewer, train)
        annotations = viewer.layers["SEM mosaic annotations"]
        assert_same_classes(annotations, truth)
        train.arch.value = "resnet10t"
        train.epochs.value = 2
        train.output.value = str(tmp_path / "bundle")
        run_and_wait(qtbot, train, timeout_s=300)
        assert train.status.value.startswith("Done"), train.status.value
        bundle = Path(str(train.result.bundle))
        from ncm_core.models.bundle import load_bundle

        assert load_bundle(bundle).config.class_names == painted  # the user's order, not sorted
        ticks = [t for ax in train.figure.axes for t in ax.get_xticks()]
        assert all(float(t).is_integer() for t in ticks)  # whole epochs

        # ---------------------------------------------------------------- hand over to Predict
        assert str(predict.bundle.value) == str(bundle)
        predict.output.value = str(tmp_path / "pred-annotations.zarr")
        run_and_wait(qtbot, predict)
        # a model of 3 of the 12 classes rightly finds the other classes' tiles unlike its training tiles
        notifications.expect(r"^warning: .* look unlike the model's training tiles", times=None)
        assert predict.status.value.startswith("Done"), predict.status.value
        classes = viewer.layers["SEM mosaic classes"]
        assert list(classes.features["class"])[1:] == painted
        assert_same_classes(classes, annotations)  # what the user painted: same values, same colours
        assert_same_classes(classes, truth)

        # ---------------------------------------------------------------- Explain, click a tile
        _, explain = viewer.window.add_plugin_dock_widget("napari-ncm", "Explain")
        assert explain.image.value is image
        explain.bundle.value = str(tiny_bundle)
        explain.method.value = "gradcam"
        explain.out.value = str(tmp_path / "gradcam.zarr")
        run_and_wait(qtbot, explain)
        assert "map(s)" in explain.status.value, explain.status.value
        n_before = len(viewer.layers)
        click(viewer, image.data_to_world((200, 300)), drag=np.array([50.0, 20.0]))  # a pan explains nothing
        assert explain.worker is None and explain.tile_result is None
        click(viewer, image.data_to_world((200, 300)))
        wait_done(qtbot, explain)
        assert explain.tile_result is not None and explain.tile_result[0][:2] == (192, 288)
        assert len(viewer.layers) == n_before + 1  # the outline of the explained tile

        # ---------------------------------------------------------------- a cross-section: Detect, Extract
        viewer.open_sample("napari-ncm", "cross_section")
        _, sections = viewer.window.add_plugin_dock_widget("napari-ncm", "Cross-section")
        sections.image.value = viewer.layers["cross-section"]
        sections.crop_h.value, sections.crop_w.value = 64, 192
        run_and_wait(qtbot, sections, sections.detect_button)
        assert "cross-section crops" in viewer.layers, sections.status.value
        assert sections.crops_out.choose_btn.text.lower() == "choose directory"  # not "select file"
        sections.crops_out.value = str(tmp_path / "crops")
        run_and_wait(qtbot, sections, sections.extract_button)
        assert sections.status.value.startswith("crops written"), sections.status.value

        # ---------------------------------------------------------------- a 2-trial Tune
        _, tune = viewer.window.add_plugin_dock_widget("napari-ncm", "Tune")
        space = tmp_path / "space.json"
        space.write_text(json.dumps({"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}))
        tune.data.value = str(tmp_path / "bundle_tiles")  # the tile set cut from the annotations
        tune.space.value = str(space)
        tune.trials.value = 2
        tune.max_epochs.value = 2
        tune.arch.value = "resnet10t"
        tune.output.value = str(tmp_path / "study")
        run_and_wait(qtbot, tune, timeout_s=300)
        assert tune.status.value.startswith("Done"), tune.status.value
        table = tune.table
        assert list(table.column_headers) == ["trial", "state", "accuracy", "epochs", "parameters"]
        assert len(table.data.to_list()) == 2 and table.data.to_list()[0][1] in ("COMPLETE", "PRUNED")
        lines = [ln for ax in tune.figure.axes for ln in ax.get_lines() if ln.get_label() == "best so far"]
        assert lines and len(lines[0].get_xdata()) >= 2  # the best-so-far line is drawn from the first trial
        assert tune.use_best.enabled

        # ---------------------------------------------------------------- cancel each long task once
        predict.batch_size.value = 8
        predict.output.value = str(tmp_path / "pred-cancelled.zarr")
        latency["Predict"] = cancel_latency(qtbot, predict, after(1.5))
        assert predict.status.value == "Cancelled before a block was finished"  # the sample is one block

        explain.method.value = "occlusion"
        explain.out.value = str(tmp_path / "occlusion.zarr")
        latency["Explain"] = cancel_latency(qtbot, explain, after(1.5))
        assert explain.status.value.startswith("Cancelled")

        train.epochs.value = 200
        train.output.value = str(tmp_path / "bundle-cancelled")
        latency["Train"] = cancel_latency(qtbot, train, lambda: len(train.history) >= 1, timeout_s=300)
        assert train.status.value.startswith("Cancelled") and "resume" in train.status.value

        tune.trials.value = 20
        tune.max_epochs.value = 3
        tune.output.value = str(tmp_path / "study-cancelled")
        latency["Tune"] = cancel_latency(qtbot, tune, lambda: len(tune.rows) >= 1, timeout_s=300)
        assert tune.status.value.startswith("Cancelled"), tune.status.value
        best = tmp_path / "study-cancelled" / "best"
        assert tune.use_best.enabled == (best / "config.json").is_file()  # enabled whenever a best bundle exists

        qtbot.wait(300)  # late progress updates and notifications land before the checks
    assert not notifications.unexpected(), notifications.unexpected()
    assert not any(str(n.severity) == "error" and not n.message for n in notification_manager.records)
    print("cancel latency (s):", {k: round(v, 2) for k, v in latency.items()})
    slow = {k: round(v, 2) for k, v in latency.items() if v > CANCEL_LIMIT_S}
    assert not slow, f"Cancel took more than {CANCEL_LIMIT_S} s: {slow}"
