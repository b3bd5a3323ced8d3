"""The ``ncm`` command line: the same task functions as the API and the napari widgets.

Errors caused by input print one line (``ncm: error: <file>: <problem>``) and
exit with status 2; nothing is left half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import Cancelled, NcmError


def _rows(value: str) -> tuple[int | None, int | None] | None:
    from .tiling import parse_rows

    try:
        return parse_rows(value)
    except NcmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _progress(label: str, quiet: bool):
    from .progress import ConsoleProgress

    return None if quiet else ConsoleProgress(label)


def cmd_sample(a: argparse.Namespace) -> None:
    from . import synth
    from .mosaic import write_ome_zarr

    out = Path(a.out)
    if a.kind == "sem-frames":
        synth.write_sem_dataset(out, a.frames, (a.size + a.info_bar, a.size), info_bar=a.info_bar, seed=a.seed)
        print(f"wrote {len(synth.CLASS_NAMES) * a.frames} SEM frames in {len(synth.CLASS_NAMES)} class folders to {out}")
    elif a.kind == "sem-mosaic":
        m = synth.sem_mosaic(tuple(a.shape) if a.shape else (1100, 1500), seed=a.seed)
        write_ome_zarr(out, m.image, pixel_size=m.pixel_size, chunks=a.chunks, levels=2, labels={"truth": m.truth + 1},
                       label_classes={"truth": list(m.class_names)}, overwrite=a.overwrite, name="sem_mosaic")
        print(f"wrote a {m.image.shape[0]}x{m.image.shape[1]} px SEM mosaic with its truth labels to {out}")
    elif a.kind == "section-set":
        synth.write_section_dataset(out, per_porosity=a.per_porosity, shape=tuple(a.shape) if a.shape else (600, 1800),
                                    seed=a.seed)
        print(f"wrote {5 * a.per_porosity} cross-section mosaics and their rate capability "
              f"({out / 'targets.csv'}) to {out}")
    else:
        s = synth.cross_section(a.porosity, tuple(a.shape) if a.shape else (600, 1800), tilt_deg=a.tilt, seed=a.seed)
        write_ome_zarr(out, s.image, pixel_size=s.pixel_size, chunks=a.chunks, overwrite=a.overwrite, name="cross_section")
        meta = {"porosity": s.porosity, "tilt_deg": s.tilt_deg, "thickness_um": s.thickness_um, **s.targets}
        out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        print(f"wrote a cross-section (porosity {s.porosity:.3f}) to {out}, labels to {out.with_suffix('.json')}")


def _size(value: str) -> tuple[int, int]:
    """``224`` or ``56x168`` (height x width)."""
    try:
        parts = [int(v) for v in value.lower().replace("*", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {value!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 8:
        raise argparse.ArgumentTypeError(f"expected N or HxW with sides of at least 8 px, got {value!r}")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def cmd_train(a: argparse.Namespace) -> None:
    if a.task == "regress":
        return _train_regress(a)
    from .train import train

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
              seed=a.seed, device=a.device, pixel_size=a.pixel_size, progress=_progress("train", a.quiet))
    if r.resumed_from:
        print(f"resumed from the checkpoint after epoch {r.resumed_from}")
    print(f"bundle: {r.bundle}  best validation accuracy {r.best_val_accuracy:.1%} (epoch {r.best_epoch} of "
          f"{len(r.history)}), {r.seconds:.0f} s")


def _train_regress(a: argparse.Namespace) -> None:
    from .regression import cross_validate, train_regressor

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
    common_kw = dict(input_size=a.input_size, groups=_list(a.group), target_columns=_list(a.target_columns) or None,
                     split_by=a.split_by, val_fraction=a.val_fraction or 0.2, seed=a.seed,
                     progress=_progress("train", a.quiet))
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


def cmd_sections(a: argparse.Namespace) -> None:
    from .sections import SUMMARY, extract_sections

    out = extract_sections(a.mosaics, a.out, crop=a.crop, mode=a.mode, stride=a.stride, margin=a.margin,
                           pixel_size=a.pixel_size, overwrite=a.overwrite, progress=_progress("sections", a.quiet))
    info = json.loads((out / SUMMARY).read_text())
    for m in info["mosaics"]:
        th = f"{m['thickness_um']:.1f} um" if m["thickness_um"] is not None else f"{m['thickness_px']:.0f} px"
        print(f"{m['name']}: collector angle {m['angle_deg']:+.2f} deg{' (turned 180)' if m['turned'] else ''}, "
              f"active layer {th}, {len(m['crops'])} crops")
    print(f"crops: {out} ({sum(len(m['crops']) for m in info['mosaics'])} in all; manifest {out / 'sections.csv'})")


def cmd_tune(a: argparse.Namespace) -> None:
    from .tune import tune

    fixed = {k: v for k, v in dict(architecture=a.arch, tile_size=a.tile, exclude_rows=a.exclude_rows,
                                   crops_per_image=a.crops, device=a.device, seed=a.seed).items() if v is not None}
    r = tune(a.data, a.out, space=a.space, n_trials=a.trials, max_epochs=a.max_epochs, min_epochs=a.min_epochs,
             reduction_factor=a.reduction_factor, pruner=a.pruner, n_jobs=a.jobs, scheduler=a.dask_scheduler,
             resume=a.resume, seed=a.seed, train_kwargs=fixed, retrain=a.retrain, progress=_progress("tune", a.quiet))
    print(f"trials: {r.n_complete} complete, {r.n_pruned} pruned, {r.n_failed} failed; {r.epochs_run} epochs in all")
    if r.best_bundle is None:
        print("no trial finished; nothing to report")
        return
    print(f"best: trial {r.best_trial}, validation accuracy {r.best_value:.1%}, {json.dumps(r.best_params)}")
    print(f"best bundle: {r.best_bundle}; report: {r.out / 'best.json'}, {r.out / 'trials.csv'}")


def cmd_crops(a: argparse.Namespace) -> None:
    from .crops import build_crops

    ts = build_crops(a.data, a.out, size=a.size, per_frame=a.per_frame, val_fraction=a.val_fraction,
                     test_fraction=a.test_fraction, exclude_rows=a.exclude_rows, masks=a.masks,
                     max_masked=a.max_masked, seed=a.seed, overwrite=a.overwrite, progress=_progress("crops", a.quiet))
    counts = ts.counts()
    parts = ", ".join(f"{s} {sum(counts.get(s, {}).values())} crops of {len(ts.groups(s))} frames"
                      for s in ("train", "val", "test") if s in counts)
    print(f"tile set: {ts.root}  {len(ts.class_names)} classes; {parts}")


def cmd_predict(a: argparse.Namespace) -> None:
    from .bundle import load_bundle

    if load_bundle(a.bundle).config.task == "regress":
        return _predict_section(a)
    from .predict import predict_mosaic

    p = predict_mosaic(a.bundle, a.mosaic, a.out, tile=a.tile, stride=a.stride, batch_size=a.batch_size,
                       exclude_rows=a.exclude_rows, foreground=a.foreground, device=a.device,
                       overwrite=a.overwrite, resume=not a.restart, scheduler=a.dask_scheduler, dense=a.dense,
                       dense_recheck=a.dense_recheck, backend=a.backend, ood=not a.no_ood,
                       progress=_progress("predict", a.quiet))
    at = p.attrs
    print(f"prediction: {p.path}  grid {p.grid.shape[0]}x{p.grid.shape[1]} tiles of {p.grid.tile} px, "
          f"{at['n_predicted']} predicted, {at['n_masked']} masked"
          + (f", dense ({at['n_rechecked']} rechecked exactly)" if "n_rechecked" in at else ", dense" if at["dense"] else "")
          + f", {at['seconds']:.1f} s")
    from .evaluate import summarize_prediction, write_rows

    rows = summarize_prediction(p, _truth(a.regions)[0] if a.regions else None)
    whole = rows[0] if not a.regions else summarize_prediction(p)[0]
    if whole["tiles"]:
        print(f"whole image: {whole['predicted']} (mean probability {whole['confidence']:.2f}); majority "
              f"{whole['majority']} ({whole['majority_fraction']:.0%} of tiles)")
    if "ood_fraction" in whole and whole["tiles"]:
        warn = "  WARNING: much of this image is unlike the training data" if whole["ood_fraction"] > 0.2 else ""
        print(f"out-of-distribution tiles: {whole['ood_fraction']:.1%}{warn}")
    if a.summary:
        write_rows(Path(a.summary), rows)
        print(f"summary written to {a.summary}")


def _predict_section(a: argparse.Namespace) -> None:
    from .regression import predict_section, write_section_prediction

    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise NcmError("output exists; choose another or pass --overwrite", out)
    sp = predict_section(a.bundle, a.mosaic, mode=a.mode, device=a.device, progress=_progress("predict", a.quiet))
    write_section_prediction(sp, out)
    g = sp.geometry
    print(f"section: collector angle {g.angle_deg:+.2f} deg, active layer "
          f"{g.thickness_um:.1f} um" if g.thickness_um is not None else f"{g.thickness_px:.0f} px", end="")
    print(f", {len(g.crops)} crops")
    for n, v in sp.summary().items():
        print(f"  {n}: {v['mean']:.4g} +- {v['std']:.2g}")
    if sp.ood is not None and (sp.ood > 1).mean() > 0.2:
        print(f"WARNING: {(sp.ood > 1).mean():.0%} of the crops are unlike the training data")
    print(f"prediction: {out / 'crops.csv'}, {out / 'summary.json'}, {out / 'rate_capability.png'}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .evaluate import evaluate, evaluate_prediction, write_metrics

    if a.prediction:
        if not a.truth:
            raise NcmError("--prediction needs --truth (a per-pixel class map)")
        m = evaluate_prediction(a.prediction, *_truth(a.truth))
        if a.out:
            write_metrics(m, a.out)
        print(f"tile accuracy {m['tile_accuracy']:.1%} over {m['n_scored']} tiles")
    else:
        if not (a.bundle and a.data):
            raise NcmError("evaluate needs BUNDLE and DATA (class folders), or --prediction and --truth")
        m = evaluate(a.bundle, a.data, out=a.out, split=a.split, device=a.device,
                     progress=_progress("evaluate", a.quiet))
        for level in ("images", "tiles"):
            mm = m[level]
            extra = "".join(f", {f} {mm[f + '_accuracy']:.1%}" for f in mm.get("marginals", {}))
            print(f"{level[:-1]} accuracy {mm['accuracy']:.1%} ({mm['n']} {level}){extra}")
        if "ood_fraction" in m:
            print(f"out-of-distribution tiles: {m['ood_fraction']:.1%}")
    if a.out:
        print(f"metrics written to {a.out}")


def _truth(path: str):
    """A truth map and its value -> class-name table (NGFF labels, e.g. ``image.zarr/labels/truth``)."""
    from .mosaic import open_mosaic, read_label_classes

    return open_mosaic(path).data, (read_label_classes(path) or None)


def _hw(value: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in value.lower().replace("x", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {value!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive numbers, got {value!r}")
    return parts[0], parts[1]


def _targets(value: str | None) -> object:
    if value is None:
        return None
    parts = [v.strip() for v in value.split(",") if v.strip()]
    return parts[0] if len(parts) == 1 else parts


def cmd_explain(a: argparse.Namespace) -> None:
    from .explain import check_method

    methods = [check_method(m) for m in a.method.split(",")]
    src = Path(a.input)
    tiles_mode = src.is_dir() and not (src / "zarr.json").exists() and not (src / ".zgroup").exists()
    if tiles_mode:
        return _explain_tiles(a, methods)
    if len(methods) != 1:
        raise NcmError("a mosaic is explained with one method at a time (--method)")
    from .figures import heatmap_overlay_figure
    from .heatmaps import explain_mosaic

    h = explain_mosaic(a.bundle, a.input, a.out, methods[0], _targets(a.target), a.layer, overlap=a.overlap,
                       factor=a.factor, batch_size=a.batch_size, window=a.window, stride=a.occlusion_stride,
                       device=a.device, overwrite=a.overwrite, resume=not a.restart,
                       progress=_progress("explain", a.quiet))
    out = Path(a.out)
    pngs = []
    for k, name in enumerate(h.names):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        pngs.append(heatmap_overlay_figure(a.input, h, out.parent / f"{out.name.split('.')[0]}-{safe}.png", k))
    print(f"heatmap: {h.path}  {h.method}{' at ' + h.attrs['layer'] if h.attrs.get('layer') else ''}, "
          f"{len(h.names)} map(s) ({', '.join(h.names[:6])}{', ...' if len(h.names) > 6 else ''}), "
          f"1 value per {h.factor} px, {h.attrs['n_tiles']} tiles, {h.attrs['seconds']:.1f} s")
    print(f"overlays: {', '.join(str(p) for p in pngs[:3])}{', ...' if len(pngs) > 3 else ''}")


def _explain_tiles(a: argparse.Namespace, methods: list[str]) -> None:
    """Explain every image in a folder (tiles or section crops); maps as TIFF, overlays as PNG."""
    import csv

    import numpy as np
    import tifffile

    from .bundle import load_bundle
    from .explain import Explanation, explain
    from .figures import explanation_figure
    from .mosaic import open_mosaic
    from .train import resolve_device

    exts = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}
    files = sorted(p for p in Path(a.input).rglob("*") if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise NcmError("no images (PNG, TIFF, JPEG) in the folder", a.input)
    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise NcmError("output exists; choose another or pass --overwrite", out)
    bundle = load_bundle(a.bundle)
    bundle.model.to(resolve_device(a.device))
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    (partial / "maps").mkdir(parents=True)
    images = []
    for f in files:
        try:
            images.append(np.asarray(open_mosaic(f).data.compute()))
        except NcmError:
            raise
        except Exception as exc:
            raise NcmError(f"cannot read image ({type(exc).__name__}: {exc})", f) from None
    rows, kept = [], {}
    n_keep = max(6, a.check_images if a.check else 0)  # tiles whose maps the overview and checks reuse
    prog = _progress("explain", a.quiet)
    for i, (f, img) in enumerate(zip(files, images)):
        stem = str(f.relative_to(a.input).with_suffix("")).replace("/", "__")
        for m in methods:
            e = explain(bundle, img[None], m, _targets(a.target), a.layer, batch_size=a.batch_size,
                        window=a.window, stride=a.occlusion_stride, device=a.device)
            tifffile.imwrite(partial / "maps" / f"{stem}__{m}.tif", e.maps[0],
                             metadata={"axes": "CYX", "Labels": e.names[0]})
            for k, name in enumerate(e.names[0]):
                score = e.scores[0, e.targets[0, k]]
                rows.append({"image": str(f), "method": m, "layer": e.layer or "", "map": k, "target": name,
                             "score": f"{score:.6g}", "min": f"{e.maps[0, k].min():.6g}",
                             "max": f"{e.maps[0, k].max():.6g}"})
            if i < n_keep:
                kept.setdefault(m, []).append(e)
        if prog:
            prog(i + 1, len(files), "images")
    with open(partial / "explanations.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    same = len({im.shape for im in images[:n_keep]}) == 1
    kept = {m: Explanation.concat(es) for m, es in kept.items()} if same else {}
    if same:
        explanation_figure(np.stack(images[:6]), {m: e[:6] for m, e in kept.items()}, partial / "overview.png")
    if a.check:
        _explain_checks(a, bundle, images, kept, partial)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    partial.rename(out)
    print(f"explanations: {out}  {len(files)} image(s) x {len(methods)} method(s); maps/*.tif, explanations.csv"
          + (", overview.png" if same else "") + (", checks.json" if a.check else ""))


def _explain_checks(a: argparse.Namespace, bundle: object, images: list, maps: dict, out: Path) -> None:
    """Sanity checks on the first ``--check-images`` tiles, reusing their maps (``maps``: method -> Explanation)."""
    import numpy as np

    from .figures import deletion_insertion_figure, randomisation_figure
    from .sanity import attribution_in_mask, deletion_insertion, particle_boundaries, randomisation_check

    if not maps:
        raise NcmError("--check needs images of one size", a.input)
    imgs = np.stack(images[: a.check_images])
    kw = dict(batch_size=a.batch_size, window=a.window, stride=a.occlusion_stride)
    report = {"images": len(imgs), "randomisation": randomisation_check(bundle, imgs, list(maps),
                                                                        _targets(a.target), layer=a.layer, **kw)}
    masks = np.stack([particle_boundaries(im) for im in imgs])
    report["boundaries"], curves = {}, {}
    for m, e in maps.items():
        e = e[: len(imgs)]
        report["boundaries"][m] = attribution_in_mask(e.maps, masks[:, None])
        curves[m] = deletion_insertion(bundle, imgs, e)
        report.setdefault("faithfulness", {})[m] = {k: curves[m][k] for k in (
            "deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")}
    (out / "checks.json").write_text(json.dumps(report, indent=2))
    randomisation_figure(report["randomisation"], out / "randomisation.png")
    deletion_insertion_figure(curves, out / "deletion_insertion.png")
    for m, r in report["randomisation"].items():
        b = report["boundaries"][m]
        print(f"{m}: randomisation rank correlation {r['spearman_abs']:.2f} ({'passes' if r['passes'] else 'FAILS'}); "
              f"{b['positive_share_in_mask']:.0%} of positive attribution on particle boundaries "
              f"({b['area_share']:.0%} of the area, x{b['enrichment']:.2f}); deletion AUC "
              f"{report['faithfulness'][m]['deletion_auc']:.3f} (random "
              f"{report['faithfulness'][m]['random_deletion_auc']:.3f})")


def cmd_demo(a: argparse.Namespace) -> None:
    from .demo import console_progress, run_demo

    m = run_demo(a.out, quick=a.quick, seed=a.seed, architecture=a.arch,
                 progress=None if a.quiet else console_progress)
    out = Path(a.out)
    print()
    print(f"tile accuracy: {m['tile_accuracy']:.1%} on {m['n_tiles']} mosaic tiles "
          f"(balanced {m['balanced_accuracy']:.1%}); total {m['total_seconds']:.0f} s")
    for name, p in [("mosaic", m["outputs"]["mosaic"]), ("model bundle", m["outputs"]["bundle"]),
                    ("prediction", m["outputs"]["prediction"]), ("metrics", out / "metrics.json"),
                    ("overview", out / "overview.png"), ("confusion matrix", out / "confusion_matrix.png")]:
        print(f"  {name:17s} {p}")
    print(f"open it in napari:  napari {m['outputs']['mosaic']} {m['outputs']['prediction']}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ncm", description="Tiling, training and prediction of CNN models on "
                                "microscopy mosaics of battery electrodes.")
    p.add_argument("--version", action="version", version=f"napari-ncm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, device: bool = True) -> None:
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress display")
        if device:
            sp.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: auto)")

    s = sub.add_parser("sample", help="write embedded sample data")
    s.add_argument("kind", choices=["sem-frames", "sem-mosaic", "section", "section-set"])
    s.add_argument("out", help="output folder (sem-frames) or .zarr path")
    s.add_argument("--frames", type=_positive, default=4, help="frames per class (sem-frames)")
    s.add_argument("--size", type=_positive, default=512, help="frame width/height without info bar (sem-frames)")
    s.add_argument("--info-bar", type=int, default=32, help="rows of the SEM information bar (sem-frames)")
    s.add_argument("--shape", type=_positive, nargs=2, metavar=("H", "W"), help="mosaic or section shape")
    s.add_argument("--porosity", type=float, default=0.35, help="active-layer porosity (section)")
    s.add_argument("--tilt", type=float, default=1.0, help="tilt in degrees (section)")
    s.add_argument("--per-porosity", type=_positive, default=4, help="mosaics per porosity (section-set)")
    s.add_argument("--chunks", type=_positive, default=512, help="zarr chunk size")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("crops", help="random crops of class-folder frames into a tile set, frames held out first")
    c.add_argument("data", help="folder with one sub-folder of frames per class")
    c.add_argument("out", help="tile-set folder to write (train/, val/, test/, manifest.csv, manifest.json)")
    c.add_argument("--size", type=_positive, default=224, help="crop size in pixels (default 224)")
    c.add_argument("--per-frame", type=_positive, default=32, help="crops per frame (default 32)")
    c.add_argument("--val-fraction", type=float, default=0.2, help="share of each class's frames for validation")
    c.add_argument("--test-fraction", type=float, default=0.2, help="share of each class's frames for testing")
    c.add_argument("--exclude-rows", type=_rows, help="band no crop may touch, e.g. --exclude-rows=-32: (SEM info bar)")
    c.add_argument("--masks", help="folder like DATA with <class>/<frame stem>.png masks, non-zero = avoid")
    c.add_argument("--max-masked", type=float, default=0.0, help="largest masked share of a crop (default 0)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--overwrite", action="store_true")
    common(c, device=False)
    c.set_defaults(func=cmd_crops)

    x = sub.add_parser("sections", help="find the collector in cross-section mosaics, straighten, cut crops")
    x.add_argument("mosaics", nargs="+", help="cross-section mosaics (TIFF, zarr, PNG, ...)")
    x.add_argument("--out", required=True, help="crop folder to write (crops, sections.csv, sections.json)")
    x.add_argument("--crop", type=_positive, nargs=2, metavar=("H", "W"), default=(224, 672),
                   help="crop height and width in pixels (default 224 672)")
    x.add_argument("--mode", choices=["center", "sliding"], default="center",
                   help="one row of crops centred in the active layer, or a sliding window")
    x.add_argument("--stride", type=_positive, nargs=2, metavar=("SY", "SX"), help="sliding-window stride "
                   "(default half a crop)")
    x.add_argument("--margin", type=int, default=4, help="pixels left out at the collector and the surface")
    x.add_argument("--pixel-size", type=float, help="micrometres per pixel, when the files do not say")
    x.add_argument("--overwrite", action="store_true")
    common(x, device=False)
    x.set_defaults(func=cmd_sections)

    t = sub.add_parser("train", help="train a classifier from class folders of frames or a tile set")
    t.add_argument("data", help="folder with one sub-folder of frames per class, or a tile set ('ncm crops')")
    t.add_argument("out", help="bundle folder to write (an interrupted run resumes from its checkpoint there)")
    t.add_argument("--task", choices=["classify", "regress"], default="classify",
                   help="classify tiles (class folders, tile sets) or regress values of cross-section crops")
    t.add_argument("--arch", help="timm architecture (default efficientnet_b0; regress: ncm_vgg)")
    t.add_argument("--tile", type=_positive, help="tile size in image pixels (default: the tile set's, or 96)")
    t.add_argument("--input-size", type=_size, help="model input size, N or HxW (default: the tile or crop size; "
                   "regress: e.g. 56x168 to train on 4x smaller copies of 224x672 crops)")
    t.add_argument("--epochs", type=_positive, help="default 10 (regress: 100)")
    t.add_argument("--batch-size", type=_positive, help="default 32 (regress: 38)")
    t.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    t.add_argument("--opt", help="timm optimizer name (adam, adamw, sgd, lookahead_radam, ...); default adamw "
                   "(regress: lookahead_radam)")
    t.add_argument("--momentum", type=float, default=0.9, help="momentum for SGD")
    t.add_argument("--weight-decay", type=float, help="optimizer weight decay (default 0.01; regress: 0)")
    t.add_argument("--sched", default="cosine", help="timm scheduler (cosine, step, plateau, ...)")
    t.add_argument("--warmup-epochs", type=int, default=1)
    t.add_argument("--val-fraction", type=float, help="share of images (regress: mosaics) held "
                   "out for validation and early stopping (default 0.25; regress: 0.2)")
    t.add_argument("--crops", type=_positive, default=32, help="random crops per image per epoch")
    t.add_argument("--exclude-rows", type=_rows, help="band of rows to ignore, e.g. --exclude-rows=-32: for a 32-row SEM info bar")
    t.add_argument("--augment", help="classify: flip, rot90, both (default) or none; regress: shift, rotate, "
                   "hflip, all three (default) or none")
    t.add_argument("--no-augment", action="store_true", help="same as --augment none")
    t.add_argument("--normalize", action="store_true", help="standardise inputs by the training set's mean/std")
    t.add_argument("--pretrained", help="local weights file (.safetensors) to start from")
    t.add_argument("--patience", type=_positive, help="early-stopping patience in epochs (regress: default 20)")
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
    u.add_argument("--trials", type=_positive, default=20, help="complete + pruned trials in all (default 20)")
    u.add_argument("--max-epochs", type=_positive, default=20, help="epochs of a trial that is never pruned")
    u.add_argument("--min-epochs", type=_positive, default=1, help="epochs before the first pruning decision")
    u.add_argument("--reduction-factor", type=_positive, default=3)
    u.add_argument("--pruner", choices=["asha", "hyperband", "none"], default="asha")
    u.add_argument("--jobs", type=_positive, default=1, help="trials in parallel worker processes")
    u.add_argument("--dask-scheduler", metavar="ADDRESS", help="run trials on dask workers: local:N or "
                   "tcp://host:8786 (the study file must be on a file system all workers share)")
    u.add_argument("--resume", action="store_true", help="continue the study in OUT (killed trials run again)")
    u.add_argument("--retrain", action="store_true", help="train the best configuration again on training + "
                   "validation data into OUT/best (default: keep the best trial's own bundle)")
    u.add_argument("--arch", help="fixed architecture (unless the space varies it)")
    u.add_argument("--tile", type=_positive, help="fixed tile size")
    u.add_argument("--crops", type=_positive, help="random crops per frame and epoch (frames)")
    u.add_argument("--exclude-rows", type=_rows, help="band of rows to ignore, e.g. --exclude-rows=-32:")
    u.add_argument("--seed", type=int, default=0)
    common(u)
    u.set_defaults(func=cmd_tune)

    r = sub.add_parser("predict", help="classify every tile of a mosaic, or predict values along a cross-section")
    r.add_argument("bundle", help="model bundle folder")
    r.add_argument("mosaic", help="zarr, OME-Zarr, TIFF, PNG or JPEG")
    r.add_argument("out", help="output zarr group, e.g. prediction.zarr (regression: a folder)")
    r.add_argument("--tile", type=_positive, help="tile size in pixels (default: the bundle's)")
    r.add_argument("--stride", type=_positive, help="tile stride in pixels (default: tile)")
    r.add_argument("--batch-size", type=_positive, default=64)
    r.add_argument("--exclude-rows", type=_rows, help="band of rows to skip, e.g. --exclude-rows=-32:")
    r.add_argument("--foreground", action="store_true", help="skip empty (flat) background tiles")
    r.add_argument("--dense", action="store_true", help="overlapping tiles (stride < tile): run the trunk once per "
                   "block and pool each tile's features (faster, approximate near tile borders)")
    r.add_argument("--backend", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="inference engine: auto (default) uses ONNX Runtime on the CPU where it is installed and "
                        "measures faster, else PyTorch")
    r.add_argument("--dense-recheck", type=float, default=0.3, metavar="MARGIN",
                   help="dense mode: evaluate a tile exactly when its two most probable classes are closer than "
                        "this (default 0.3; 0 = never)")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--summary", help="CSV with the aggregate (mean probabilities, majority, confidence, OOD share) "
                   "of the whole image, or of each region with --regions")
    r.add_argument("--regions", help="per-pixel region map (e.g. OME-Zarr labels) to aggregate tiles by")
    r.add_argument("--no-ood", action="store_true", help="skip the out-of-distribution scores")
    r.add_argument("--mode", choices=["center", "sliding"], default="center",
                   help="regression bundles: crops along the cross-section, centred or sliding")
    r.add_argument("--dask-scheduler", metavar="ADDRESS", help="run blocks on dask.distributed: tcp://host:8786 "
                   "(a running scheduler) or local:N (N local worker processes)")
    r.add_argument("--restart", action="store_true", help="ignore the record of an interrupted run and start again "
                   "(by default the same command resumes it)")
    common(r)
    r.set_defaults(func=cmd_predict)

    e = sub.add_parser("evaluate", help="score a bundle on class folders, or a prediction against a truth map")
    e.add_argument("bundle", nargs="?", help="model bundle folder")
    e.add_argument("data", nargs="?", help="folder with one sub-folder of images per class")
    e.add_argument("--prediction", help="a prediction written by 'ncm predict'")
    e.add_argument("--truth", help="per-pixel class map (e.g. mosaic.ome.zarr/labels/truth)")
    e.add_argument("--split", default="test", help="split of a tile set to evaluate (default test)")
    e.add_argument("--out", help="folder for metrics.json, confusion matrices (CSV, PNG) and per-image/tile CSVs")
    common(e)
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser("explain", help="explanation maps: a heatmap over a mosaic (zarr) or maps for a folder of tiles")
    x.add_argument("bundle", help="model bundle folder")
    x.add_argument("input", help="a mosaic (zarr, OME-Zarr, TIFF, ...) or a folder of tiles / section crops")
    x.add_argument("out", help="output: a zarr group for a mosaic (e.g. gradcam.zarr), a folder for tiles")
    x.add_argument("--method", default="gradcam", help="gradcam, gradcam++, scorecam, layercam, gradram, "
                   "guided-backprop, guided-gradcam, occlusion (tiles: several, comma-separated)")
    x.add_argument("--target", help="predicted (default for classifiers), top-K, all (default for regression), a "
                   "class or target name or index, class:NAME, output:K; comma-separated for several")
    x.add_argument("--layer", help="target layer for CAM methods (default: the last layer with a spatial output)")
    x.add_argument("--overlap", type=int, help="mosaic: pixels shared by neighbouring tiles (default: tile/4)")
    x.add_argument("--factor", type=_positive, help="mosaic: mosaic pixels per heatmap pixel (default 4; 1 for "
                   "guided backpropagation)")
    x.add_argument("--window", type=_hw, default=(7, 7), help="occlusion window in model-input pixels (default 7)")
    x.add_argument("--occlusion-stride", type=_hw, help="occlusion stride (default: the window)")
    x.add_argument("--batch-size", type=_positive, default=16)
    x.add_argument("--check", action="store_true", help="tiles: also run the sanity checks (model randomisation, "
                   "attribution on particle boundaries, deletion/insertion) into checks.json and figures")
    x.add_argument("--check-images", type=_positive, default=8, help="tiles used by --check (default 8)")
    x.add_argument("--overwrite", action="store_true")
    x.add_argument("--restart", action="store_true", help="mosaic: ignore the record of an interrupted run")
    common(x)
    x.set_defaults(func=cmd_explain)

    d = sub.add_parser("demo", help="sample data -> training -> mosaic prediction -> metrics and overview")
    d.add_argument("--out", default="ncm-demo", help="output folder (replaced; default ncm-demo)")
    d.add_argument("--quick", action="store_true", help="tiny data, one epoch (a smoke test)")
    d.add_argument("--arch", default="resnet10t", help="timm architecture (default resnet10t: learns fastest from "
                   "scratch on a CPU)")
    d.add_argument("--seed", type=int, default=0)
    common(d, device=False)
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .predict import PredictionIncomplete

    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = lambda msg, cat, *rest, **kw: print(f"ncm: warning: {msg}", file=sys.stderr)
    try:
        args.func(args)
    except PredictionIncomplete as exc:
        print(f"ncm: incomplete: {exc}", file=sys.stderr)
        return 3
    except NcmError as exc:
        print(f"ncm: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("ncm: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\nncm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
