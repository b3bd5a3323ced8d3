"""``ncm train`` and ``ncm tune``: classifiers, regressors and hyperparameter searches."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ncm_core.cli._args import BAND_HELP, band, common, list_, positive, progress, rows, size
from ncm_core.cli.segment import add_arguments as add_segment_arguments
from ncm_core.data.augment import AUGMENTATIONS
from ncm_core.errors import NcmError
from ncm_core.options import given
from ncm_core.training.config import (
    AMP_CHOICES,
    CLASSIFY_MONITORS,
    LOSSES,
    REGRESS_MODELS,
    REGRESS_MONITORS,
    RegressConfig,
    TrainConfig,
    TuneConfig,
)

C, R, T = TrainConfig, RegressConfig, TuneConfig


def _common_train(a: argparse.Namespace) -> dict[str, Any]:
    """Settings both tasks take; an option not given is left out, so the task's own default applies
    (see training/config.py)."""
    return given(
        architecture=a.arch,
        epochs=a.epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        optimizer=a.opt,
        weight_decay=a.weight_decay,
        scheduler=a.sched,
        val_fraction=a.val_fraction,
        augment="none" if a.no_augment else a.augment,
        normalize=a.normalize,
        pretrained=a.pretrained,
        patience=a.patience,
        monitor=a.monitor,
        amp=a.amp,
        resume=not a.restart,
        ood=not a.no_ood,
        seed=a.seed,
        device=a.device,
        overwrite=True if a.overwrite else None,
    )


def _kept(r: Any, metric: str, fmt: str, unit: str = "") -> str:
    """``best validation <metric> <value> (epoch k of n)``, or that the last epoch was kept without validation."""
    if not r.validated:
        return f"no validation data: the last epoch ({r.best_epoch} of {len(r.history)}) is kept"
    return f"best validation {metric} {format(r.best_value, fmt)}{unit} (epoch {r.best_epoch} of {len(r.history)})"


def cmd_train(a: argparse.Namespace) -> None:
    if a.task == "regress":
        return _train_regress(a)
    if a.task == "segment":
        from ncm_core.cli.segment import train_segment

        return train_segment(a)
    from ncm_core.training.classify import train

    if a.targets or a.folds:
        raise NcmError("--targets and --folds are for regression (--task regress)")
    if a.input_size is not None and a.input_size[0] != a.input_size[1]:
        raise NcmError(f"a classifier's input is square; got --input-size {a.input_size[0]}x{a.input_size[1]}")
    r = train(
        a.data,
        a.out,
        tile_size=a.tile,
        input_size=None if a.input_size is None else a.input_size[0],
        momentum=a.momentum,
        warmup_epochs=a.warmup_epochs,
        crops_per_image=a.crops,
        exclude_rows=a.exclude_rows,
        pixel_size=a.pixel_size,
        progress=progress("train", a.quiet),
        **given(
            recipe=a.recipe,
            standardize=a.standardize,
            balanced=a.balanced,
            label_smoothing=a.label_smoothing,
            ema=a.ema,
            ema_decay=a.ema_decay,
            tta=a.tta,
            context_um=a.context_um,
        ),
        **_common_train(a),
    )
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    _bar_note(r.bundle)
    print(f"bundle: {r.bundle}  {_kept(r, 'accuracy', '.1%')}, {r.seconds:.0f} s")
    _training_report(r.bundle)


def _training_report(bundle: Any) -> None:
    """The held-out frames' accuracy and per-class recall, the validation spread (and its warning), and
    the report's figures in BUNDLE/report."""
    from ncm_core.cli.predict import print_report
    from ncm_core.models.bundle import read_bundle_config
    from ncm_core.training.classify import write_training_report

    t = read_bundle_config(bundle).training
    rep = t.get("validation_report")
    if rep:
        f = rep["frames"]
        print(f"held-out frames: accuracy {f['accuracy']:.1%} ({f['n']} frames), crops {rep['crop_accuracy']:.1%}")
    print_report(rep["frames"]["per_class"] if rep else {}, t.get("validation_spread"), "frame")
    files = write_training_report(bundle, bundle / "report")
    print(f"report: {', '.join(str(f) for f in files)}")


def _bar_note(bundle: Any) -> None:
    """``ncm: note:`` the frames whose information bar training detected and left out."""
    import sys

    from ncm_core.data.infobar import bar_note
    from ncm_core.models.bundle import config_bundle

    t = config_bundle(bundle).config.training
    note = bar_note(t.get("info_bars") or {}, len(t.get("train_images", [])) + len(t.get("val_images", [])))
    if note:
        print(f"ncm: note: {note}", file=sys.stderr)


