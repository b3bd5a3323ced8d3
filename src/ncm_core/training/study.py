"""Optuna studies that survive kills and run anywhere: journal storage, resume, worker processes, dask.

* **Storage**: the study lives in ``out/study.journal`` (Optuna's JournalStorage on a file: safe for
  several processes, unlike SQLite). A trial whose process was killed stays RUNNING in the journal; on
  resume it is marked FAIL and its parameters are queued again, so no finished trial is lost or
  repeated. Resume one study from one process at a time.
* **Parallel**: ``n_jobs`` worker processes on one machine, or dask.distributed workers (one trial loop
  per worker, per GPU when workers declare GPU resources), all sharing the journal file.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncm_core.errors import NcmError
from ncm_core.options import merge_options
from ncm_core.progress import CancelFlag, is_cancelled

STUDY = "study.journal"
STUDY_NAME = "ncm"


def make_pruner(pruner: str, min_resource: int, reduction_factor: int, max_resource: int) -> Any:
    """Optuna's pruner by name: ``asha`` (successive halving), ``hyperband`` or ``none``."""
    import optuna

    if reduction_factor < 2 or min_resource < 1:
        raise NcmError(
            f"reduction factor must be >= 2 and minimum epochs >= 1 (got {reduction_factor}, {min_resource})"
        )
    if pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=max_resource, reduction_factor=reduction_factor
        )
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise NcmError(f"unknown pruner {pruner!r} (asha, hyperband or none)")


def _storage(out: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / STUDY).touch()
    except OSError as exc:
        raise NcmError(f"cannot write the study file here ({exc.strerror or exc})", out) from None
    return JournalStorage(JournalFileBackend(str(out / STUDY)))


