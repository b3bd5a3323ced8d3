"""Docs screenshots: a generated volume in napari's 3D view, and the Inpaint dock with a painted mask
(run under xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1000x24" .venv/bin/python scripts/screenshot_generate.py GENERATOR docs/images

GENERATOR is a generator bundle (``ncm generate train``); the volume is generated into a temporary folder
and opened with napari-ncm's reader.
"""

import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from screenshot import save  # scripts/ is on sys.path when this script runs

from ncm_core.data.synth_volumes import blobs
from ncm_core.inference.generate import generate_volume


def volume_3d(bundle: str, out: Path) -> None:
    work = Path(tempfile.mkdtemp())
    vol = generate_volume(bundle, work / "generated.zarr", size=(96, 96, 96), seed=1, device="cpu")
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1300, 900)
    viewer.open(str(vol), plugin="napari-ncm")
    layer = viewer.layers["generated"]
    layer.show_selected_label = True
    layer.selected_label = 1  # the pore phase (value k + 1 for phase k)
    viewer.dims.ndisplay = 3
    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (15, -30, 55)
    camera.zoom *= 0.55
    for _ in range(5):
        QApplication.processEvents()
    viewer.screenshot(str(out / "napari-generated-volume.png"), canvas_only=False)
    viewer.close()


def inpaint_dock(out: Path) -> None:
    labels = blobs((256, 256), porosity=0.4, blobiness=1, seed=3).labels
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1500, 900)
    viewer.add_labels(labels, name="phases")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Inpaint")
    mask = widget.add_mask_layer()
    painted = np.zeros(labels.shape, np.uint8)
    painted[90:140, 60:150] = 1  # a damaged rectangle
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    painted[np.abs(yy - 0.6 * xx - 150) < 4] = 1  # a scratch
    mask.data = painted
    widget.run(sync=True)
    viewer.layers["phases"].visible = False
    save(viewer, str(out / "napari-inpaint.png"))


def main(bundle: str, out: str = "docs/images") -> None:
    volume_3d(bundle, Path(out))
    inpaint_dock(Path(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