def _train_regress(a: argparse.Namespace) -> None:
    from ncm_core.evaluation.baselines import ranking_line
    from ncm_core.training.regression import cross_validate, train_regressor

    if not a.targets:
        raise NcmError("regression needs a targets CSV: --targets labels.csv (columns image,<target>,...)")
    if a.monitor not in (None, *REGRESS_MONITORS):
        raise NcmError(f"--monitor for regression is {' or '.join(REGRESS_MONITORS)}, not {a.monitor}")
    kw = given(
        min_lr=a.min_lr,
        warmup=a.warmup,
        l1=a.l1,
        l2=a.l2,
        loss=a.loss,
        max_shift=a.max_shift,
        max_rotate=a.max_rotate,
        adversarial=a.adversarial,
        input_size=a.input_size,
        groups=list_(a.group),
        target_columns=list_(a.target_columns) or None,
        split_by=a.split_by,
        model=a.model,
        curve=a.learning_curve,
        progress=progress("train", a.quiet),
        **_common_train(a),
    )
    if a.folds:
        r = cross_validate(a.data, a.targets, a.out, folds=a.folds, **kw)
        m = r.metrics
        print(
            f"{a.folds}-fold cross-validation grouped by {a.split_by or 'mosaic'}: MAPE {m['fold_mean']['mape']:.2f} "
            f"+- {m['fold_std']['mape']:.2f} %, R^2 {m['fold_mean']['r2']:.3f} (mean +- std over folds); "
            f"per mosaic MAPE {m['mosaics']['mape']:.2f} %, {r.seconds:.0f} s"
        )
        for n, t in m["crops"]["targets"].items():
            print(f"  {n}: MAPE {t['mape']:.2f} %  MAE {t['mae']:.3g}  R^2 {t['r2']:.3f}")
        print(ranking_line(m["baselines"]))
        iv = m["interval"]
        print(
            f"kept model: {r.model} ({r.folds[0].parent}/fold_1 ... fold_{a.folds}); held-out sections inside "
            f"their 90 % interval: {100 * iv['coverage']:.0f} %; predict with the fold ensemble: ncm predict "
            f"{r.out} MOSAIC OUT"
        )
        print(
            f"report: {r.out / 'metrics.json'}, predictions.csv, per_group.csv, baselines.csv, intervals.csv, "
            "learning_curve.csv/.png, scatter.png, rate_capability.png, ensemble.json"
        )
        return
    r = train_regressor(a.data, a.targets, a.out, **kw)
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    kept = _kept(r, "MAPE", ".2f", " %")
    if not r.history and r.validated:  # the descriptor model: a closed-form fit, no epochs
        kept = f"best validation MAPE {r.best_value:.2f} % (per mosaic): the descriptor model, fitted without epochs"
    elif r.history and r.best_epoch == 0:
        kept += ": no epoch beat the descriptor model the hybrid starts from"
    print(f"bundle: {r.bundle}  {kept}, {r.seconds:.0f} s")
    if r.baselines:
        print(f"validation mosaics, {ranking_line(r.baselines)} ({r.bundle / 'baselines.csv'})")


