"""Tuning with ASHA (Optuna): search spaces, pruning, a killed process resumed, dask workers, real trials."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from ncm_core.errors import NcmError  # noqa: E402
from ncm_core.training.tune import DEFAULT_SPACE, load_space, make_pruner, optimize, tune  # noqa: E402

TOY = """
import math, sys, time
import optuna
from ncm_core.training.tune import make_pruner, optimize

def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    quality = 1 - abs(math.log10(lr) + 2) / 3            # best at lr = 1e-2
    for epoch in range(1, 10):
        trial.report(quality * (1 - math.exp(-epoch / 2)), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
        time.sleep(float(sys.argv[3]))
    return quality * (1 - math.exp(-9 / 2))

optimize(sys.argv[1], objective, identity={"toy": 1}, n_trials=int(sys.argv[2]), resume=True,
         pruner=make_pruner("asha", 1, 3, 9))
"""


def toy_curves(trial):
    import math

    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    quality = 1 - abs(math.log10(lr) + 2) / 3
    for epoch in range(1, 10):
        trial.report(quality * (1 - math.exp(-epoch / 2)), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return quality * (1 - math.exp(-9 / 2))


def test_default_space_is_the_studys():
    sp = load_space(None)
    assert sp["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True} and sp == DEFAULT_SPACE
    assert {"batch_size", "normalize", "augment"} <= set(sp)


@pytest.mark.parametrize(
    "space, words",
    [
        ({}, "empty"),
        ({"learning_rate": {"type": "float", "low": 1, "high": 2}}, "unknown parameter 'learning_rate'"),
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01}}, "must be below high"),
        ({"lr": {"type": "float", "low": 0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"batch_size": {"type": "categorical", "choices": []}}, "non-empty list"),
        ({"lr": {"type": "normal"}}, "float, int or categorical"),
    ],
)
def test_bad_search_spaces(space, words):
    with pytest.raises(NcmError, match=words):
        load_space(space)


def test_space_from_a_yaml_file(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text(
        "lr: {type: float, low: 0.001, high: 0.01, log: true}\nbatch_size: {type: categorical, choices: [8, 16]}\n"
    )
    assert load_space(f)["batch_size"]["choices"] == [8, 16]
    f.write_text("lr: [unclosed\n")
    with pytest.raises(NcmError, match="space.yaml: cannot parse"):
        load_space(f)


def test_asha_prunes_trials_that_fall_behind(tmp_path):
    study = optimize(tmp_path / "s", toy_curves, identity={"toy": 1}, n_trials=15, pruner=make_pruner("asha", 1, 3, 9))
    states = [t.state for t in study.trials]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert states.count(optuna.trial.TrialState.COMPLETE) + len(pruned) == 15
    assert pruned and all(len(t.intermediate_values) < 9 for t in pruned)  # stopped early
    assert abs(study.best_params["lr"] - 1e-2) < 0.05


def test_a_resumed_study_reports_its_earlier_trials_first(tmp_path):
    """The Tune dock's table after Cancel and Resume: the earlier trials (the best one too) are listed."""
    first = [t.number for t in optimize(tmp_path / "s", toy_curves, identity={"toy": 1}, n_trials=3).trials]
    seen = []
    optimize(tmp_path / "s", toy_curves, identity={"toy": 1}, n_trials=5, resume=True, on_trial=seen.append)
    numbers = [t.number for t in seen]
    assert numbers[:3] == first == [0, 1, 2] and sorted(numbers) == list(range(5))


def test_a_study_from_other_data_is_refused(tmp_path):
    optimize(tmp_path / "s", toy_curves, identity={"data": "a"}, n_trials=2)
    with pytest.raises(NcmError, match="a study exists"):
        optimize(tmp_path / "s", toy_curves, identity={"data": "a"}, n_trials=3)
    with pytest.raises(NcmError, match="made for another data"):
        optimize(tmp_path / "s", toy_curves, identity={"data": "b"}, n_trials=3, resume=True)


def test_unwritable_storage_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(NcmError, match="cannot write the study file"):
        optimize(tmp_path / "file" / "s", toy_curves, identity={}, n_trials=1)


def test_resume_after_killing_the_process_mid_trial(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(TOY)
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p = subprocess.Popen(
        [sys.executable, str(script), str(out), "8", "0.25"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for >= 2 finished trials and one running
            time.sleep(0.5)
            if (out / "study.journal").is_file():
                s = optuna.load_study(study_name="ncm", storage=_storage(out))
                st = [t.state for t in s.get_trials(deepcopy=False)]
                finished = sum(x in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for x in st)
                if finished >= 2 and st and st[-1] == optuna.trial.TrialState.RUNNING:
                    break
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=30)
    before = optuna.load_study(study_name="ncm", storage=_storage(out)).get_trials()
    killed = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert len(killed) == 1 and killed[0].intermediate_values  # killed mid-trial
    finished = {t.number: (t.state, t.params) for t in before if t.state != optuna.trial.TrialState.RUNNING}

    r = subprocess.run(
        [sys.executable, str(script), str(out), "8", "0"], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    after = optuna.load_study(study_name="ncm", storage=_storage(out)).get_trials()
    for n, (state, params) in finished.items():  # nothing finished is lost or changed
        assert after[n].state == state and after[n].params == params
    assert after[killed[0].number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in after if t.user_attrs.get("requeued_from") == killed[0].number]
    assert len(retries) == 1 and retries[0].params == killed[0].params  # re-queued, run once
    assert retries[0].state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    counted = [t for t in after if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) == 8


def _storage(out):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(out / "study.journal")))


def test_a_two_worker_local_cluster_runs_one_study(tmp_path):
    def objective(trial):  # defined here: cloudpickle ships it to the workers by value
        import os as _os
        import time as _time

        x = trial.suggest_float("x", -3, 3)
        trial.set_user_attr("pid", _os.getpid())
        _time.sleep(0.5)  # one worker alone would need 6 s: the other has long started by then
        return -((x - 1) ** 2)

    study = optimize(tmp_path / "s", objective, identity={"toy": 2}, n_trials=12, scheduler="local:2")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) >= 12 and len({t.user_attrs["pid"] for t in done}) == 2  # both workers ran trials
    assert len({t.number for t in done}) == len(done)


def test_unreachable_dask_scheduler_is_one_line(tmp_path):
    with pytest.raises(NcmError, match="cannot reach the dask scheduler"):
        optimize(tmp_path / "s", toy_curves, identity={}, n_trials=1, scheduler="tcp://127.0.0.1:9")


def test_tune_real_training_writes_best_bundle_and_report(sem_folders, tmp_path):
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [8, 16]},
    }
    r = tune(
        sem_folders,
        tmp_path / "t",
        space=space,
        n_trials=3,
        max_epochs=2,
        min_epochs=1,
        train_kwargs=dict(architecture="resnet10t", tile_size=32, crops_per_image=6, exclude_rows=(-16, None)),
    )
    assert r.n_complete + r.n_pruned == 3 and r.best_bundle is not None
    from ncm_core.models.bundle import load_bundle

    b = load_bundle(r.best_bundle)
    assert b.config.training["lr"] == pytest.approx(r.best_params["lr"])
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["params"] == r.best_params and best["trial"] == r.best_trial
    rows = (tmp_path / "t" / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,value") and len(rows) == 4
    assert (tmp_path / "t" / "optimization_history.png").is_file()

    # the final model: the best configuration trained again on train + validation frames
    r2 = tune(
        sem_folders,
        tmp_path / "t",
        space=space,
        n_trials=3,
        max_epochs=2,
        resume=True,
        retrain=True,
        train_kwargs=dict(architecture="resnet10t", tile_size=32, crops_per_image=6, exclude_rows=(-16, None)),
    )
    t2 = load_bundle(r2.best_bundle).config.training
    assert t2["holdout"] is False and t2["val_images"] == [] and len(t2["train_images"]) == 9
    assert json.loads((tmp_path / "t" / "best.json").read_text())["bundle_retrained_on"] == "train + validation"
    with pytest.raises(NcmError, match="both fixed and in the search space"):
        tune(sem_folders, tmp_path / "t2", space=space, train_kwargs={"lr": 0.1})


def test_ncm_tune_command_and_its_errors(sem_folders, tmp_path):
    from .test_cli import ncm

    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}))
    r = ncm(
        "tune",
        sem_folders,
        tmp_path / "t",
        "--space",
        space,
        "--trials",
        2,
        "--max-epochs",
        1,
        "--arch",
        "resnet10t",
        "--tile",
        32,
        "--crops",
        4,
        "--exclude-rows=-16:",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    import re

    complete, pruned = map(int, re.search(r"trials: (\d+) complete, (\d+) pruned", r.stdout).groups())
    assert complete + pruned == 2 and complete >= 1 and "best bundle:" in r.stdout
    assert "A new study created" not in r.stderr  # optuna's info logging stays quiet
    r = ncm("tune", sem_folders, tmp_path / "t", "--space", space, "--trials", 2, "-q")
    assert r.returncode == 2 and "a study exists in this folder" in r.stderr.strip().splitlines()[-1]
    space.write_text(json.dumps({"momentum": {"type": "float", "low": 0.9, "high": 0.5}}))
    r = ncm("tune", sem_folders, tmp_path / "t3", "--space", space, "-q")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "space.json: parameter 'momentum': low (0.9) must be below high (0.5)" in r.stderr


def test_worker_processes_share_one_study(tmp_path):
    study = optimize(
        tmp_path / "s", toy_curves, identity={"toy": 3}, n_trials=8, n_jobs=2, pruner=make_pruner("asha", 1, 3, 9)
    )
    counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) >= 8 and len({t.number for t in study.trials}) == len(study.trials)


def test_tuning_refuses_a_run_without_validation_in_one_line(sem_folders, tmp_path):
    """Trials are compared by validation accuracy: val_fraction 0 (no validation) is refused, not run."""
    with pytest.raises(NcmError, match="tuning compares trials by their validation accuracy; val_fraction must be"):
        tune(sem_folders, tmp_path / "t", train_kwargs={"val_fraction": 0})
    with pytest.raises(NcmError, match="unknown option 'n_trial' for TuneConfig; did you mean 'n_trials'"):
        tune(sem_folders, tmp_path / "t", n_trial=3)
    assert not (tmp_path / "t").exists()


def test_study_plots_leave_matplotlibs_style_alone(tmp_path):
    """optuna's plots switch matplotlib to the ggplot style for the whole process (the napari docks' plots
    turned grey after a Tune run); plot_study restores the settings."""
    import matplotlib
    import optuna

    from ncm_core.training.tune_plots import plot_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=4)
    before = dict(matplotlib.rcParams)
    assert plot_study(study, tmp_path)  # the figures are written
    assert matplotlib.rcParams["axes.facecolor"] == before["axes.facecolor"]
    assert dict(matplotlib.rcParams) == before
