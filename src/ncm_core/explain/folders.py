"""Explanations of a folder of images (tiles or section crops): maps per image, a table, sanity checks.

The steps of :func:`ncm_core.workflows.explanations.explain_folder` that compute (the figures and the
output folder are above this layer): find and read the images, explain each with every method
(maps as ``maps/<image>__<method>.tif``, one table row per map), and the sanity checks on the first
images, reusing their maps.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ncm_core.batch import Batch
from ncm_core.errors import NcmError
from ncm_core.explain.methods import Explanation, explain
from ncm_core.explain.options import ExplainOptions
from ncm_core.progress import CancelFlag, ProgressFn, check_cancel, report

#: image files explained in a folder (searched in sub-folders too)
FOLDER_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
#: images whose maps the overview figure shows
OVERVIEW_IMAGES = 6
#: the columns of ``explanations.csv``
COLUMNS = ["image", "method", "layer", "map", "target", "score", "min", "max"]


def is_image_folder(path: str | Path) -> bool:
    """True for a folder of images, False for a mosaic (a file, or a zarr / OME-Zarr folder)."""
    p = Path(path)
    return p.is_dir() and not (p / "zarr.json").exists() and not (p / ".zgroup").exists()


def find_images(folder: str | Path) -> list[Path]:
    """The images of ``folder`` and its sub-folders (PNG, TIFF, JPEG), sorted by path."""
    from ncm_core.data.datasets import skip_hidden

    root = Path(folder)
    files = skip_hidden(
        sorted(p for p in root.rglob("*") if p.suffix.lower() in FOLDER_SUFFIXES and p.is_file()), root, root
    )
    if not files:
        raise NcmError("no images (PNG, TIFF, JPEG) in the folder", folder)
    return files


def read_image(f: Path) -> np.ndarray:
    """An image as an array as a mosaic holds it (``(h, w)`` or ``(h, w, C)``); one line when unreadable or
    not finite (the same reader as training frames)."""
    from ncm_core.data.datasets import load_image

    return load_image(f)


def read_images(files: Sequence[Path]) -> list[np.ndarray]:
    """Every image as an array as a mosaic holds it (``(h, w)`` or ``(h, w, C)``)."""
    return [read_image(f) for f in files]


def map_name(folder: str | Path, image: Path, method: str) -> str:
    """File name of an image's map: its path in the folder with ``/`` as ``__``, then the method."""
    stem = str(image.relative_to(folder).with_suffix("")).replace("/", "__")
    return f"{stem}__{method}.tif"


def explain_images(
    bundle: Any,
    folder: str | Path,
    files: Sequence[Path],
    images: Sequence[np.ndarray],
    methods: Sequence[str],
    options: ExplainOptions,
    maps_dir: Path,
    keep: int,
    *,
    batch: Batch | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
) -> tuple[list[dict[str, str]], dict[str, Explanation], list[int]]:
    """Explain every image with every method, writing each map stack to ``maps_dir`` as TIFF (axes CYX).

    Returns the table rows (one per map), per method the explanations of the first ``keep`` images
    explained (concatenated when those images have one size, else empty: the overview and checks need
    one size), and the indices of the images explained. With ``batch``, an image whose explanation fails
    is recorded there and its maps removed; without, the error is raised.
    """
    batch = Batch(1) if batch is None else batch
    rows: list[dict[str, str]] = []
    kept: dict[str, list[Explanation]] = {}
    done: list[int] = []
    for i, (f, img) in enumerate(zip(files, images)):
        with batch.attempt(f) as a:
            r, es = _explain_image(bundle, folder, f, img, methods, options, maps_dir, cancel)
        if not a.failed:
            rows += r
            if len(done) < keep:
                for m, e in es.items():
                    kept.setdefault(m, []).append(e)
            done.append(i)
        report(progress, i + 1, len(files), "images")
    same = len({images[i].shape for i in done[:keep]}) == 1
    return rows, ({m: Explanation.concat(es) for m, es in kept.items()} if same else {}), done


