"""Hyperparameter tuning with ASHA (Optuna), embedded by default, resumable, and on dask when asked.

* **ASHA** is Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` (asynchronous successive
  halving; :class:`~optuna.pruners.HyperbandPruner` as an option). Each trial trains with
  :func:`ncm_core.training.classify.train` and reports its validation accuracy after every epoch; the pruner
  stops trials that fall behind at each rung.
* **Search space**: a YAML or JSON file (or dict) of parameters of ``train``; the default
  (:data:`DEFAULT_SPACE`) follows the SEM study: learning rate log-uniform 1e-4..1e-1, batch size,
  normalisation on/off, augmentation on/off, plus weight decay and model size.
* **Storage**: the study lives in ``out/study.journal`` (Optuna's JournalStorage on a file: safe for
  several processes, unlike SQLite). ``resume=True`` continues it. A trial whose process was killed
  stays RUNNING in the journal; on resume it is marked FAIL and its parameters are queued again, so
  no finished trial is lost or repeated. Resume one study from one ``ncm tune`` at a time.
* **Parallel**: ``n_jobs`` worker processes on one machine, or dask.distributed workers
  (``scheduler="local:N"`` or ``"tcp://host:8786"``), all sharing the journal file (on several
  machines it must be on a shared file system; see docs/tuning.md).
* **Results** in ``out``: ``best.json``, ``trials.csv``, the best trial's bundle copied to
  ``out/best``, and optimisation-history, intermediate-value and parameter-importance plots
  (``optuna.visualization.matplotlib``) as PNG.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ncm_core.errors import Cancelled, NcmError
from ncm_core.progress import CancelFlag, ProgressFn, is_cancelled, report

STUDY = "study.journal"
STUDY_NAME = "ncm"

#: The SEM study's search (ASHA over learning rate, batch size and normalisation, up to 20 epochs),
#: with augmentation, weight decay and model size added.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "normalize": {"type": "categorical", "choices": [False, True]},
    "augment": {"type": "categorical", "choices": ["flip,rot90", "none"]},
    "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
    "architecture": {"type": "categorical", "choices": ["resnet10t", "resnet18"]},
}

#: ``train`` parameters a search space may vary.
TUNABLE = ("lr", "batch_size", "normalize", "augment", "weight_decay", "architecture", "optimizer", "momentum",
           "input_size", "warmup_epochs", "scheduler", "crops_per_image", "tile_size")


def load_space(space: str | Path | dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Read and check a search space (YAML/JSON file or dict); None gives :data:`DEFAULT_SPACE`."""
    where = None
    if space is None:
        return json.loads(json.dumps(DEFAULT_SPACE))
    if isinstance(space, (str, Path)):
        where = Path(space).expanduser()
        if not where.is_file():
            raise NcmError("search-space file not found", where)
        text = where.read_text()
        try:
            if where.suffix.lower() in (".yaml", ".yml"):
                import yaml

                space = yaml.safe_load(text)
            else:
                space = json.loads(text)
        except Exception as exc:
            raise NcmError(f"cannot parse the search space ({type(exc).__name__}: {str(exc).splitlines()[0]})",
                           where) from None
    if not isinstance(space, dict) or not space:
        raise NcmError("the search space is empty: give at least one parameter", where)
    for name, spec in space.items():
        if name not in TUNABLE:
            raise NcmError(f"unknown parameter {name!r} in the search space (tunable: {', '.join(TUNABLE)})", where)
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise NcmError(f"parameter {name!r} needs type float, int or categorical", where)
        if spec["type"] == "categorical":
            if not isinstance(spec.get("choices"), list) or not spec["choices"]:
                raise NcmError(f"parameter {name!r} needs a non-empty list of choices", where)
        else:
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (KeyError, TypeError, ValueError):
                raise NcmError(f"parameter {name!r} needs numeric low and high", where) from None
            if not low < high:
                raise NcmError(f"parameter {name!r}: low ({low:g}) must be below high ({high:g})", where)
            if spec.get("log") and low <= 0:
                raise NcmError(f"parameter {name!r}: a log scale needs low > 0 (got {low:g})", where)
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Draw one configuration from ``space`` with Optuna's suggest API."""
    out = {}
    for name, s in space.items():
        if s["type"] == "float":
            out[name] = trial.suggest_float(name, float(s["low"]), float(s["high"]), log=bool(s.get("log")))
        elif s["type"] == "int":
            out[name] = trial.suggest_int(name, int(s["low"]), int(s["high"]), log=bool(s.get("log")),
                                          step=int(s.get("step", 1)))
        else:
            out[name] = trial.suggest_categorical(name, s["choices"])
    return out