def open_study(
    out: str | Path,
    *,
    identity: dict[str, Any],
    pruner: Any = None,
    seed: int = 0,
    direction: str = "maximize",
    create: bool = True,
    sampler: Any = None,
):
    """Create or load the study in ``out/study.journal``; ``identity`` (data, task, space) must match."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out).expanduser()
    storage = _storage(out)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if STUDY_NAME in names:
        study = optuna.load_study(
            study_name=STUDY_NAME,
            storage=storage,
            sampler=sampler or optuna.samplers.TPESampler(seed=seed),
            pruner=pruner,
        )
        old = study.user_attrs.get("identity")
        if identity and old is not None and old != json.loads(json.dumps(identity)):
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise NcmError(
                f"the study here was made for another {', '.join(diff)}; use another output folder", out / STUDY
            )
        return study
    if not create:
        raise NcmError("no study to resume here", out / STUDY)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction=direction,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )
    study.set_user_attr("identity", identity)
    return study


def requeue_interrupted(study: Any) -> list[int]:
    """Mark trials left RUNNING by a killed process (and trials stopped by a cancel) FAIL, and queue their
    parameters again; returns the numbers of the trials re-queued."""
    from optuna.trial import TrialState

    done_requeues = {t.user_attrs.get("requeued_from") for t in study.get_trials(deepcopy=False)}
    out = []
    for t in study.get_trials(deepcopy=False):
        stale = t.state == TrialState.RUNNING
        cancelled = t.state == TrialState.FAIL and t.user_attrs.get("cancelled")
        if not (stale or cancelled) or t.number in done_requeues:
            continue
        if stale:
            study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        out.append(t.number)
    return out


def counted(study: Any) -> int:
    """Trials that count towards the budget: complete or pruned."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_trials(
    out: str | Path,
    objective: Callable[[Any], float],
    n_trials: int,
    seed: int = 0,
    pruner: Any = None,
    cancel: CancelFlag = None,
    on_trial: Callable[[Any], None] | None = None,
    sampler: Any = None,
) -> None:
    """Run trials of the study in ``out`` until it holds ``n_trials`` complete or pruned ones.

    The loop every worker runs: in this process, in worker processes, or as a dask task.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(out, identity={}, pruner=pruner, seed=seed, create=False, sampler=sampler)
    cap = MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED))

    failures = [0]

    def after(study: Any, trial: Any) -> None:
        cap(study, trial)
        if trial.state == TrialState.FAIL:
            failures[0] += 1
            if failures[0] >= max(3, n_trials):  # every configuration fails: stop instead of looping
                study.stop()
        if on_trial is not None:
            on_trial(trial)
        if is_cancelled(cancel):
            study.stop()

    if counted(study) >= n_trials:
        return
    # a trial that runs out of (GPU) memory or hits a numerical error fails alone; the study goes on
    study.optimize(objective, n_trials=None, callbacks=[after], catch=(RuntimeError, MemoryError), gc_after_trial=True)


def _worker(out: str, objective: Any, n_trials: int, seed: int, pruner: Any, sampler: Any = None) -> None:
    """Entry point of a worker process or dask task."""
    run_trials(out, objective, n_trials, seed, pruner, sampler=sampler)


@dataclass(frozen=True)
class StudyConfig:
    """How :func:`optimize` runs a study: its size, pruner (an Optuna pruner object), parallelism and sampler.

    ``scheduler``: a dask address (``local:N``, ``tcp://host:8786``); ``sampler`` None: TPE seeded by ``seed``.
    """

    n_trials: int = 20
    pruner: Any = None
    n_jobs: int = 1
    scheduler: Any = None
    resume: bool = False
    seed: int = 0
    direction: Literal["maximize", "minimize"] = "maximize"
    sampler: Any = None


def optimize(
    out: str | Path,
    objective: Callable[[Any], float],
    config: StudyConfig | None = None,
    *,
    identity: dict[str, Any],
    cancel: CancelFlag = None,
    on_trial: Callable[[Any], None] | None = None,
    **overrides: Any,
) -> Any:
    """Run (or resume) the study in ``out`` with ``objective``; returns the study.

    Settings: ``config`` or keyword ``overrides`` of :class:`StudyConfig` (``n_trials``, ``pruner``,
    ``n_jobs``, ``scheduler``, ``resume``, ``seed``, ``direction``, ``sampler``; a ``GridSampler``
    runs a grid). ``objective`` must be picklable for ``n_jobs > 1`` and dask. ``identity`` describes
    what is tuned (data, task, space): a study made for something else is refused.
    """
    c = merge_options(StudyConfig, config, overrides)
    n_trials, pruner, n_jobs, scheduler, resume = c.n_trials, c.pruner, c.n_jobs, c.scheduler, c.resume
    seed, direction, sampler = c.seed, c.direction, c.sampler
    out = Path(out).expanduser()
    if n_trials < 1 or n_jobs < 1:
        raise NcmError(f"trials and jobs must be positive (got {n_trials}, {n_jobs})")
    if (out / STUDY).is_file() and (out / STUDY).stat().st_size and not resume:
        raise NcmError("a study exists in this folder: resume it (--resume) or choose another folder", out)
    study = open_study(out, identity=identity, pruner=pruner, seed=seed, direction=direction, sampler=sampler)
    if resume:
        requeue_interrupted(study)
        if on_trial is not None:  # a resumed study's listeners (the Tune dock's table) see the earlier trials too
            from optuna.trial import TrialState

            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
                on_trial(t)
    if scheduler is not None:
        from ncm_core.inference.distributed import connect

        with connect(scheduler) as client:  # trials as dask tasks, one trial loop per worker (per GPU)
            workers = client.scheduler_info().get("workers", {}).values()
            gpus = sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers)
            n = gpus or max(1, len(workers))
            extra = {"resources": {"GPU": 1}} if gpus else {}
            futures = [
                client.submit(
                    _worker,
                    str(out),
                    objective,
                    n_trials,
                    seed + k,
                    pruner,
                    sampler,
                    pure=False,
                    key=f"ncm-tune-{k}-{time.time_ns()}",
                    **extra,
                )
                for k in range(n)
            ]
            for f in futures:
                f.result()
    elif n_jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
            for f in [
                pool.submit(_worker, str(out), objective, n_trials, seed + k, pruner, sampler) for k in range(n_jobs)
            ]:
                f.result()
    else:
        run_trials(out, objective, n_trials, seed, pruner, cancel, on_trial, sampler)
    return open_study(out, identity=identity, pruner=pruner, seed=seed, direction=direction, sampler=sampler)