def _explain_image(
    bundle: Any,
    folder: str | Path,
    f: Path,
    img: np.ndarray,
    methods: Sequence[str],
    o: ExplainOptions,
    maps_dir: Path,
    cancel: CancelFlag,
) -> tuple[list[dict[str, str]], dict[str, Explanation]]:
    """One image's maps (written to ``maps_dir``; removed again when a method fails), rows and explanations."""
    import tifffile

    rows: list[dict[str, str]] = []
    out: dict[str, Explanation] = {}
    written: list[Path] = []
    try:
        for m in methods:
            check_cancel(cancel)
            e = explain(
                bundle,
                img[None],
                m,
                o.target,
                o.layer,
                batch_size=o.batch_size,
                window=o.window,
                stride=o.stride,
                fill=o.fill,
                device=o.device,
                cancel=cancel,
            )
            written.append(maps_dir / map_name(folder, f, m))
            tifffile.imwrite(written[-1], e.maps[0], metadata={"axes": "CYX", "Labels": e.names[0]})
            for k, name in enumerate(e.names[0]):
                score = e.scores[0, e.targets[0, k]]
                rows.append(
                    {
                        "image": str(f),
                        "method": m,
                        "layer": e.layer or "",
                        "map": str(k),
                        "target": name,
                        "score": f"{score:.6g}",
                        "min": f"{e.maps[0, k].min():.6g}",
                        "max": f"{e.maps[0, k].max():.6g}",
                    }
                )
            out[m] = e
    except NcmError:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return rows, out


def write_table(rows: Sequence[dict[str, str]], path: Path) -> Path:
    """``explanations.csv``: one row per map (image, method, layer, map index, target, score, min, max)."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def sanity_checks(
    bundle: Any,
    images: Sequence[np.ndarray],
    maps: dict[str, Explanation],
    options: ExplainOptions,
    where: str | Path | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Sanity checks on the first ``options.check_images`` images, reusing their maps (method -> Explanation).

    Returns the report (``checks.json``: model randomisation, attribution on particle boundaries,
    deletion/insertion areas) and the deletion/insertion curves per method (for the figure).
    """
    from ncm_core.explain.sanity import (
        attribution_in_mask,
        deletion_insertion,
        particle_boundaries,
        randomisation_check,
    )

    if not maps:
        raise NcmError("--check needs images of one size", where)
    o = options
    imgs = np.stack(images[: o.check_images])
    kw = dict(batch_size=o.batch_size, window=o.window, stride=o.stride)
    result: dict[str, Any] = {
        "images": len(imgs),
        "randomisation": randomisation_check(bundle, imgs, list(maps), o.target, layer=o.layer, **kw),
    }
    masks = np.stack([particle_boundaries(im) for im in imgs])
    result["boundaries"], curves = {}, {}
    for m, e in maps.items():
        e = e[: len(imgs)]
        result["boundaries"][m] = attribution_in_mask(e.maps, masks[:, None])
        curves[m] = deletion_insertion(bundle, imgs, e)
        result.setdefault("faithfulness", {})[m] = {
            k: curves[m][k] for k in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")
        }
    return result, curves


def check_lines(checks: dict[str, Any]) -> list[str]:
    """One line per method summing up a sanity-check report."""
    lines = []
    for m, r in checks["randomisation"].items():
        b, f = checks["boundaries"][m], checks["faithfulness"][m]
        lines.append(
            f"{m}: randomisation rank correlation {r['spearman_abs']:.2f} "
            f"({'passes' if r['passes'] else 'FAILS'}); "
            f"{b['positive_share_in_mask']:.0%} of positive attribution on particle boundaries "
            f"({b['area_share']:.0%} of the area, x{b['enrichment']:.2f}); deletion AUC "
            f"{f['deletion_auc']:.3f} (random {f['random_deletion_auc']:.3f})"
        )
    return lines
