"""Docs figures of docs/generation.md: inpainting and super-resolution on synthetic images (about a minute on 2 cores).

    .venv/bin/python scripts/figures_generation.py [docs/images]

Writes ``generation-inpaint.png`` (a phase map and a grey-level image with holes, filled) and
``generation-superres.png`` (high-res, low-res input, bicubic, network) from the same functions as
``ncm inpaint`` and ``ncm superres``.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from ncm_core.data.degrade import degrade
from ncm_core.data.synth_volumes import blobs
from ncm_core.inference.inpaint import inpaint_array
from ncm_core.models.superres import load_superres
from ncm_core.training.superres import bicubic, psnr_ssim, train_superres, upscale
from ncm_core.viz._common import agg_figure


def grey(labels: np.ndarray, seed: int) -> np.ndarray:
    g = ndi.gaussian_filter((labels == 1).astype(np.float32) * 0.6 + 0.2, 1.0)
    return (g + np.random.default_rng(seed).normal(0, 0.02, g.shape)).astype(np.float32)


def inpaint_figure(out: Path) -> None:
    labels = blobs((192, 192), porosity=0.4, blobiness=1, seed=3).labels
    mask = np.zeros(labels.shape, bool)
    mask[40:80, 30:90] = True  # a damaged rectangle
    mask[150:170, :] = True  # an information bar across the image
    fig = agg_figure(10, 5.4)
    axs = fig.subplots(2, 3)
    for row, (name, img) in zip(axs, (("phase map", labels), ("grey levels", grey(labels, 1)))):
        filled = inpaint_array(img, mask)
        holed = np.where(mask, np.nan, img.astype(np.float32))
        for ax, im, title in zip(row, (img, holed, filled), ("original", "masked (white)", "inpainted")):
            ax.imshow(im, cmap="gray")
            ax.contour(mask, [0.5], colors="tab:red", linewidths=0.8)
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "generation-inpaint.png")


def superres_figure(out: Path) -> None:
    hr = [grey(blobs((256, 256), porosity=0.45, blobiness=1, seed=10 + k).labels, k) for k in range(5)]
    work = Path(tempfile.mkdtemp())
    b = load_superres(train_superres(hr, work / "sr", factor=4, iterations=300, device="cpu"))
    lo, hi = b.spec.norm_low, b.spec.norm_high
    h = (hr[-1] - lo) / (hi - lo)
    lr = degrade(h, 4, 0.5, 0.01, np.random.default_rng(100))
    sr, bc = upscale(b.model, lr), bicubic(lr, 4)
    fig = agg_figure(12, 3.4)
    axs = fig.subplots(1, 4)
    crop = (slice(64, 192), slice(64, 192))
    items = [
        ("high resolution", h[crop]),
        ("low resolution (4x, input)", np.kron(lr, np.ones((4, 4)))[crop]),
        ("bicubic: PSNR {:.1f} dB, SSIM {:.2f}".format(*psnr_ssim(h, bc)), bc[crop]),
        ("network: PSNR {:.1f} dB, SSIM {:.2f}".format(*psnr_ssim(h, sr)), sr[crop]),
    ]
    for ax, (title, im) in zip(axs, items):
        ax.imshow(np.clip(im, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "generation-superres.png")


def main(out: str = "docs/images") -> None:
    torch.set_num_threads(1)
    inpaint_figure(Path(out))
    superres_figure(Path(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