def make_pruner(pruner: str, min_resource: int, reduction_factor: int, max_resource: int):
    import optuna

    if reduction_factor < 2 or min_resource < 1:
        raise NcmError(f"reduction factor must be >= 2 and minimum epochs >= 1 (got {reduction_factor}, {min_resource})")
    if pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=reduction_factor)
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                              reduction_factor=reduction_factor)
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


def open_study(out: str | Path, *, identity: dict[str, Any], pruner: Any = None, seed: int = 0,
               direction: str = "maximize", create: bool = True, sampler: Any = None):
    """Create or load the study in ``out/study.journal``; ``identity`` (data, task, space) must match."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(out).expanduser()
    storage = _storage(out)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if STUDY_NAME in names:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage,
                                  sampler=sampler or optuna.samplers.TPESampler(seed=seed), pruner=pruner)
        old = study.user_attrs.get("identity")
        if identity and old is not None and old != json.loads(json.dumps(identity)):
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise NcmError(f"the study here was made for another {', '.join(diff)}; use another output folder",
                           out / STUDY)
        return study
    if not create:
        raise NcmError("no study to resume here", out / STUDY)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction=direction,
                                sampler=sampler or optuna.samplers.TPESampler(seed=seed), pruner=pruner)
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


def run_trials(out: str | Path, objective: Callable[[Any], float], n_trials: int, seed: int = 0,
               pruner: Any = None, cancel: CancelFlag = None, on_trial: Callable[[Any], None] | None = None,
               sampler: Any = None) -> None:
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
    study.optimize(objective, n_trials=None, callbacks=[after], catch=(RuntimeError, MemoryError),
                   gc_after_trial=True)


def _worker(out: str, objective: Any, n_trials: int, seed: int, pruner: Any, sampler: Any = None) -> None:
    """Entry point of a worker process or dask task."""
    run_trials(out, objective, n_trials, seed, pruner, sampler=sampler)


def optimize(
    out: str | Path, objective: Callable[[Any], float], *, identity: dict[str, Any], n_trials: int = 20,
    pruner: Any = None, n_jobs: int = 1, scheduler: Any = None, resume: bool = False, seed: int = 0,
    direction: str = "maximize", cancel: CancelFlag = None, on_trial: Callable[[Any], None] | None = None,
    sampler: Any = None,
):
    """Run (or resume) the study in ``out`` with ``objective``; returns the study.

    ``sampler`` is an Optuna sampler (default: TPE seeded by ``seed``; a ``GridSampler`` runs a grid).

    ``objective`` must be picklable for ``n_jobs > 1`` and dask. ``identity`` describes what is tuned
    (data, task, space): a study made for something else is refused.
    """
    out = Path(out).expanduser()
    if n_trials < 1 or n_jobs < 1:
        raise NcmError(f"trials and jobs must be positive (got {n_trials}, {n_jobs})")
    if (out / STUDY).is_file() and (out / STUDY).stat().st_size and not resume:
        raise NcmError("a study exists in this folder: resume it (--resume) or choose another folder", out)
    study = open_study(out, identity=identity, pruner=pruner, seed=seed, direction=direction, sampler=sampler)
    if resume:
        requeue_interrupted(study)
    if scheduler is not None:
        from ncm_core.inference.distributed import connect

        with connect(scheduler) as client:  # trials as dask tasks, one trial loop per worker (per GPU)
            workers = client.scheduler_info().get("workers", {}).values()
            gpus = sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers)
            n = gpus or max(1, len(workers))
            extra = {"resources": {"GPU": 1}} if gpus else {}
            futures = [client.submit(_worker, str(out), objective, n_trials, seed + k, pruner, sampler, pure=False,
                                     key=f"ncm-tune-{k}-{time.time_ns()}", **extra) for k in range(n)]
            for f in futures:
                f.result()
    elif n_jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
            for f in [pool.submit(_worker, str(out), objective, n_trials, seed + k, pruner, sampler)
                      for k in range(n_jobs)]:
                f.result()
    else:
        run_trials(out, objective, n_trials, seed, pruner, cancel, on_trial, sampler)
    return open_study(out, identity=identity, pruner=pruner, seed=seed, direction=direction, sampler=sampler)


# ---------------------------------------------------------------------------------------- training trials
@dataclass
class TrainObjective:
    """One trial = one :func:`~ncm_core.training.classify.train` run with the trial's parameters; reports validation
    accuracy every epoch and stops when the pruner says so. Picklable (worker processes, dask)."""

    data: str
    out: str
    space: dict[str, dict[str, Any]]
    max_epochs: int
    fixed: dict[str, Any] = field(default_factory=dict)
    cancel: Any = None

    def __call__(self, trial: Any) -> float:
        import optuna

        from ncm_core.training.classify import train

        params = suggest(trial, self.space)
        trial_dir = Path(self.out) / "trials" / f"{trial.number:04d}"

        def on_epoch(rec: dict[str, float]) -> None:
            trial.report(rec["val_accuracy"], rec["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {rec['epoch']}")
            if is_cancelled(self.cancel):
                raise Cancelled()

        try:
            r = train(self.data, trial_dir, epochs=self.max_epochs, on_epoch=on_epoch, resume=False, ood=False,
                      **{**self.fixed, **params})
        except optuna.TrialPruned:
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise
        except Cancelled:
            trial.set_user_attr("cancelled", True)
            shutil.rmtree(trial_dir, ignore_errors=True)
            raise
        trial.set_user_attr("bundle", str(r.bundle))
        trial.set_user_attr("epochs_run", len(r.history))
        trial.set_user_attr("best_epoch", r.best_epoch)
        return r.best_val_accuracy


@dataclass
class TuneResult:
    out: Path
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    best_bundle: Path | None
    n_complete: int
    n_pruned: int
    n_failed: int
    epochs_run: int
    figures: list[Path] = field(default_factory=list)


def tune(
    data: str | Path, out: str | Path, *, space: str | Path | dict[str, Any] | None = None, n_trials: int = 20,
    max_epochs: int = 20, min_epochs: int = 1, reduction_factor: int = 3, pruner: str = "asha", n_jobs: int = 1,
    scheduler: Any = None, resume: bool = False, seed: int = 0, train_kwargs: dict[str, Any] | None = None,
    progress: ProgressFn | None = None, cancel: CancelFlag = None, on_trial: Callable[[Any], None] | None = None,
    sampler: Any = None, retrain: bool = False,
) -> TuneResult:
    """Tune ``train`` on ``data`` (class folders or a tile set) with ASHA; results in folder ``out``.

    ``train_kwargs`` are fixed ``train`` arguments (tile size, excluded rows, device, ...); the
    search space's parameters vary per trial. ``on_trial`` is called with each finished trial (in
    this process; the napari widget fills its table from it). ``retrain`` trains the best
    configuration once more on training and validation data together, for the best trial's best
    number of epochs, into ``out/best`` (instead of the best trial's own bundle). ``cancel`` stops the running trial
    after its current epoch; finished trials are kept and ``resume=True`` runs the stopped one again.
    Returns the best trial and counts; see the module docstring for the files written.
    """
    from optuna.trial import TrialState

    from ncm_core.data.tilesets import is_tile_set

    sp = load_space(space)
    src = Path(data).expanduser()
    if not src.is_dir():
        raise NcmError("dataset folder not found", src)
    if max_epochs < 1 or min_epochs > max_epochs:
        raise NcmError(f"epochs per trial must satisfy 1 <= minimum <= maximum (got {min_epochs}, {max_epochs})")
    fixed = dict(train_kwargs or {})
    clash = sorted(set(fixed) & set(sp))
    if clash:
        raise NcmError(f"{clash} are both fixed and in the search space; drop one")
    if is_tile_set(src):
        from ncm_core.data.tilesets import open_tile_set

        if not open_tile_set(src).split("val"):
            raise NcmError("the tile set has no validation tiles; tuning needs them to compare trials", src)
    out = Path(out).expanduser()
    identity = {"data": str(src.resolve()), "kind": "tiles" if is_tile_set(src) else "frames", "task": "classify",
                "space": sp, "max_epochs": max_epochs}
    pr = make_pruner(pruner, min_epochs, reduction_factor, max_epochs)
    objective = TrainObjective(str(src), str(out), sp, max_epochs, fixed, cancel if n_jobs == 1 and scheduler is None else None)
    done = [0]

    def finished(trial: Any) -> None:
        done[0] += 1
        report(progress, done[0], n_trials, f"trial {trial.number}: {trial.state.name.lower()}"
               + (f" {trial.value:.3f}" if trial.value is not None else ""))
        if on_trial is not None:
            on_trial(trial)

    try:
        study = optimize(out, objective, identity=identity, n_trials=n_trials, pruner=pr, n_jobs=n_jobs,
                         scheduler=scheduler, resume=resume, seed=seed, cancel=cancel, on_trial=finished,
                         sampler=sampler)
    except Cancelled:  # the finished trials stay in the study and in the report
        write_results(open_study(out, identity=identity, pruner=pr, seed=seed), out)
        raise
    retrained = None
    if retrain and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        from ncm_core.training.classify import train

        epochs = int(study.best_trial.user_attrs.get("best_epoch", max_epochs))
        report(progress, n_trials, n_trials, f"retraining the best configuration on train + validation ({epochs} epochs)")
        tmp = out / "best.retrain"
        shutil.rmtree(tmp, ignore_errors=True)
        train(src, tmp, epochs=epochs, holdout=False, resume=False, cancel=cancel,
              **{**fixed, **study.best_trial.params})
        retrained = (tmp, epochs)
    return write_results(study, out, retrained)


def write_results(study: Any, out: Path, retrained: tuple[Path, int] | None = None) -> TuneResult:
    """``best.json``, ``trials.csv``, the best bundle in ``out/best`` and the plots.

    ``retrained`` is a bundle of the best configuration trained on train + validation (and its
    epochs); it becomes ``out/best`` instead of a copy of the best trial's bundle.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    rows = []
    for t in trials:
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "epochs": len(t.intermediate_values), **{f"param_{k}": v for k, v in t.params.items()},
                     "requeued_from": t.user_attrs.get("requeued_from", ""), "bundle": t.user_attrs.get("bundle", ""),
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else ""})
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "trials.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    epochs = sum(len(t.intermediate_values) for t in trials)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    if not complete:
        return TuneResult(out, {}, float("nan"), -1, None, 0, counts[TrialState.PRUNED], counts[TrialState.FAIL], epochs)
    best = study.best_trial
    bundle = out / "best"
    if bundle.exists():
        shutil.rmtree(bundle)
    if retrained is not None:
        retrained[0].replace(bundle)
    elif best.user_attrs.get("bundle") and Path(best.user_attrs["bundle"]).is_dir():
        shutil.copytree(best.user_attrs["bundle"], bundle)
    else:
        bundle = None
    info = {"trial": best.number, "value": best.value, "params": best.params,
            "bundle": None if bundle is None else str(bundle), "complete": counts[TrialState.COMPLETE],
            "pruned": counts[TrialState.PRUNED], "failed": counts[TrialState.FAIL], "epochs_run": epochs}
    if retrained is not None:
        info.update(bundle_retrained_on="train + validation", retrain_epochs=retrained[1])
    (out / "best.json").write_text(json.dumps(info, indent=2))
    figs = plot_study(study, out)
    return TuneResult(out, dict(best.params), float(best.value), best.number, bundle, counts[TrialState.COMPLETE],
                      counts[TrialState.PRUNED], counts[TrialState.FAIL], epochs, figs)


def plot_study(study: Any, out: Path) -> list[Path]:
    """Optimisation history, intermediate values and parameter importances as PNG (those that apply)."""
    import warnings

    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # no GUI backend for these files (napari keeps its own)
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vm

    figs = []
    for name, fn in [("optimization_history", vm.plot_optimization_history),
                     ("intermediate_values", vm.plot_intermediate_values),
                     ("param_importances", vm.plot_param_importances)]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these plots experimental
                ax = fn(study)
        except Exception:  # e.g. importances need two finished trials with differing parameters
            continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7, 4.5)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figs.append(path)
    return figs
