"""Docs screenshot: the Measure dock after measuring the sample SEM phase map: its summary table, the
profile and size-distribution plots, and the separated particles over the segmentation (run under
xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1100x24" .venv/bin/python scripts/screenshot_measure.py \
        docs/images/napari-measure.png
"""

import sys
import tempfile

import napari
from qtpy.QtWidgets import QApplication
from screenshot import save  # scripts/ is on sys.path when this script runs


def main(out: str = "docs/images/napari-measure.png") -> None:
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1750, 1050)
    viewer.open_sample("napari-ncm", "phases_sem")
    seg = viewer.layers["phases (truth)"]
    seg.name, seg.visible, seg.opacity = "segmentation", True, 0.7
    viewer.layers.remove("strokes")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Measure")
    widget.labels.value = seg
    widget.do_tortuosity.value = False  # a 2D section's pores need not percolate
    widget.output.value = tempfile.mkdtemp(prefix="ncm-measure-")
    widget.run(sync=True)
    print(widget.status.value)
    viewer.layers["segmentation local thickness"].visible = False
    viewer.layers.selection.active = viewer.layers["segmentation particles"]
    for _ in range(5):
        QApplication.processEvents()  # the dock lays out its table and plots before it is scrolled
    bar = widget.native.verticalScrollBar()
    bar.setValue(bar.maximum())  # the dock scrolled to its table and plots
    save(viewer, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
