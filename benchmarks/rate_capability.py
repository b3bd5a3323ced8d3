"""Rate-capability benchmark (Deeg et al. 2024 workflow) on two families of cross-sections (issue 18).

    make bench-rate       # or: .venv/bin/python benchmarks/rate_capability.py [--quick] [--keep DIR]

1. Collector detection on synthetic cross-sections tilted by random angles in [-3, 3] degrees:
   angle and thickness errors (goal: angle error <= 0.2 degrees).
2. Two families of synthetic mosaics with capacities at 0.2C-5C from one transport model of porosity and
   thickness: ``particles`` (``synth.write_section_dataset``: packed particles, 0.123 um/px) and
   ``spheres`` (``synth_spheres``: PoreSpy pores, binder, cracks, scratches, 0.2 um/px, thickness
   30-48 um); crops of the same field of view (about 27 x 82 um) by a sliding window.
3. Per family, 5-fold cross-validation grouped by mosaic with ``model="auto"``: the CNN, the hybrid and
   the descriptor model on the same folds, with the baselines, interval calibration and learning curve.
4. Cross-family: each family's fold ensemble of each model predicts every section of the other family
   (MAPE per section, share inside the 90 % interval, extrapolation warnings).

Goals (issue 18): held-out sections of the second family <= 3 % MAPE for the best model and the hybrid
within 0.5 points of the best descriptor model; cross-family <= 5 % for the best; 80-95 % of held-out
sections inside their 90 % interval. Writes its section of docs/benchmarks.md and docs/images/rate-*.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _report import write_section  # noqa: E402


def angle_errors(n: int, seed: int = 0) -> dict[str, float]:
    from ncm_core.data import synth
    from ncm_core.data.sections import detect_section
    from ncm_core.io.mosaic import open_mosaic

    rng = np.random.default_rng(seed)
    errs, th_errs, secs = [], [], []
    for k in range(n):
        tilt = float(rng.uniform(-3, 3))
        por = float(rng.uniform(0.25, 0.45))
        s = synth.cross_section(por, (600, 1800), tilt_deg=tilt, thickness_px=320, seed=1000 + k)
        t = time.perf_counter()
        g = detect_section(open_mosaic(s.image, pixel_size=s.pixel_size))
        secs.append(time.perf_counter() - t)
        errs.append(abs(g.angle_deg - tilt))
        th_errs.append(abs(g.thickness_um - (s.thickness_um + 2 * s.pixel_size)) / s.thickness_um)
    return {
        "n": n,
        "max": float(np.max(errs)),
        "mean": float(np.mean(errs)),
        "thickness_max_rel": float(np.max(th_errs)),
        "seconds_per_section": float(np.median(secs)),
    }


FAMILIES = {
    # name: (crop in px, stride in px) for about the same field of view (27 x 82 um)
    "particles": ((224, 672), (112, 448)),
    "spheres": ((136, 408), (68, 272)),
}
MODELS = ("cnn", "hybrid", "descriptors")


def make_family(name: str, root: Path, quick: bool) -> tuple[Path, Path]:
    """Mosaics and crops of one family under ``root`` (reused when already there)."""
    from ncm_core.data import synth
    from ncm_core.data.sections import extract_sections
    from ncm_core.data.synth_spheres import write_sphere_section_dataset

    ds, crops = root / f"{name}-mosaics", root / f"{name}-crops"
    if not (crops / "sections.json").is_file():
        per = 2 if quick else 6
        if name == "particles":
            synth.write_section_dataset(ds, per_porosity=per, shape=(600, 2400), seed=1, overwrite=True)
        else:
            write_sphere_section_dataset(ds, per_porosity=per, shape=(500, 2000), seed=2, overwrite=True)
        crop, stride = FAMILIES[name]
        extract_sections(sorted(ds.glob("*.ome.tif")), crops, crop=crop, mode="sliding", stride=stride, overwrite=True)
    return ds, crops


def cross_family(cv: Path, crops: Path, targets: Path, input_size) -> dict:
    """Each model's fold ensemble (``cv/<model>/fold_k``) predicting every section of another family."""
    from ncm_core.evaluation.regression import regression_metrics
    from ncm_core.inference.ensemble import extrapolation, section_interval
    from ncm_core.training.regression_data import load_regression_data
    from ncm_core.training.regression_models import data_descriptors, predict_crops, section_means

    d = load_regression_data(crops, targets, input_size, groups=["porosity"])
    ens = json.loads((cv / "ensemble.json").read_text())
    feats, names = data_descriptors(d)
    secs, means = section_means(feats, d.sources)
    src = np.asarray(d.sources)
    y = np.stack([d.y[src == s].mean(0) for s in secs])
    idx = np.arange(len(d.files))
    out = {}
    for m in MODELS:
        folds = sorted((cv / m).glob("fold_*"))
        member = np.stack([predict_crops(f, d, idx)[0] for f in folds])  # (folds, crops, targets)
        rel = json.loads((cv / m / "interval.json").read_text())["rel_rmse"]  # its error on its own family
        inside, warned, p = [], 0, []
        for k, s in enumerate(secs):
            excess, notes = extrapolation(dict(zip(names, means[k])), ens["descriptors"]["train_range"])
            warned += bool(notes)
            iv = section_interval(member[:, src == s], d.target_names, rel, excess)
            p.append([iv[n]["mean"] for n in d.target_names])
            inside += [iv[n]["low"] <= y[k, j] <= iv[n]["high"] for j, n in enumerate(d.target_names)]
        met = regression_metrics(y, np.array(p), d.target_names)
        out[m] = {
            "mape": met["mape"],
            "per_target": {n: met["targets"][n]["mape"] for n in d.target_names},
            "coverage": float(np.mean(inside)),
            "extrapolation_warnings": warned,
            "sections": len(secs),
        }
    train_mean = np.mean([json.loads((f / "config.json").read_text())["regression"]["mean"] for f in folds], 0)
    out["mean"] = {"mape": regression_metrics(y, np.tile(train_mean, (len(y), 1)), d.target_names)["mape"]}
    return out


