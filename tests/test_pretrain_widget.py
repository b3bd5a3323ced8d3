"""The Pretrain dock widget in a real napari viewer (run under xvfb-run): a thread worker with progress
and its hand-over to Train, and bad data as one notification line."""

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("lightly")
pytestmark = pytest.mark.gui


def _tiny(widget, data, out):
    widget.data.value = str(data)
    widget.arch.value = "resnet10t"
    widget.method.value = "vicreg"
    widget.epochs.value = 1
    widget.batch_size.value = 12
    widget.crop_size.value = 48
    widget.input_size.value = 32
    widget.crops.value = 4
    widget.output.value = str(out)


def test_pretrain_widget_in_a_real_thread_worker(make_napari_viewer, sem_folders, tmp_path, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Pretrain")
    _tiny(widget, sem_folders, tmp_path / "ssl")
    widget.probe.value = str(sem_folders)
    worker = widget.run()
    assert worker is not None and widget.cancel_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.result is not None, widget.status.value
    assert (tmp_path / "ssl" / "backbone.safetensors").is_file() and len(widget.history) == 1
    assert "k-NN" in widget.log.value and widget.status.value.startswith("Done")
    assert widget.run_button.enabled and not widget.cancel_button.enabled and widget.use_in_train.enabled
    widget.hand_to_train()
    train = next(w for w in viewer.window.dock_widgets.values() if type(w).__name__ == "TrainWidget")
    assert str(train.pretrained.value) == str(widget.result.backbone) and train.arch.value == "resnet10t"


def test_pretrain_widget_reports_too_little_data_in_one_line(make_napari_viewer, tmp_path, notifications):
    from PIL import Image

    notifications.expect(r"^error: Pretrain: .*fewer than the batch size 12; .*Batch size", times=1)
    (tmp_path / "one").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "one/a.png")
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Pretrain")
    _tiny(widget, tmp_path / "one", tmp_path / "out")
    assert widget.run(sync=True) is None
    assert widget.status.value.startswith("Error:") and "\n" not in widget.status.value
    assert not (tmp_path / "out" / "backbone.safetensors").exists()
