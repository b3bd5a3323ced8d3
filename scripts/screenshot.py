"""Docs screenshot: napari with the demo mosaic, its predicted class map and the class probabilities of one
clicked tile (run under xvfb-run).

    xvfb-run -a .venv/bin/python scripts/screenshot.py ncm-demo docs/images/napari-prediction.png
"""

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication


def main(demo: str = "ncm-demo", out: str = "docs/images/napari-prediction.png") -> None:
    demo_dir = Path(demo)
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1700, 900)
    viewer.open(str(demo_dir / "mosaic.ome.zarr"), plugin="napari-ncm")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Predict")
    widget.image.value = viewer.layers["sem_mosaic"]
    widget.bundle.value = str(demo_dir / "model")
    widget.output.value = str(demo_dir / "prediction-from-napari.zarr")
    widget.run(sync=True)
    viewer.layers["truth"].visible = False
    viewer.layers.selection.active = viewer.layers["sem_mosaic classes"]
    # a click on one tile: the Tile probabilities dock shows its class bars
    pred = widget.prediction
    i, j = pred.grid.shape[0] // 2, pred.grid.shape[1] // 3
    y0, y1, x0, x1 = pred.grid.cell_rect(i, j)
    world = viewer.layers["sem_mosaic"].data_to_world(((y0 + y1) / 2, (x0 + x1) / 2))
    widget.probabilities_dock().show_at(tuple(world))
    save(viewer, out)


def save(viewer, out: str) -> None:
    """Let Qt lay out the dock widgets, fit the view, write the window's screenshot and close."""
    for _ in range(5):
        QApplication.processEvents()
    viewer.reset_view()  # after the dock widgets have taken their space
    for _ in range(5):
        QApplication.processEvents()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(out, canvas_only=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