def cmd_tune(a: argparse.Namespace) -> None:
    from ncm_core.training.tune import tune

    fixed = {
        k: v
        for k, v in dict(
            architecture=a.arch,
            tile_size=a.tile,
            exclude_rows=a.exclude_rows,
            crops_per_image=a.crops,
            device=a.device,
            seed=a.seed,
        ).items()
        if v is not None
    }
    r = tune(
        a.data,
        a.out,
        space=a.space,
        n_trials=a.trials,
        max_epochs=a.max_epochs,
        min_epochs=a.min_epochs,
        reduction_factor=a.reduction_factor,
        pruner=a.pruner,
        n_jobs=a.jobs,
        scheduler=a.dask_scheduler,
        resume=a.resume,
        seed=a.seed,
        train_kwargs=fixed,
        retrain=a.retrain,
        progress=progress("tune", a.quiet),
    )
    print(f"trials: {r.n_complete} complete, {r.n_pruned} pruned, {r.n_failed} failed; {r.epochs_run} epochs in all")
    if r.best_bundle is None:
        print("no trial finished; nothing to report")
        return
    print(f"best: trial {r.best_trial}, validation accuracy {r.best_value:.1%}, {json.dumps(r.best_params)}")
    print(f"best bundle: {r.best_bundle}; report: {r.out / 'best.json'}, {r.out / 'trials.csv'}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``ncm`` parser."""
    t = sub.add_parser("train", help="train a classifier from class folders of frames or a tile set")
    t.add_argument("data", help="folder with one sub-folder of frames per class, or a tile set ('ncm crops')")
    t.add_argument("out", help="bundle folder to write (an interrupted run resumes from its checkpoint there)")
    t.add_argument(
        "--task",
        choices=["classify", "regress", "segment"],
        default="classify",
        help="classify tiles (class folders, tile sets), regress values of cross-section crops, or segment "
        "phases pixel by pixel (images with <stem>_labels images)",
    )
    t.add_argument("--arch", help=f"timm architecture (default {C.architecture}; regress: {R.architecture})")
    t.add_argument("--tile", type=positive, help="tile size in image pixels (default: the tile set's, or 96)")
    t.add_argument(
        "--input-size",
        type=size,
        help="model input size, N or HxW (default: the tile or crop size; "
        "regress: e.g. 56x168 to train on 4x smaller copies of 224x672 crops)",
    )
    t.add_argument("--epochs", type=positive, help=f"default {C.epochs} (regress: {R.epochs})")
    t.add_argument("--batch-size", type=positive, help=f"default {C.batch_size} (regress: {R.batch_size})")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default {C.lr:g}; regress: {R.lr:g})")
    t.add_argument(
        "--opt",
        help=f"timm optimizer name (adam, adamw, sgd, lookahead_radam, ...); default "
        f"{C.optimizer} (regress: {R.optimizer})",
    )
    t.add_argument("--momentum", type=float, help=f"momentum for SGD (default {C.momentum})")
    t.add_argument(
        "--weight-decay",
        type=float,
        help=f"optimizer weight decay (default {C.weight_decay}; regress: {R.weight_decay:g})",
    )
    t.add_argument("--sched", help=f"timm scheduler (cosine, step, plateau, ...; default {C.scheduler})")
    t.add_argument("--warmup-epochs", type=int, help=f"default {C.warmup_epochs}")
    t.add_argument(
        "--val-fraction",
        type=float,
        help="share of images (regress: mosaics) held out for "
        f"validation and early stopping (default {C.val_fraction}; regress: {R.val_fraction}); 0: "
        "none, the last epoch is kept",
    )
    t.add_argument("--crops", type=positive, help=f"random crops per image per epoch (default {C.crops_per_image})")
    t.add_argument(
        "--exclude-rows", type=band, help=f"rows of each frame to leave out: {BAND_HELP} (default {C.exclude_rows})"
    )
    t.add_argument(
        "--augment",
        help=f"classify: {', '.join(AUGMENTATIONS['classify'])} (default: the recipe's, all for generalise, "
        "flip,rot90 for basic) or none; "
        f"regress: {', '.join(AUGMENTATIONS['regress'])} (default: all) or none",
    )
    t.add_argument("--no-augment", action="store_true", help="same as --augment none")
    t.add_argument("--normalize", action="store_true", help="standardise inputs by the training set's mean/std")
    t.add_argument("--pretrained", help="local weights file (.safetensors) to start from")
    t.add_argument(
        "--patience", type=positive, help=f"early-stopping patience in epochs (default: off; regress: {R.patience})"
    )
    t.add_argument(
        "--monitor",
        choices=list(dict.fromkeys([*CLASSIFY_MONITORS, *REGRESS_MONITORS])),
        help=f"validation metric that picks the best epoch (default {C.monitor}; regress: {R.monitor})",
    )
    t.add_argument("--amp", choices=AMP_CHOICES, help=f"mixed precision (default {C.amp}: on for GPUs)")
    t.add_argument("--no-ood", action="store_true", help="do not fit the out-of-distribution detector")
    t.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUT and start again")
    t.add_argument(
        "--overwrite", action="store_true", help="train into OUT even when it holds a finished bundle (replaced)"
    )
    g = t.add_argument_group("regression (--task regress)")
    g.add_argument("--targets", help="CSV with columns image,<target>,... (one row per mosaic or image)")
    g.add_argument("--target-columns", help="comma-separated target columns (default: all but image and groups)")
    g.add_argument(
        "--group",
        help="comma-separated grouping columns of the CSV (e.g. porosity): not targets; "
        "used for grouped splits and error reports",
    )
    g.add_argument(
        "--split-by",
        help="keep crops with the same value of this column together in splits (default: the source mosaic)",
    )
    g.add_argument(
        "--folds",
        type=int,
        default=0,
        help="k-fold cross-validation grouped by mosaic (e.g. 5); OUT then gets fold_1..fold_k bundles and the reports",
    )
    g.add_argument(
        "--model",
        choices=REGRESS_MODELS,
        default=R.model,
        help="cnn, descriptors (ridge on crop descriptors), hybrid (CNN features + descriptors) or auto: all "
        f"three compared by grouped cross-validation, the best kept (default {R.model})",
    )
    g.add_argument(
        "--learning-curve",
        default=",".join(R.curve),
        help="models of the cross-validation learning curve: descriptors (cheap), cnn, hybrid (one training run "
        f"per point on the first folds), comma-separated (default {','.join(R.curve)})",
    )
    g.add_argument("--loss", choices=LOSSES, default=R.loss)
    g.add_argument("--min-lr", type=float, default=R.min_lr, help="learning rate at the start of warm-up and the end")
    g.add_argument(
        "--warmup", type=float, default=R.warmup, help=f"share of the steps spent warming up (default {R.warmup})"
    )
    g.add_argument("--l1", type=float, default=R.l1, help="L1 weight penalty")
    g.add_argument("--l2", type=float, default=R.l2, help="L2 weight penalty")
    g.add_argument(
        "--adversarial",
        type=float,
        default=R.adversarial,
        help="FGSM training with noise up to this %% of the mean pixel value (0 = off)",
    )
    g.add_argument("--max-shift", type=float, default=R.max_shift, help="largest random shift, share of the crop size")
    g.add_argument("--max-rotate", type=float, default=R.max_rotate, help="largest random rotation in degrees")
    t.add_argument("--pixel-size", type=float, help="micrometres per pixel of the training images")
    g = t.add_argument_group("training recipe (classify; see docs/sem-classification.md)")
    g.add_argument(
        "--recipe",
        choices=["generalise", "basic"],
        help=f"generalise: per-tile standardisation, session-look augmentation, class-balanced sampling, "
        f"label smoothing, weight averaging (EMA) and test-time augmentation; basic: none of them "
        f"(default {C.recipe}); the options below override single parts",
    )
    on_off = argparse.BooleanOptionalAction
    g.add_argument("--standardize", action=on_off, help="map each tile by its own 1st/99th percentiles")
    g.add_argument("--balanced", action=on_off, help="draw every class equally often per epoch")
    g.add_argument("--label-smoothing", type=float, help="share of the target spread over other classes (0.1)")
    g.add_argument("--ema", action=on_off, help="validate and keep an exponential moving average of the weights")
    g.add_argument("--ema-decay", type=float, help="EMA decay per step (default: an average over about one epoch)")
    g.add_argument("--tta", action=on_off, help="evaluation averages tiles over flips and a quarter turn")
    g.add_argument(
        "--context-um",
        type=float,
        help="crop width in micrometres (frames): cut at CONTEXT/pixel size px, resized to --input-size; "
        "the pixel size from --pixel-size or the frames' metadata",
    )
    t.add_argument("--seed", type=int, default=C.seed)
    add_segment_arguments(t)
    common(t)
    t.set_defaults(func=cmd_train)
    u = sub.add_parser("tune", help="tune training hyperparameters with ASHA (Optuna)")
    u.add_argument("data", help="class folders of frames, or a tile set")
    u.add_argument("out", help="study folder: study.journal, trials/, best/, best.json, trials.csv, plots")
    u.add_argument("--space", help="search space (YAML or JSON); default: the SEM study's (see docs/tuning.md)")
    u.add_argument(
        "--trials", type=positive, default=T.n_trials, help=f"complete + pruned trials in all (default {T.n_trials})"
    )
    u.add_argument("--max-epochs", type=positive, default=T.max_epochs, help="epochs of a trial that is never pruned")
    u.add_argument("--min-epochs", type=positive, default=T.min_epochs, help="epochs before the first pruning decision")
    u.add_argument("--reduction-factor", type=positive, default=T.reduction_factor)
    u.add_argument("--pruner", choices=["asha", "hyperband", "none"], default=T.pruner)
    u.add_argument("--jobs", type=positive, default=T.n_jobs, help="trials in parallel worker processes")
    u.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="run trials on dask workers: local:N or "
        "tcp://host:8786 (the study file must be on a file system all workers share)",
    )
    u.add_argument("--resume", action="store_true", help="continue the study in OUT (killed trials run again)")
    u.add_argument(
        "--retrain",
        action="store_true",
        help="train the best configuration again on training + "
        "validation data into OUT/best (default: keep the best trial's own bundle)",
    )
    u.add_argument("--arch", help="fixed architecture (unless the space varies it)")
    u.add_argument("--tile", type=positive, help="fixed tile size")
    u.add_argument("--crops", type=positive, help="random crops per frame and epoch (frames)")
    u.add_argument("--exclude-rows", type=rows, help="band of rows to ignore, e.g. --exclude-rows=-32:")
    u.add_argument("--seed", type=int, default=T.seed)
    common(u)
    u.set_defaults(func=cmd_tune)
