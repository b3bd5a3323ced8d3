"""Docs screenshot: the Segment dock in live mode on the sample phase image with its painted strokes
(run under xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1000x24" .venv/bin/python scripts/screenshot_segment.py \
        docs/images/napari-segment.png
"""

import sys

import napari
from screenshot import save  # scripts/ is on sys.path when this script runs


def main(out: str = "docs/images/napari-segment.png") -> None:
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1700, 950)
    viewer.open_sample("napari-ncm", "phases_sem")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Segment")
    widget.image.value = viewer.layers["SEM phases"]
    widget.labels.value = viewer.layers["strokes"]
    widget.live_update(sync=True)
    viewer.layers.selection.active = viewer.layers["strokes"]
    print(widget.status.value)
    save(viewer, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
