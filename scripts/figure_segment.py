"""Docs figure: a forest trained from ~1 % strokes against multi-Otsu thresholding, on held-out synthetic images.

.venv/bin/python scripts/figure_segment.py docs/images/segment-forest.png
"""

import itertools
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(out: str = "docs/images/segment-forest.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from skimage.filters import threshold_multiotsu

    from ncm_core.data.synth_phases import PHASES, paint_strokes, phase_sample, write_phase_dataset
    from ncm_core.io.colors import class_colors
    from ncm_core.models.segmenter import load_segmenter
    from ncm_core.training.segment import iou_scores, train_segmenter

    work = Path(tempfile.mkdtemp(prefix="ncm-fig-seg-"))
    fig, axes = plt.subplots(2, 5, figsize=(16, 6.8))
    for row, kind in enumerate(("sem", "section")):
        names = list(PHASES[kind])
        k = len(names)
        data = write_phase_dataset(work / kind, 4, kind, (384, 384), fraction=0.01, seed=1)
        seg = load_segmenter(train_segmenter(data, work / f"{kind}-forest"))
        s = phase_sample(kind, (384, 384), seed=901)
        raw = (s.image[None] if s.image.ndim == 2 else np.moveaxis(s.image, -1, 0)).astype(np.float32)
        forest = seg.predict_image(raw)
        grey = raw.mean(0)
        bins = np.digitize(grey, threshold_multiotsu(grey, k))
        truth = s.truth.astype(np.int32) + 1

        def score(p, truth=truth, names=names):
            return iou_scores([p], [truth], names)["mIoU"]

        otsu = max((np.array(p)[bins] for p in itertools.permutations(range(k))), key=score)
        strokes = paint_strokes(s.truth, k, fraction=0.01, seed=901)
        cmap = ListedColormap([(0, 0, 0, 0), *class_colors(names)])
        shown = [
            ("image", None),
            ("strokes (~1 % of pixels)", strokes),
            (f"forest, mIoU {score(forest):.2f}", forest + 1),
            (f"multi-Otsu (best order), mIoU {score(otsu):.2f}", otsu + 1),
            ("truth", truth),
        ]
        for ax, (title, lab) in zip(axes[row], shown, strict=True):
            ax.imshow(s.image, cmap="gray" if s.image.ndim == 2 else None)
            if lab is not None:
                ax.imshow(lab, cmap=cmap, vmin=0, vmax=k, alpha=1.0 if title != "image" else 0, interpolation="nearest")
            ax.set_title(f"{kind}: {title}", fontsize=10)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in class_colors(list(PHASES["section"]))]
    fig.legend(handles, list(PHASES["section"]), loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
