"""Hyperparameter tuning with ASHA (Optuna), embedded by default, resumable, and on dask when asked.

* **ASHA** is Optuna's :class:`~optuna.pruners.SuccessiveHalvingPruner` (asynchronous successive
  halving; :class:`~optuna.pruners.HyperbandPruner` as an option). Each trial trains with
  :func:`ncm_core.training.classify.train` and reports its validation accuracy after every epoch; the pruner
  stops trials that fall behind at each rung.
* **Search space** (:mod:`ncm_core.training.tune_space`): a YAML or JSON file (or dict) of
  parameters of ``train``; the default (:data:`DEFAULT_SPACE`) follows the SEM study: learning rate
  log-uniform 1e-4..1e-1, batch size, normalisation on/off, augmentation on/off, plus weight decay and
  model size.
* **Storage** (:mod:`ncm_core.training.study`): the study lives in ``out/study.journal`` (Optuna's
  JournalStorage on a file: safe for several processes, unlike SQLite). ``resume=True`` continues
  it. A trial whose process was killed stays RUNNING in the journal; on resume it is marked FAIL and
  its parameters are queued again, so no finished trial is lost or repeated. Resume one study from
  one ``ncm tune`` at a time.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncm_core.errors import Cancelled, NcmError
from ncm_core.options import merge_options
from ncm_core.outputs import check_inputs, remove
from ncm_core.progress import CancelFlag, ProgressFn, is_cancelled, report
from ncm_core.training.config import TrainConfig, TuneConfig
from ncm_core.training.study import STUDY, STUDY_NAME, StudyConfig, make_pruner, open_study, optimize
from ncm_core.training.tune_plots import plot_study
from ncm_core.training.tune_space import DEFAULT_SPACE, TUNABLE, load_space, suggest

__all__ = [
    "DEFAULT_SPACE",
    "STUDY",
    "STUDY_NAME",
    "TUNABLE",
    "StudyConfig",
    "TrainObjective",
    "TuneConfig",
    "TuneResult",
    "load_space",
    "make_pruner",
    "open_study",
    "optimize",
    "plot_study",
    "suggest",
    "tune",
    "write_results",
]


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
            r = train(
                self.data,
                trial_dir,
                epochs=self.max_epochs,
                on_epoch=on_epoch,
                resume=False,
                ood=False,
                cancel=self.cancel,  # checked between batches: a Cancel takes effect within seconds
                **{**self.fixed, **params},
            )
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
    data: str | Path,
    out: str | Path,
    config: TuneConfig | None = None,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFlag = None,
    on_trial: Callable[[Any], None] | None = None,
    **overrides: Any,
) -> TuneResult:
    """Tune ``train`` on ``data`` (class folders or a tile set) with ASHA; results in folder ``out``.

    Settings: ``config`` or keyword ``overrides`` of :class:`~ncm_core.training.config.TuneConfig`.
    ``train_kwargs`` are fixed ``train`` arguments (tile size, excluded rows, device, ...); the
    search space's parameters vary per trial. ``on_trial`` is called with each finished trial (in
    this process; the napari widget fills its table from it). ``retrain`` trains the best
    configuration once more on training and validation data together, for the best trial's best
    number of epochs, into ``out/best`` (instead of the best trial's own bundle). ``cancel`` stops the
    running trial after its current epoch; finished trials are kept and ``resume=True`` runs the
    stopped one again. Returns the best trial and counts; see the module docstring for the files written.
    """
    from optuna.trial import TrialState

    from ncm_core.data.tilesets import is_tile_set, open_tile_set

    c = merge_options(TuneConfig, config, overrides)
    sp = load_space(c.space)
    src = Path(data).expanduser()
    if not src.is_dir():
        raise NcmError("dataset folder not found", src)
    c.validate()
    n_trials, max_epochs, seed = c.n_trials, c.max_epochs, c.seed
    fixed = dict(c.train_kwargs or {})
    clash = sorted(set(fixed) & set(sp))
    if clash:
        raise NcmError(f"{clash} are both fixed and in the search space; drop one")
    if is_tile_set(src) and not open_tile_set(src).split("val"):
        raise NcmError("the tile set has no validation tiles; tuning needs them to compare trials", src)
    out = Path(out).expanduser()
    check_inputs(out, (src, c.space if isinstance(c.space, (str, Path)) else None))
    if out.exists() and not out.is_dir():
        raise NcmError("the output is a file, not a folder for a study", out)
    merge_options(TrainConfig, None, fixed).validate()  # a bad fixed setting: one line now, not in every trial
    identity = {
        "data": str(src.resolve()),
        "kind": "tiles" if is_tile_set(src) else "frames",
        "task": "classify",
        "space": sp,
        "max_epochs": max_epochs,
    }
    pr = make_pruner(c.pruner, c.min_epochs, c.reduction_factor, max_epochs)
    local = c.n_jobs == 1 and c.scheduler is None
    objective = TrainObjective(str(src), str(out), sp, max_epochs, fixed, cancel if local else None)
    done = [0]

    def finished(trial: Any) -> None:
        done[0] += 1
        report(
            progress,
            done[0],
            n_trials,
            f"trial {trial.number}: {trial.state.name.lower()}"
            + (f" {trial.value:.3f}" if trial.value is not None else ""),
        )
        if on_trial is not None:
            on_trial(trial)

    study_config = StudyConfig(
        n_trials=n_trials,
        pruner=pr,
        n_jobs=c.n_jobs,
        scheduler=c.scheduler,
        resume=c.resume,
        seed=seed,
        sampler=c.sampler,
    )
    try:
        study = optimize(out, objective, study_config, identity=identity, cancel=cancel, on_trial=finished)
    except Cancelled:  # the finished trials stay in the study and in the report
        write_results(open_study(out, identity=identity, pruner=pr, seed=seed), out)
        raise
    retrained = None
    if c.retrain and any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        from ncm_core.training.classify import train

        epochs = int(study.best_trial.user_attrs.get("best_epoch", max_epochs))
        report(
            progress, n_trials, n_trials, f"retraining the best configuration on train + validation ({epochs} epochs)"
        )
        tmp = out / "best.retrain"
        remove(tmp)
        train(
            src, tmp, epochs=epochs, holdout=False, resume=False, cancel=cancel, **{**fixed, **study.best_trial.params}
        )
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
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "epochs": len(t.intermediate_values),
                **{f"param_{k}": v for k, v in t.params.items()},
                "requeued_from": t.user_attrs.get("requeued_from", ""),
                "bundle": t.user_attrs.get("bundle", ""),
                "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                if t.datetime_complete and t.datetime_start
                else "",
            }
        )
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / "trials.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    epochs = sum(len(t.intermediate_values) for t in trials)
    counts = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    if not complete:
        return TuneResult(
            out, {}, float("nan"), -1, None, 0, counts[TrialState.PRUNED], counts[TrialState.FAIL], epochs
        )
    best = study.best_trial
    bundle = out / "best"
    remove(bundle)
    if retrained is not None:
        retrained[0].replace(bundle)
    elif best.user_attrs.get("bundle") and Path(best.user_attrs["bundle"]).is_dir():
        shutil.copytree(best.user_attrs["bundle"], bundle)
    else:
        bundle = None
    info = {
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "bundle": None if bundle is None else str(bundle),
        "complete": counts[TrialState.COMPLETE],
        "pruned": counts[TrialState.PRUNED],
        "failed": counts[TrialState.FAIL],
        "epochs_run": epochs,
    }
    if retrained is not None:
        info.update(bundle_retrained_on="train + validation", retrain_epochs=retrained[1])
    (out / "best.json").write_text(json.dumps(info, indent=2))
    figs = plot_study(study, out)
    return TuneResult(
        out,
        dict(best.params),
        float(best.value),
        best.number,
        bundle,
        counts[TrialState.COMPLETE],
        counts[TrialState.PRUNED],
        counts[TrialState.FAIL],
        epochs,
        figs,
    )
