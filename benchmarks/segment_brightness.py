"""Segmentation under changed acquisition brightness: a bundle's fixed intensity range against per-image ranges.

    make bench-segment-brightness   # or: .venv/bin/python benchmarks/segment_brightness.py

Two forests are trained from the same strokes (three SEM-like 160 x 160 frames, about 2 % of their pixels
painted; :func:`ncm_core.data.synth_phases.write_phase_dataset`): one scales pixels by the fixed range of its
training images (``normalization="training"``, the default), the other each image by its own robust range
(``"image"``). Held-out frames with dense truth are then "imaged" with other gain and black level (a linear
change of the grey levels) and segmented by both; the table is the mean IoU over the classes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402

#: (gain, black level as a share of the frame's grey-level span, what it is)
SETTINGS = [
    (1.0, 0.0, "the training frames' settings"),
    (1.3, 0.0, "1.3 x the gain"),
    (1.4, 0.25, "1.4 x the gain, black level + 25 %"),
    (0.7, 0.1, "0.7 x the gain, black level + 10 %"),
    (1.0, 0.3, "black level + 30 %"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=3, help="held-out frames per setting")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = ap.parse_args()
    from run import machine

    from ncm_core.data.synth_phases import phase_sample, write_phase_dataset
    from ncm_core.models.segmenter import load_segmenter
    from ncm_core.training.segment import iou_scores, train_segmenter

    work = Path(tempfile.mkdtemp(prefix="ncm-bench-brightness-"))
    try:
        data = write_phase_dataset(work / "phases", 3, "sem", (160, 160), fraction=0.02, seed=7)
        segs = {
            m: load_segmenter(train_segmenter(data, work / m, trees=40, normalization=m)) for m in ("training", "image")
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for gain, black, what in SETTINGS:
        scores = {m: [] for m in segs}
        for seed in range(70, 70 + a.frames):
            s = phase_sample("sem", (160, 160), seed=seed)
            img = s.image.astype(np.float32)
            shown = gain * img + black * float(img.max() - img.min())
            for m, seg in segs.items():
                pred = seg.predict_image(shown)
                scores[m].append(iou_scores([pred], [s.truth.astype(np.int32) + 1], list(s.classes))["mIoU"])
        rows.append(f"| {what} | {np.mean(scores['training']):.3f} | {np.mean(scores['image']):.3f} |")
    text = f"""## Segmentation under changed brightness (`make bench-segment-brightness`)

{machine()}; `benchmarks/segment_brightness.py`. Forests from strokes on 3 SEM-like frames; mIoU against the
dense truth of {a.frames} held-out frames, imaged with other gain and black level:

| the held-out frames imaged with | fixed range (`--normalization training`) | each image's own range (`--normalization image`) |
|---|---|---|
{chr(10).join(rows)}
"""
    write_section(Path(a.out), "segment-brightness", text)
    print(text)


if __name__ == "__main__":
    main()
