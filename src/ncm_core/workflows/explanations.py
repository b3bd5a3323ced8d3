"""Explain a folder of tiles (or section crops) into one output folder: maps, a table, figures, checks.

``ncm explain BUNDLE FOLDER OUT``, the API (:func:`explain_folder`) and the napari Explain dock all run
this. The output folder holds ``maps/<image>__<method>.tif`` (one CYX stack per image and method),
``explanations.csv`` (one row per map), ``overview.png`` (the first images with their maps, when they
have one size) and, with ``check``, ``checks.json``, ``randomisation.png`` and
``deletion_insertion.png``. It is written under ``<out>.partial`` and renamed when complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncm_core.batch import FAILURES_FILE, Batch, Failure
from ncm_core.explain.methods import check_method
from ncm_core.explain.options import ExplainOptions
from ncm_core.options import merge_options
from ncm_core.outputs import atomic_output
from ncm_core.progress import CancelFlag, ProgressFn

__all__ = ["FolderExplanation", "explain_folder"]


@dataclass
class FolderExplanation:
    """What :func:`explain_folder` wrote."""

    path: Path
    images: int
    methods: list[str]
    overview: bool  # overview.png was written (the first images have one size)
    checks: dict[str, Any] | None = None  # the checks.json report, with ``check``
    files: list[str] = field(default_factory=list)  # names written in the folder, maps/ first
    failures: tuple[Failure, ...] = ()  # images that could not be read or explained (also failures.csv)

    def summary(self) -> str:
        """One line: where, how many images and methods, what files."""
        return (
            f"explanations: {self.path}  {self.images} image(s) x {len(self.methods)} method(s); maps/*.tif, "
            f"explanations.csv"
            + (", overview.png" if self.overview else "")
            + (", checks.json" if self.checks is not None else "")
            + (f", {FAILURES_FILE} ({len(self.failures)} failed)" if self.failures else "")
        )

    def check_lines(self) -> list[str]:
        """One line per method summing up the sanity checks (none without ``check``)."""
        from ncm_core.explain.folders import check_lines

        return check_lines(self.checks) if self.checks is not None else []


def explain_folder(
    bundle: str | Path | Any,
    folder: str | Path,
    out: str | Path,
    options: ExplainOptions | None = None,
    *,
    methods: str | Sequence[str] | None = None,
    check: bool = False,
    strict: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    **overrides: Any,
) -> FolderExplanation:
    """Explain every image of ``folder`` with each of ``methods`` into the folder ``out``.

    ``methods``: names, or one comma-separated string (default: ``options.method``). ``options`` (or its
    field names as keywords: target, layer, batch_size, window, stride, fill, device, overwrite,
    check_images) say how; ``check`` also runs the sanity checks on the first ``check_images`` images.
    An image that cannot be read or explained is skipped, listed in ``failures.csv`` and in the result's
    ``failures`` (:mod:`ncm_core.batch`); ``strict`` stops at the first instead. When every image fails,
    nothing is written.
    """
    import numpy as np

    from ncm_core.explain.folders import (
        OVERVIEW_IMAGES,
        explain_images,
        find_images,
        read_image,
        sanity_checks,
        write_table,
    )
    from ncm_core.models.bundle import load_bundle
    from ncm_core.viz.explanations import deletion_insertion_figure, explanation_figure, randomisation_figure

    o = merge_options(ExplainOptions, options, overrides)
    if methods is None:
        methods = [o.method]
    elif isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    names = [check_method(m) for m in methods]
    files = find_images(folder)
    with atomic_output(out, o.overwrite, inputs=(bundle, folder)) as part:
        from ncm_core.devices import resolve_device

        b = load_bundle(bundle)
        b.model.to(resolve_device(o.device))
        (part / "maps").mkdir()
        batch = Batch(len(files), strict=strict, what="images")
        read = []
        for f in files:
            with batch.attempt(f):
                read.append((f, read_image(f)))
        files, images = [f for f, _ in read], [im for _, im in read]
        keep = max(OVERVIEW_IMAGES, o.check_images if check else 0)  # the overview and checks reuse these maps
        rows, kept, done = explain_images(
            b, folder, files, images, names, o, part / "maps", keep, batch=batch, progress=progress, cancel=cancel
        )
        batch.check()  # every image failed: nothing is written
        files, images = [files[i] for i in done], [images[i] for i in done]
        batch.write(part)
        write_table(rows, part / "explanations.csv")
        if kept:
            explanation_figure(
                np.stack(images[:OVERVIEW_IMAGES]),
                {m: e[:OVERVIEW_IMAGES] for m, e in kept.items()},
                part / "overview.png",
            )
        checks = None
        if check:
            checks, curves = sanity_checks(b, images, kept, o, folder)
            (part / "checks.json").write_text(json.dumps(checks, indent=2))
            randomisation_figure(checks["randomisation"], part / "randomisation.png")
            deletion_insertion_figure(curves, part / "deletion_insertion.png")
        written = sorted(str(p.relative_to(part)) for p in part.rglob("*") if p.is_file())
    batch.warn(out)
    return FolderExplanation(Path(out), len(files), names, bool(kept), checks, written, tuple(batch.failures))
