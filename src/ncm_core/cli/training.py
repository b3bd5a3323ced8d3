"""``ncm train`` and ``ncm tune``: classifiers, regressors and hyperparameter searches."""

from __future__ import annotations

import argparse

import json

from ncm_core.cli._args import common, list_, positive, progress, rows, size
from ncm_core.errors import NcmError


def cmd_train(a: argparse.Namespace) -> None:
    if a.task == "regress":
        return _train_regress(a)
    from ncm_core.training.classify import train

    if a.targets or a.folds:
        raise NcmError("--targets and --folds are for regression (--task regress)")
    if a.input_size is not None and a.input_size[0] != a.input_size[1]:
        raise NcmError(f"a classifier's input is square; got --input-size {a.input_size[0]}x{a.input_size[1]}")
    r = train(a.data, a.out, architecture=a.arch or "efficientnet_b0", tile_size=a.tile,
              input_size=None if a.input_size is None else a.input_size[0], epochs=a.epochs or 10,
              batch_size=a.batch_size or 32, lr=a.lr, optimizer=a.opt or "adamw", momentum=a.momentum,
              weight_decay=0.01 if a.weight_decay is None else a.weight_decay,
              scheduler=a.sched, warmup_epochs=a.warmup_epochs, val_fraction=a.val_fraction or 0.25,
              crops_per_image=a.crops, exclude_rows=a.exclude_rows,
              augment="none" if a.no_augment else a.augment or "flip,rot90", normalize=a.normalize,
              pretrained=a.pretrained, patience=a.patience, monitor=a.monitor or "accuracy", amp=a.amp,
              resume=not a.restart, ood=not a.no_ood,
              seed=a.seed, device=a.device, pixel_size=a.pixel_size, progress=progress("train", a.quiet))
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    print(f"bundle: {r.bundle}  best validation accuracy {r.best_val_accuracy:.1%} (epoch {r.best_epoch} of "
          f"{len(r.history)}), {r.seconds:.0f} s")


def _train_regress(a: argparse.Namespace) -> None:
    from ncm_core.training.regression import cross_validate, train_regressor

    if not a.targets:
        raise NcmError("regression needs a targets CSV: --targets labels.csv (columns image,<target>,...)")
    if a.monitor not in (None, "loss", "mape"):
        raise NcmError(f"--monitor for regression is mape or loss, not {a.monitor}")
    kw = dict(architecture=a.arch or "ncm_vgg", epochs=a.epochs or 100, batch_size=a.batch_size or 38, lr=a.lr,
              min_lr=a.min_lr, warmup=a.warmup, optimizer=a.opt or "lookahead_radam", scheduler=a.sched,
              weight_decay=a.weight_decay or 0.0, l1=a.l1, l2=a.l2, loss=a.loss, monitor=a.monitor or "mape",
              patience=a.patience or 20, augment="none" if a.no_augment else (a.augment or "shift,rotate,hflip"),
              max_shift=a.max_shift, max_rotate=a.max_rotate, adversarial=a.adversarial, normalize=a.normalize,
              pretrained=a.pretrained, amp=a.amp, ood=not a.no_ood, device=a.device)
    common_kw = dict(input_size=a.input_size, groups=list_(a.group), target_columns=list_(a.target_columns) or None,
                     split_by=a.split_by, val_fraction=a.val_fraction or 0.2, seed=a.seed,
                     progress=progress("train", a.quiet))
    if a.folds:
        r = cross_validate(a.data, a.targets, a.out, folds=a.folds, resume=not a.restart, **common_kw, **kw)
        m = r.metrics
        print(f"{a.folds}-fold cross-validation grouped by {a.split_by or 'mosaic'}: MAPE {m['fold_mean']['mape']:.2f} "
              f"+- {m['fold_std']['mape']:.2f} %, R^2 {m['fold_mean']['r2']:.3f} (mean +- std over folds); "
              f"per mosaic MAPE {m['mosaics']['mape']:.2f} %, {r.seconds:.0f} s")
        for n, t in m["crops"]["targets"].items():
            print(f"  {n}: MAPE {t['mape']:.2f} %  MAE {t['mae']:.3g}  R^2 {t['r2']:.3f}")
        print(f"report: {r.out / 'metrics.json'}, predictions.csv, per_group.csv, scatter.png, rate_capability.png; "
              f"bundles: {r.out}/fold_1 ... fold_{a.folds}")
        return
    r = train_regressor(a.data, a.targets, a.out, resume=not a.restart, **common_kw, **kw)
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    print(f"bundle: {r.bundle}  best validation MAPE {r.best_val_mape:.2f} % (epoch {r.best_epoch} of "
          f"{len(r.history)}), {r.seconds:.0f} s")


