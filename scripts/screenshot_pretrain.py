"""Docs screenshot: the Pretrain dock after a short self-supervised run on sample frames (under xvfb-run).

    xvfb-run -a -s "-screen 0 1800x1000x24" .venv/bin/python scripts/screenshot_pretrain.py \
        docs/images/napari-pretrain.png
"""

import sys
import tempfile
from pathlib import Path

import napari
from screenshot import save  # scripts/ is on sys.path when this script runs

from ncm_core.data.synth import write_sem_dataset


def main(out: str = "docs/images/napari-pretrain.png") -> None:
    work = Path(tempfile.mkdtemp())
    frames = write_sem_dataset(work / "frames", 2, (224 + 32, 224), classes=("NCM333_pristine", "NCM811_cycled100"))
    viewer = napari.Viewer(title="napari-ncm")
    viewer.window.resize(1500, 950)
    viewer.open_sample("napari-ncm", "sem_mosaic")
    _, widget = viewer.window.add_plugin_dock_widget("napari-ncm", "Pretrain")
    widget.data.value = str(frames)
    widget.arch.value = "resnet10t"
    widget.epochs.value = 2
    widget.crop_size.value = 96
    widget.input_size.value = 64
    widget.crops.value = 16
    widget.batch_size.value = 16
    widget.output.value = str(work / "ssl")
    widget.run(sync=True)
    save(viewer, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
