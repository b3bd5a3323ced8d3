"""The core library must import without Qt or napari (and without torch until a model is needed)."""

import subprocess
import sys

GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy")


def _loaded_after(code: str, top_level: bool = True) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {m.split(".")[0] if top_level else m for m in out.split()}


def test_import_ncm_core_pulls_no_qt_no_napari_no_torch():
    mods = _loaded_after("import ncm_core")
    assert not mods & set(GUI), mods & set(GUI)
    assert "torch" not in mods


def test_whole_core_pulls_no_qt_no_napari():
    """Every module of ncm_core (found by walking the package), then a model built: still no Qt, no napari."""
    code = (
        "import pkgutil, importlib, ncm_core\n"
        "for m in pkgutil.walk_packages(ncm_core.__path__, 'ncm_core.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "from ncm_core.models.factory import build_model; build_model('resnet18', 2)"
    )
    mods = _loaded_after(code)
    assert "ncm_core.inference.engine" in _loaded_after(code, top_level=False)
    assert not mods & set(GUI), mods & set(GUI)


def test_plugin_import_is_light():
    """napari starts fast: importing the plugin package and reader loads no torch."""
    mods = _loaded_after("import napari_ncm, napari_ncm._reader, napari_ncm._sample_data")
    assert "torch" not in mods