def cmd_tune(a: argparse.Namespace) -> None:
    from ncm_core.training.tune import tune

    fixed = {k: v for k, v in dict(architecture=a.arch, tile_size=a.tile, exclude_rows=a.exclude_rows,
                                   crops_per_image=a.crops, device=a.device, seed=a.seed).items() if v is not None}
    r = tune(a.data, a.out, space=a.space, n_trials=a.trials, max_epochs=a.max_epochs, min_epochs=a.min_epochs,
             reduction_factor=a.reduction_factor, pruner=a.pruner, n_jobs=a.jobs, scheduler=a.dask_scheduler,
             resume=a.resume, seed=a.seed, train_kwargs=fixed, retrain=a.retrain, progress=progress("tune", a.quiet))
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
    t.add_argument("--task", choices=["classify", "regress"], default="classify",
                   help="classify tiles (class folders, tile sets) or regress values of cross-section crops")
    t.add_argument("--arch", help="timm architecture (default efficientnet_b0; regress: ncm_vgg)")
    t.add_argument("--tile", type=positive, help="tile size in image pixels (default: the tile set's, or 96)")
    t.add_argument("--input-size", type=size, help="model input size, N or HxW (default: the tile or crop size; "
                   "regress: e.g. 56x168 to train on 4x smaller copies of 224x672 crops)")
    t.add_argument("--epochs", type=positive, help="default 10 (regress: 100)")
    t.add_argument("--batch-size", type=positive, help="default 32 (regress: 38)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--opt", help="timm optimizer name (adam, adamw, sgd, lookahead_radam, ...); default adamw "
                   "(regress: lookahead_radam)")
    t.add_argument("--momentum", type=float, default=0.9, help="momentum for SGD")
    t.add_argument("--weight-decay", type=float, help="optimizer weight decay (default 0.01; regress: 0)")
    t.add_argument("--sched", default="cosine", help="timm scheduler (cosine, step, plateau, ...)")
    t.add_argument("--warmup-epochs", type=int, default=1)
    t.add_argument("--val-fraction", type=float, help="share of images (regress: mosaics) held "
                   "out for validation and early stopping (default 0.25; regress: 0.2)")
    t.add_argument("--crops", type=positive, default=32, help="random crops per image per epoch")
    t.add_argument("--exclude-rows", type=rows, help="band of rows to ignore, e.g. --exclude-rows=-32: for a 32-row SEM info bar")
    t.add_argument("--augment", help="classify: flip, rot90, both (default) or none; regress: shift, rotate, "
                   "hflip, all three (default) or none")
    t.add_argument("--no-augment", action="store_true", help="same as --augment none")
    t.add_argument("--normalize", action="store_true", help="standardise inputs by the training set's mean/std")
    t.add_argument("--pretrained", help="local weights file (.safetensors) to start from")
    t.add_argument("--patience", type=positive, help="early-stopping patience in epochs (regress: default 20)")
    t.add_argument("--monitor", choices=["accuracy", "balanced_accuracy", "loss", "mape"],
                   help="validation metric that picks the best epoch (default accuracy; regress: mape)")
    t.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                   help="mixed precision (default auto: on for GPUs)")
    t.add_argument("--no-ood", action="store_true", help="do not fit the out-of-distribution detector")
    t.add_argument("--restart", action="store_true", help="ignore a checkpoint in OUT and start again")
    g = t.add_argument_group("regression (--task regress)")
    g.add_argument("--targets", help="CSV with columns image,<target>,... (one row per mosaic or image)")
    g.add_argument("--target-columns", help="comma-separated target columns (default: all but image and groups)")
    g.add_argument("--group", help="comma-separated grouping columns of the CSV (e.g. porosity): not targets; "
                   "used for grouped splits and error reports")
    g.add_argument("--split-by", help="keep crops with the same value of this column together in splits "
                   "(default: the source mosaic)")
    g.add_argument("--folds", type=int, default=0, help="k-fold cross-validation grouped by mosaic (e.g. 5); "
                   "OUT then gets fold_1..fold_k bundles and the reports")
    g.add_argument("--loss", choices=["mape", "mae", "mse", "huber"], default="mape")
    g.add_argument("--min-lr", type=float, default=1e-5, help="learning rate at the start of warm-up and the end")
    g.add_argument("--warmup", type=float, default=0.1, help="share of the steps spent warming up (default 0.1)")
    g.add_argument("--l1", type=float, default=0.0, help="L1 weight penalty")
    g.add_argument("--l2", type=float, default=0.0, help="L2 weight penalty")
    g.add_argument("--adversarial", type=float, default=0.0, help="FGSM training with noise up to this %% of the "
                   "mean pixel value (0 = off)")
    g.add_argument("--max-shift", type=float, default=0.1, help="largest random shift, share of the crop size")
    g.add_argument("--max-rotate", type=float, default=10.0, help="largest random rotation in degrees")
    t.add_argument("--pixel-size", type=float, help="micrometres per pixel of the training images")
    t.add_argument("--seed", type=int, default=0)
    common(t)
    t.set_defaults(func=cmd_train)
    u = sub.add_parser("tune", help="tune training hyperparameters with ASHA (Optuna)")
    u.add_argument("data", help="class folders of frames, or a tile set")
    u.add_argument("out", help="study folder: study.journal, trials/, best/, best.json, trials.csv, plots")
    u.add_argument("--space", help="search space (YAML or JSON); default: the SEM study's (see docs/tuning.md)")
    u.add_argument("--trials", type=positive, default=20, help="complete + pruned trials in all (default 20)")
    u.add_argument("--max-epochs", type=positive, default=20, help="epochs of a trial that is never pruned")
    u.add_argument("--min-epochs", type=positive, default=1, help="epochs before the first pruning decision")
    u.add_argument("--reduction-factor", type=positive, default=3)
    u.add_argument("--pruner", choices=["asha", "hyperband", "none"], default="asha")
    u.add_argument("--jobs", type=positive, default=1, help="trials in parallel worker processes")
    u.add_argument("--dask-scheduler", metavar="ADDRESS", help="run trials on dask workers: local:N or "
                   "tcp://host:8786 (the study file must be on a file system all workers share)")
    u.add_argument("--resume", action="store_true", help="continue the study in OUT (killed trials run again)")
    u.add_argument("--retrain", action="store_true", help="train the best configuration again on training + "
                   "validation data into OUT/best (default: keep the best trial's own bundle)")
    u.add_argument("--arch", help="fixed architecture (unless the space varies it)")
    u.add_argument("--tile", type=positive, help="fixed tile size")
    u.add_argument("--crops", type=positive, help="random crops per frame and epoch (frames)")
    u.add_argument("--exclude-rows", type=rows, help="band of rows to ignore, e.g. --exclude-rows=-32:")
    u.add_argument("--seed", type=int, default=0)
    common(u)
    u.set_defaults(func=cmd_tune)
