"""Docs screenshot: the Cross-section widget after Predict on a synthetic section (run under xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1000x24" .venv/bin/python scripts/screenshot_sections.py BUNDLE \
        [docs/images/napari-sections.png]

BUNDLE is a regression bundle, e.g. a fold of ``make bench-rate`` run with ``--keep``.
"""

import sys
import tempfile
from pathlib import Path

import napari
from screenshot import save  # scripts/ is on sys.path when this script runs


def main(bundle: str, out: str = "docs/images/napari-sections.png") -> None:
    from ncm_core.data import synth

    s = synth.cross_section(0.3, (600, 2400), tilt_deg=-2.2, thickness_px=320, seed=77)
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1700, 950)
    image = viewer.add_image(s.image, rgb=True, scale=(s.pixel_size, s.pixel_size), name="cross-section")
    image.metadata["unit"] = "um"
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Cross-section")
    widget.image.value = image
    widget.mode.value = "sliding"
    widget.bundle.value = bundle
    widget.crops_out.value = str(Path(tempfile.mkdtemp()) / "crops")
    widget.predict(sync=True)
    print(widget.status.value)
    viewer.layers["cross-section Q_0.2C"].visible = False
    viewer.layers["cross-section Q_5C"].visible = True
    viewer.layers["cross-section crops"].visible = False
    viewer.reset_view()
    print("true", {k: round(v, 1) for k, v in s.targets.items()}, "porosity", round(s.porosity, 3))
    save(viewer, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
