"""The core library must import without Qt or napari (and without torch until a model is needed)."""

import subprocess
import sys

GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_import_ncm_core_pulls_no_qt_no_napari_no_torch():
    mods = _loaded_after("import ncm_core")
    assert not mods & set(GUI), mods & set(GUI)
    assert "torch" not in mods


def test_whole_core_pulls_no_qt_no_napari():
    code = ("import ncm_core.cli, ncm_core.training.classify, ncm_core.inference.predict, ncm_core.evaluation.evaluate, ncm_core.workflows.demo, "
            "ncm_core.viz.figures, ncm_core.models.bundle, ncm_core.models.factory, ncm_core.data.tiling, ncm_core.io.mosaic, ncm_core.data.synth\n"
            "from ncm_core.models.factory import build_model; build_model('resnet18', 2)")
    mods = _loaded_after(code)
    assert not mods & set(GUI), mods & set(GUI)


def test_plugin_import_is_light():
    """napari starts fast: importing the plugin package and reader loads no torch."""
    mods = _loaded_after("import napari_ncm, napari_ncm._reader, napari_ncm._sample_data")
    assert "torch" not in mods