def model_intervals(cv: Path, d_targets: Path, crops: Path, input_size) -> None:
    """Per model of an ``auto`` run: its interval calibration on the held-out sections (``cv/<model>/interval.json``)."""
    from ncm_core.evaluation.intervals import interval_calibration
    from ncm_core.training.regression_data import grouped_kfold, load_regression_data
    from ncm_core.training.regression_models import predict_crops

    d = load_regression_data(crops, d_targets, input_size, groups=["porosity"])
    splits = grouped_kfold(d.sources, 5, 0)
    src = np.asarray(d.sources)
    for m in MODELS:
        pred, fold_of = np.zeros(d.y.shape), np.zeros(len(src), int)
        for k, (_, test) in enumerate(splits, start=1):
            pred[test] = predict_crops(cv / m / f"fold_{k}", d, test)[0]
            fold_of[test] = k
        secs = sorted(set(src.tolist()))
        y = np.stack([d.y[src == s].mean(0) for s in secs])
        p = np.stack([pred[src == s].mean(0) for s in secs])
        sc = np.stack(
            [
                pred[src == s].std(0, ddof=1) / np.sqrt((src == s).sum()) if (src == s).sum() > 1 else 0 * p[0]
                for s in secs
            ]
        )
        cal = interval_calibration(y, p, sc, [int(fold_of[src == s][0]) for s in secs], d.target_names, secs)
        (cv / m / "interval.json").write_text(json.dumps({k: v for k, v in cal.items() if k != "rows"}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small data, few epochs (a smoke test; not recorded)")
    ap.add_argument("--keep", help="keep the work folder here (its mosaics and crops are reused)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: reuse finished folds (times then mean little)")
    a = ap.parse_args()

    import platform
    import warnings

    import torch

    torch.set_num_threads(2)
    from ncm_core.training.cross_validation import cross_validate

    quick = a.quick
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ncm-bench-rate-"))
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    angles = angle_errors(4 if quick else 40)
    print(f"angles: max error {angles['max']:.3f} deg, mean {angles['mean']:.3f} deg", flush=True)
    settings = dict(
        input_size=(32, 96),
        epochs=3 if quick else 12,
        batch_size=16,
        patience=5,
        seed=0,
        groups=["porosity"],
        model="auto",
        folds=5,
        curve=("descriptors", "cnn"),  # the CNN's learning curve costs a training run per point (2 folds)
    )
    data, cv, secs = {}, {}, {}
    for fam in FAMILIES:
        t = time.perf_counter()
        data[fam] = make_family(fam, work, quick)
        t_data = time.perf_counter() - t
        if not a.reuse:  # every fold is trained (and timed) in this run
            shutil.rmtree(work / f"cv-{fam}", ignore_errors=True)
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            r = cross_validate(data[fam][1], data[fam][0] / "targets.csv", work / f"cv-{fam}", **settings)
        secs[fam] = {"data": t_data, "cv": time.perf_counter() - t}
        model_intervals(work / f"cv-{fam}", data[fam][0] / "targets.csv", data[fam][1], settings["input_size"])
        cv[fam] = r
        b = r.metrics["baselines"]
        print(
            f"{fam}: kept {r.model}; "
            + ", ".join(f"{m} {b['models'][m]['mosaics']['mape']:.2f} %" for m in b["ranking"])
            + f"; interval coverage {r.metrics['interval']['coverage']:.2f}; {secs[fam]['cv']:.0f} s;"
            + f" {len(rec)} warning(s)",
            flush=True,
        )
    cross = {}
    for src_fam, dst_fam in (("particles", "spheres"), ("spheres", "particles")):
        ds, crops = data[dst_fam]
        cross[(src_fam, dst_fam)] = cross_family(
            work / f"cv-{src_fam}", crops, ds / "targets.csv", settings["input_size"]
        )
        print(
            f"{src_fam} -> {dst_fam}: "
            + json.dumps({m: round(v["mape"], 2) for m, v in cross[(src_fam, dst_fam)].items()}),
            flush=True,
        )
    docs = work / "docs" if quick else ROOT / "docs"  # a quick run's report stays in the work folder
    (docs / "images").mkdir(parents=True, exist_ok=True)
    write_report(work, docs, angles, cv, cross, secs, settings, platform.processor() or platform.machine(), torch)
    if quick:
        print(f"quick run: report in {docs / 'benchmarks.md'}, docs/benchmarks.md not touched")
        return
    print(f"done in {(time.perf_counter() - t_all) / 60:.1f} min; docs/benchmarks.md updated")


def write_report(work, docs, angles, cv, cross, secs, settings, machine, torch) -> None:
    """``docs``/benchmarks.md's rate section and ``docs``/images/rate-*.png."""
    img = docs / "images"
    for fam in FAMILIES:
        shutil.copy(work / f"cv-{fam}" / "learning_curve.png", img / f"rate-learning-curve-{fam}.png")
        shutil.copy(work / f"cv-{fam}" / "scatter.png", img / f"rate-scatter-{fam}.png")
    shutil.copy(work / "cv-particles" / "rate_capability.png", img / "rate-capability.png")
    shutil.copy(work / "cv-particles" / "scatter.png", img / "rate-scatter.png")
    rows = [
        (
            f"Collector angle error, {angles['n']} sections tilted in [-3, 3] deg",
            f"max {angles['max']:.3f}, mean {angles['mean']:.3f} deg",
            "<= 0.2 deg",
        ),
        ("Active-layer thickness error (same sections)", f"max {100 * angles['thickness_max_rel']:.2f} %", ""),
        ("Section detection time (600 x 1800 px)", f"{angles['seconds_per_section']:.2f} s", ""),
    ]
    table = []
    for fam, r in cv.items():
        b = r.metrics["baselines"]["models"]
        cal = {m: json.loads((work / f"cv-{fam}" / m / "interval.json").read_text()) for m in MODELS}
        n_sec = r.metrics["interval"]["sections"]
        for m in (*MODELS, "ridge", "boosting", "mean"):
            cov = f"{100 * cal[m]['coverage']:.0f} %" if m in cal else ""
            table.append(
                f"| {fam} ({n_sec} sections, 5-fold CV) | {m}{' (kept)' if m == r.model else ''} | "
                f"{b[m]['mosaics']['mape']:.2f} % | {b[m]['mosaics']['r2']:.3f} | {cov} |"
            )
    for (a_, b_), res in cross.items():
        for m in (*MODELS, "mean"):
            v = res[m]
            cov = f"{100 * v['coverage']:.0f} %" if "coverage" in v else ""
            warn = f", {v['extrapolation_warnings']}/{v['sections']} sections warned" if "coverage" in v else ""
            table.append(f"| train {a_}, test {b_} (fold ensemble) | {m} | {v['mape']:.2f} % | | {cov}{warn} |")
    best_b = min(cv["spheres"].metrics["baselines"]["models"][m]["mosaics"]["mape"] for m in MODELS)
    best_desc_b = min(
        cv["spheres"].metrics["baselines"]["models"][m]["mosaics"]["mape"] for m in ("descriptors", "ridge", "boosting")
    )
    hyb_b = cv["spheres"].metrics["baselines"]["models"]["hybrid"]["mosaics"]["mape"]
    best_cross = {k: min(v[m]["mape"] for m in MODELS) for k, v in cross.items()}
    goals = [
        ("Spheres family, held-out sections: best model", f"{best_b:.2f} %", "<= 3 %"),
        ("Spheres family: hybrid minus best descriptor model", f"{hyb_b - best_desc_b:+.2f} points", "<= 0.5"),
        *((f"Cross-family {a_} -> {b_}: best model", f"{v:.2f} %", "<= 5 %") for (a_, b_), v in best_cross.items()),
        *(
            (
                f"{fam}: held-out sections inside their 90 % interval (kept model)",
                f"{100 * r.metrics['interval']['coverage']:.0f} %",
                "80-95 %",
            )
            for fam, r in cv.items()
        ),
        (
            "Time: both families' data, all folds of 3 models, cross-family (2 CPU threads)",
            f"{sum(v['data'] + v['cv'] for v in secs.values()) / 60:.1f} min",
            "",
        ),
    ]
    lc = []
    for fam, r in cv.items():
        for row in r.metrics["learning_curve"]:
            lc.append(f"| {fam} | {row['model']} | {row['sections']} | {row['mape']:.2f} +- {row['mape_std']:.2f} % |")
    text = (
        f"""## Rate capability from cross-sections: two families, three models (issue 18)

Written by `make bench-rate` (`benchmarks/rate_capability.py`), {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

- Machine: {machine}, torch {torch.__version__} ({torch.get_num_threads()} threads), GPU: none
- Data: two families of {cv["particles"].metrics["interval"]["sections"]} and {cv["spheres"].metrics["interval"]["sections"]} synthetic cross-sections, capacities at 0.2C-5C from one transport model of
  porosity and thickness (`synth_sections.rate_capability`):
  `particles` (`ncm sample section-set`: packed particles, 600 x 2400 px at 0.123 um/px, thickness about
  39 um, crops 224 x 672 px, stride 112 x 448) and `spheres` (`ncm sample section-set-spheres`: PoreSpy
  pores with binder, cracks, scratches and pull-outs, 500 x 2000 px at 0.2 um/px, thickness 30-48 um,
  crops 136 x 408 px, stride 68 x 272): the same field of view, about 27 x 82 um.
- Models, on the same 5 grouped folds (`cross_validate(model="auto")`): `cnn` (`ncm_vgg` on crops resized
  to {settings["input_size"][0]} x {settings["input_size"][1]}, {settings["epochs"]} epochs, patience
  {settings["patience"]}, batch {settings["batch_size"]}), `hybrid` (the same CNN's features + the
  descriptors, added to the descriptor model), `descriptors` (ridge on the logarithms of the descriptors);
  baselines `ridge`, `boosting`, `mean` as in every report.
- MAPE per mosaic (the mean of its crops' predictions). Cross-family: each model's 5 fold bundles
  predict together; intervals use the model's own relative error on its family's held-out sections,
  widened where the section's descriptors lie outside the training range.

| measure | value | goal |
|---|---|---|
"""
        + "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows + goals)
        + """

| data | model | MAPE per mosaic | R^2 | inside 90 % interval |
|---|---|---|---|---|
"""
        + "\n".join(table)
        + """

Learning curves (MAPE per held-out mosaic against the number of training sections): the descriptor model
and the training mean (mean +- std over the 5 folds and 3 random subsets per point) and the CNN (one
training run per point on the first 2 folds, `--learning-curve descriptors,cnn`):

| family | model | training sections | MAPE |
|---|---|---|---|
"""
        + "\n".join(lc)
        + """

Figures: `docs/images/rate-learning-curve-particles.png`, `rate-learning-curve-spheres.png`,
`rate-scatter-particles.png`, `rate-scatter-spheres.png` (the kept model), `rate-capability.png`.
"""
    )
    write_section(docs / "benchmarks.md", "rate", text)


if __name__ == "__main__":
    main()
