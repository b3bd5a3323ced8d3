"""Docs screenshot: the Train widget after training from annotations painted on the sample mosaic
(run under xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1000x24" .venv/bin/python scripts/screenshot_train.py docs/images/napari-train.png
"""

import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from screenshot import save  # scripts/ is on sys.path when this script runs


def main(out: str = "docs/images/napari-train.png") -> None:
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1700, 950)
    viewer.open_sample("napari-ncm", "sem_mosaic")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Train")
    widget.image.value = viewer.layers["SEM mosaic"]
    widget.tile.value = 32  # before the annotation layer: its brush follows the tile size
    layer = widget.new_annotation_layer()
    truth = np.asarray(viewer.layers["truth"].data)
    data = np.array(layer.data)
    for v in (1, 4, 7, 10):  # four classes, each painted in three separate strips
        ys, xs = np.nonzero(truth == v)
        y0, y1, x0, x1 = ys.min() + 12, ys.max() - 12, xs.min() + 12, xs.max() - 12
        h = (y1 - y0 - 24) // 3
        for k in range(3):
            data[y0 + k * (h + 12) : y0 + k * (h + 12) + h, x0:x1] = v
    layer.data = data
    widget.arch.value = "resnet10t"
    widget.tile.value = 32
    widget.epochs.value = 12
    widget.lr.value = "0.002"
    widget.output.value = str(Path(tempfile.mkdtemp()) / "painted-model")
    widget.run(sync=True)
    print(widget.status.value)
    save(viewer, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
