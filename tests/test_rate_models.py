"""Rate capability on unseen structures (issue 18, items 2-5): the descriptor and hybrid models, fold
ensembles with intervals, interval calibration, the learning curve, the second section family and bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest


def test_descriptors_read_the_same_porosity_under_another_brightness():
    from ncm_core.data.descriptors import descriptor_matrix

    from .test_descriptors import _discs

    img, mask = _discs(shape=(80, 240), r=6, noise=0.02)
    dim = 0.4 * img + 0.05  # the same section imaged darker and with less contrast
    stack = np.stack([img, img, dim, dim])[:, None]
    x, names = descriptor_matrix(stack, sources=["a", "a", "b", "b"])
    por = x[:, names.index("porosity")]
    assert por == pytest.approx(np.full(4, mask.mean()), abs=0.01)  # each section's own Otsu threshold
    one, _ = descriptor_matrix(stack)  # one Otsu threshold over both sections: the dark copy reads as pores
    assert one[2, 0] > 0.9


def test_a_section_without_pores_is_reported_not_divided_by_zero():
    from ncm_core.data.descriptors import descriptor_matrix

    from .test_descriptors import _discs

    porous, _ = _discs(shape=(64, 96), r=6, noise=0.02)
    flat = np.full((64, 96), 0.8, np.float32)
    with pytest.warns(UserWarning, match=r"2 crop\(s\) have no pore pixels") as rec, warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divide-by-zero warning
        x, _ = descriptor_matrix(np.stack([porous, porous, flat, flat])[:, None], sources=["a", "a", "b", "b"])
    assert len([w for w in rec if "no pore pixels" in str(w.message)]) == 1
    assert np.isfinite(x).all() and (x[2:, :3] == [0, 0, x[2, 2]]).all()


def test_hybrid_head_parameter_count_and_it_reads_both_inputs():
    import torch

    from ncm_core.models.factory import build_model

    n_out, n_desc = 5, 4
    hybrid = build_model("ncm_hybrid", n_out, in_chans=3, n_descriptors=n_desc, backbone="ncm_vgg")
    cnn = build_model("ncm_vgg", n_out, in_chans=3)
    backbone = sum(p.numel() for p in cnn.parameters()) - (64 * n_out + n_out)  # without its output layer
    head = (64 + n_desc) * 64 + 64 + 64 * n_out + n_out
    assert sum(p.numel() for p in hybrid.parameters()) == backbone + head
    assert sum(p.numel() for p in hybrid.descriptors.parameters()) == 0  # the descriptor model: fitted buffers
    hybrid.eval()
    torch.manual_seed(0)
    x, d = torch.rand(3, 3, 32, 96), torch.rand(3, n_desc)
    with torch.no_grad():
        hybrid.descriptors.coef.normal_()
        start = hybrid(x, d)
        # untrained, the head adds nothing: the hybrid starts at the descriptor model's predictions
        assert torch.allclose(start, hybrid.descriptors(None, d)) and torch.equal(start, hybrid(x * 0.5, d))
        hybrid.head[-1].weight.normal_()  # as after training
        y = hybrid(x, d)
        assert not torch.allclose(y, hybrid(x * 0.5, d))  # the crops change the output
        assert not torch.allclose(y, hybrid(x, d + 0.1))  # and so do the descriptors


def test_descriptor_model_clamps_a_descriptor_that_hardly_varied_in_training(tmp_path):
    """Every training section about as thick as the next: a far thicker section gets the prediction at the
    edge of the training range, not a line extrapolated on an ill-determined coefficient."""
    import torch

    from ncm_core.models.bundle import BundleConfig, load_bundle, save_bundle
    from ncm_core.models.hybrid import CLAMP_MARGIN, DescriptorRegressor
    from ncm_core.training.regression_models import fit_descriptor_head

    rng = np.random.default_rng(0)
    porosity = rng.uniform(0.25, 0.45, 60)
    thickness = 39 + rng.normal(0, 0.2, 60)  # barely varies
    y = (porosity / thickness * 100 + rng.normal(0, 0.01, 60))[:, None]
    feats = np.stack([porosity, thickness], 1)
    head = fit_descriptor_head(DescriptorRegressor(1, 2), feats, (y - y.mean()) / y.std())
    logs = np.log(thickness)
    z_hi = (logs.max() - head.d_mean[1].item()) / head.d_std[1].item()
    z_lo = (logs.min() - head.d_mean[1].item()) / head.d_std[1].item()
    assert head.d_high[1].item() == pytest.approx(z_hi + CLAMP_MARGIN * (z_hi - z_lo), rel=1e-5)
    with torch.no_grad():
        edge = float(np.exp(head.d_mean[1].item() + head.d_high[1].item() * head.d_std[1].item()))
        at = lambda t: head(None, torch.tensor([[0.35, t]], dtype=torch.float32)).item()  # noqa: E731
        assert at(48.0) == pytest.approx(at(edge), abs=1e-5) == pytest.approx(at(80.0), abs=1e-5)
        assert at(39.0) != pytest.approx(at(39.3), abs=1e-6)  # inside the range it still follows thickness
    # the clamp travels with the bundle; a bundle without it (older) loads unclamped
    cfg = BundleConfig(
        architecture="ncm_descriptors", task="regress", target_names=["q"], model_kwargs={"n_descriptors": 2}
    )
    save_bundle(head, cfg, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b").model
    assert torch.equal(loaded.d_high, head.d_high)
    state = {k: v for k, v in head.state_dict().items() if k not in ("d_low", "d_high")}
    old = DescriptorRegressor(1, 2)
    old.load_state_dict(state)
    assert torch.isinf(old.d_high).all()


def test_interval_calibration_on_a_known_case():
    from ncm_core.evaluation.intervals import interval_calibration

    rng = np.random.default_rng(0)
    n, names = 2000, ["Q_1C", "Q_5C"]
    y = rng.uniform(100, 180, (n, 2))
    p = y * (1 + rng.normal(0, [0.01, 0.04], (n, 2)))  # relative errors of known spread
    fold = np.arange(n) % 5 + 1
    cal = interval_calibration(y, p, np.zeros((n, 2)), fold, names)
    assert cal["coverage"] == pytest.approx(0.90, abs=0.02)
    assert cal["rel_rmse"]["Q_1C"] == pytest.approx(0.01, rel=0.1) and cal["rel_rmse"]["Q_5C"] == pytest.approx(
        0.04, rel=0.1
    )
    # an interval without the model's error (crop spread only, far too small) holds rarely
    tiny = interval_calibration(y, p, np.full((n, 2), 0.01), np.ones(n), names)  # one fold: no other folds
    assert tiny["coverage"] < 0.2
    row = cal["rows"][0]
    assert row["Q_1C_low90"] <= row["Q_1C_pred"] <= row["Q_1C_high90"]


def test_section_interval_spreads_and_extrapolation():
    from ncm_core.inference.ensemble import extrapolation, section_interval

    members = np.stack([np.full((4, 1), 100.0), np.full((4, 1), 102.0)])  # two folds, 4 identical crops
    iv = section_interval(members, ["Q"])["Q"]
    assert iv["mean"] == 101 and iv["s_crops"] == 0 and iv["s_folds"] == pytest.approx(np.sqrt(2))
    assert iv["high"] - iv["mean"] == pytest.approx(1.6449 * np.sqrt(2), rel=1e-3)
    inside, notes = extrapolation({"porosity": 0.3}, {"porosity": [0.25, 0.45]})
    assert inside == 0 and not notes
    excess, notes = extrapolation({"porosity": 0.10}, {"porosity": [0.25, 0.45]})
    assert excess == pytest.approx(0.75) and "porosity 0.1 is outside the training range 0.25-0.45" in notes[0]
    wide = section_interval(members, ["Q"], {"Q": 0.01}, excess)["Q"]
    narrow = section_interval(members, ["Q"], {"Q": 0.01})["Q"]
    assert wide["widen"] == pytest.approx(3.0) and wide["high"] - 101 == pytest.approx(3 * (narrow["high"] - 101))


def test_descriptor_model_bundle_predicts_a_section_and_warns_outside_its_range(section_crops, section_set, tmp_path):
    from ncm_core.data import synth
    from ncm_core.inference.sections import predict_section
    from ncm_core.io.mosaic import open_mosaic
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.regression import train_regressor

    r = train_regressor(
        section_crops,
        section_set / "targets.csv",
        tmp_path / "desc",
        groups=["porosity"],
        input_size=(32, 96),
        model="descriptors",
    )
    b = load_bundle(r.bundle)
    assert b.config.architecture == "ncm_descriptors" and (r.bundle / "model.safetensors").is_file()
    info = b.config.regression["descriptors"]
    assert info["names"][0] == "porosity" and info["train_range"]["porosity"][0] < info["train_range"]["porosity"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a section like the training ones: no warning
        sp = predict_section(r.bundle, section_set / "section_000.ome.tif", mode="sliding", device="cpu")
    truth = np.loadtxt(section_set / "targets.csv", delimiter=",", skiprows=1, usecols=range(2, 7))[0]
    assert np.abs(sp.values.mean(0) / truth - 1).max() < 0.1 and not sp.warnings
    s = synth.cross_section(0.12, (460, 1200), tilt_deg=1.0, thickness_px=280, seed=5)  # far below the range
    with pytest.warns(UserWarning, match=r"porosity .* is outside the training range .*: the model extrapolates"):
        far = predict_section(r.bundle, open_mosaic(s.image, pixel_size=s.pixel_size), mode="sliding", device="cpu")
    assert far.interval is not None and next(iter(far.interval.values()))["widen"] > 1.5


def test_cross_validation_auto_compares_three_models_and_predicts_with_the_fold_ensemble(
    section_crops, section_set, tmp_path
):
    from ncm_core.training.regression import cross_validate

    from .test_cli import ncm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = cross_validate(
            section_crops,
            section_set / "targets.csv",
            tmp_path / "cv",
            folds=3,
            groups=["porosity"],
            input_size=(32, 96),
            epochs=1,
            batch_size=8,
            curve="descriptors,cnn",  # the CNN's curve too: one training run per point on the first folds
        )
    m = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert m["models"] == ["cnn", "hybrid", "descriptors"] and m["model"] == r.model
    mape = {k: v["mosaics"]["mape"] for k, v in m["baselines"]["models"].items()}
    assert mape[r.model] <= min(mape[k] for k in m["models"]) + 0.005  # the kept model is the best of the three
    assert {"cnn", "hybrid", "descriptors", "mean", "ridge", "boosting"} == set(mape)
    for model in m["models"]:
        assert len(list((tmp_path / "cv" / model).glob("fold_*/config.json"))) == 3
    # interval calibration and the learning curve are in the report
    assert 0 <= m["interval"]["coverage"] <= 1 and m["interval"]["sections"] == 6
    assert len((tmp_path / "cv" / "intervals.csv").read_text().splitlines()) == 7
    curve = (tmp_path / "cv" / "learning_curve.csv").read_text().splitlines()
    assert curve[0].startswith("model,sections,mape") and len(curve) > 2
    cnn_rows = [row for row in m["learning_curve"] if row["model"] == "cnn"]
    assert cnn_rows and all(row["runs"] == 2 for row in cnn_rows)  # NETWORK_FOLDS folds, one subset each
    assert len(list((tmp_path / "cv" / "learning_curve" / "cnn").glob("fold_*_n*/config.json"))) == 2 * len(cnn_rows)
    assert (tmp_path / "cv" / "learning_curve.png").stat().st_size > 1000
    ens = json.loads((tmp_path / "cv" / "ensemble.json").read_text())
    assert ens["model"] == r.model and len(ens["bundles"]) == 3
    # `ncm predict CV_FOLDER MOSAIC OUT`: the kept model's fold bundles together, with a 90 % interval
    p = ncm("predict", tmp_path / "cv", section_set / "section_002.ome.tif", tmp_path / "pred", "--mode", "sliding")
    assert p.returncode == 0, p.stderr
    assert "mean of 3 fold bundles" in p.stdout and "[" in p.stdout
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["members"] == 3 and summary["interval"]["Q_5C"]["low"] < summary["interval"]["Q_5C"]["high"]


def test_second_family_writes_and_its_thin_section_is_skipped_with_a_crop_that_fits(tmp_path):
    from ncm_core.data.sections import extract_sections
    from ncm_core.data.synth_spheres import sphere_cross_section
    from ncm_core.io.mosaic import open_mosaic

    from .test_cli import ncm

    r = ncm("sample", "section-set-spheres", tmp_path / "sph", "--per-porosity", 1, "--shape", 400, 800)
    assert r.returncode == 0, r.stderr
    rows = (tmp_path / "sph" / "targets.csv").read_text().splitlines()
    assert rows[0] == "image,porosity,Q_0.2C,Q_1C,Q_2C,Q_3C,Q_5C" and len(rows) == 6
    truth = json.loads((tmp_path / "sph" / "truth.json").read_text())
    assert {round(v["thickness_um"]) for v in truth.values()} != {40}  # thickness differs between sections
    # one section much thinner than the others (about 100 px): crops of 120 px height do not fit it
    thin = sphere_cross_section(0.3, (300, 800), thickness_um=20.0, seed=1)
    mosaics = [*sorted((tmp_path / "sph").glob("*.ome.tif"))[:2], open_mosaic(thin.image, pixel_size=0.2)]
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = extract_sections(mosaics, tmp_path / "crops", crop=(120, 360), mode="center")
    assert len(out.failures) == 1
    info = json.loads((out / "sections.json").read_text())
    reason = json.dumps(info["failures"][0])
    assert "do not fit" in reason and "--crop " in reason and "(same aspect ratio)" in reason
    assert len(info["mosaics"]) == 2


def test_learning_curve_falls_with_more_sections_and_is_written(tmp_path):
    from ncm_core.data.descriptors import descriptor_matrix
    from ncm_core.training.learning_curve import learning_curve, write_learning_curve
    from ncm_core.training.regression_data import grouped_kfold

    from .test_descriptors import _porosity_case

    x, y, sources = _porosity_case(n_sections=16, crops=3)
    feats, _ = descriptor_matrix(x, sources=sources)
    rows = learning_curve(feats, y, sources, grouped_kfold(sources, 4, seed=0), ["a", "b", "c"], seed=0)
    desc = sorted((r["sections"], r["mape"]) for r in rows if r["model"] == "descriptors")
    mean = {r["sections"]: r["mape"] for r in rows if r["model"] == "mean"}
    assert desc[0][0] == 3 and desc[-1][0] == 12  # 3 ... all 12 training sections of a fold
    assert desc[-1][1] < desc[0][1] and desc[-1][1] < mean[12] / 3  # more sections help; far below the mean
    write_learning_curve(rows, tmp_path)
    table = (tmp_path / "learning_curve.csv").read_text().splitlines()
    assert table[0] == "model,sections,mape,mape_std,runs" and len(table) == len(rows) + 1
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
