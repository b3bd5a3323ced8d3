"""Prediction of several mosaics into one folder: ``<out>/<stem>.zarr`` each, the failing ones recorded.

:func:`predict_mosaics` runs :func:`~ncm_core.inference.predict.predict_mosaic` on each mosaic, exactly as
one run per mosaic would, and finishes what can be finished: a mosaic that cannot be opened or whose
run fails (an :class:`~ncm_core.errors.NcmError`, a :class:`~ncm_core.inference.engine.RunIncomplete`
with failed blocks, kept in its ``.partial`` for a re-run) is listed in ``<out>/failures.csv`` and the
others still run (:mod:`ncm_core.batch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ncm_core.batch import Batch, Failure
from ncm_core.errors import NcmError
from ncm_core.inference.options import PredictOptions
from ncm_core.inference.prediction import Prediction
from ncm_core.io.mosaic import open_mosaic
from ncm_core.options import merge_options
from ncm_core.outputs import check_output, remove
from ncm_core.progress import CancelFlag, ProgressFn

__all__ = ["PredictionBatch", "output_names", "predict_mosaics"]


@dataclass
class PredictionBatch:
    """What :func:`predict_mosaics` wrote: the folder, each finished prediction (by its mosaic, in order)
    and the mosaics that failed."""

    out: Path
    predictions: dict[str, Prediction] = field(default_factory=dict)
    failures: tuple[Failure, ...] = ()

    @property
    def total(self) -> int:
        return len(self.predictions) + len(self.failures)


def output_names(mosaics: Sequence[str | Path]) -> list[str]:
    """``<stem>.zarr`` for each mosaic (``a.ome.tif`` -> ``a.zarr``); two mosaics of one stem are refused."""
    seen: dict[str, str] = {}
    for m in mosaics:
        stem = Path(str(m).rstrip("/")).name.split(".")[0] or "mosaic"
        if stem in seen:
            raise NcmError(
                f"two mosaics are both named {stem!r} ({seen[stem]} and {m}); their predictions would share "
                f"{stem}.zarr: predict them into different folders",
                m,
            )
        seen[stem] = str(m)
    return [f"{s}.zarr" for s in seen]


def predict_mosaics(
    bundle: str | Path | Any,
    mosaics: Sequence[str | Path],
    out: str | Path,
    options: PredictOptions | None = None,
    *,
    strict: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    scheduler: Any = None,
    **overrides: Any,
) -> PredictionBatch:
    """Predict each of ``mosaics`` with ``bundle`` into the folder ``out`` as ``<stem>.zarr``.

    ``options`` and keyword ``overrides`` are those of :func:`~ncm_core.inference.predict.predict_mosaic`
    and apply to every mosaic. Every output is checked before the first run (none may exist without
    ``overwrite``, none may touch an input), and every mosaic is opened, so most failures are found
    before any work. A mosaic that fails is skipped and recorded (``failures.csv`` in ``out`` and the
    result's ``failures``); ``strict=True`` raises the first failure instead (a mosaic that cannot be
    opened: before anything is written). When every mosaic fails, :class:`~ncm_core.batch.BatchFailed`
    is raised. ``progress(done, total, message)`` counts the blocks of each mosaic in turn.
    """
    from ncm_core.inference.predict import predict_mosaic

    o = merge_options(PredictOptions, options, overrides)
    o = replace(o, strict=o.strict or strict)  # strict: the first failing mosaic, and any problem pixel in one
    strict = o.strict
    if not mosaics:
        raise NcmError("no mosaics given")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise NcmError("with several mosaics, the output is a folder (one <stem>.zarr per mosaic); this is a file", out)
    names = output_names(mosaics)
    for name in names:  # the folder may hold the mosaics; no prediction may be, hold or lie inside an input
        check_output(out / name, o.overwrite, (bundle, *mosaics, o.mask))
    batch = Batch(len(mosaics), strict=strict, what="mosaics")
    opened = []
    for m in mosaics:  # cheap (lazy): a mosaic that cannot be opened fails before anything is written
        with batch.attempt(m) as a:
            open_mosaic(m, pixel_size=o.pixel_size)
        opened.append(not a.failed)
    batch.check()
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    result = PredictionBatch(out)
    for m, name, ok in zip(mosaics, names, opened):
        if not ok:
            continue
        with batch.attempt(m):
            result.predictions[str(m)] = predict_mosaic(
                bundle, m, out / name, o, progress=progress, cancel=cancel, scheduler=scheduler
            )
    try:
        batch.check()
    except NcmError:
        if created and not any(out.iterdir()):
            remove(out)
        raise
    batch.write(out)  # (or remove the list of an earlier run of this batch)
    result.failures = tuple(batch.failures)
    batch.warn(out)
    return result
