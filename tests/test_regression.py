"""The cross-section workflow (Deeg et al. 2024): collector detection and crops, targets CSV, the
published network, MAPE, grouped cross-validation, best-weight restore, section prediction."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncm_core.data import synth
from ncm_core.data.sections import detect_section, iter_crops, largest_rectangle, sample_frame
from ncm_core.errors import NcmError
from ncm_core.io.mosaic import open_mosaic


# ------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("tilt, seed", [(-3.0, 1), (-1.3, 2), (0.0, 3), (0.7, 4), (2.9, 5)])
def test_collector_angle_and_thickness_of_tilted_sections(tilt, seed):
    s = synth.cross_section(0.35, (520, 1500), tilt_deg=tilt, thickness_px=300, seed=seed)
    g = detect_section(open_mosaic(s.image, pixel_size=s.pixel_size))
    assert abs(g.angle_deg - tilt) < 0.05
    assert not g.turned
    # the collector's top edge passes through the known row at the image centre
    c_mid = (1500 - 1) / 2 / np.cos(np.radians(g.angle_deg))
    assert abs(g.to_mosaic(0.0, c_mid)[0] - s.collector_row) < 1.5
    # collector to surface: the layer plus the 2-row epoxy gap the generator leaves above the collector
    assert g.thickness_um == pytest.approx(s.thickness_um + 2 * s.pixel_size, rel=0.02)
    # crops lie inside the rectangle between collector and surface, side by side
    r0, r1, c0, c1 = g.rectangle
    assert r1 - r0 >= 224 and -r0 <= 300 + 2
    assert len(g.crops) == (c1 - c0) // 672 >= 1
    for r, c in g.crops:
        assert r0 <= r and r + 224 <= r1 and c0 <= c and c + 672 <= c1


def test_crops_are_straightened_and_the_collector_band_is_uniform():
    s = synth.cross_section(0.3, (520, 1500), tilt_deg=2.5, thickness_px=300, seed=7)
    m = open_mosaic(s.image)
    g = detect_section(m, crop=(200, 600), mode="sliding", stride=(50, 300))
    o, u, d = (np.asarray(v) for v in (g.origin, g.u, g.d))
    band, _ = sample_frame(m, o, u, d, 3, 100, 28, 1200, gray=True)  # rows 3..30 below the edge: the collector
    assert band.min() > 190
    above, _ = sample_frame(m, o, u, d, -8, 100, 6, 1200, gray=True)  # just above: the porous layer
    assert above.mean() < 170
    crops = list(iter_crops(m, g))
    assert len(crops) == len(g.crops) > 2 and all(c.shape == (200, 600, 3) and c.dtype == np.uint8 for c in crops)
    assert max(float(c.mean(axis=(1, 2)).max()) for c in crops) < 200  # no crop reaches into the collector
    # crop corners in the mosaic are the rotated rectangle
    poly = g.polygon(*g.crops[0], *g.crop)
    assert np.allclose(np.linalg.norm(poly[1] - poly[0]), 599) and np.allclose(np.linalg.norm(poly[3] - poly[0]), 199)


def test_collector_at_the_top_is_turned_with_a_warning():
    s = synth.cross_section(0.35, (520, 1500), tilt_deg=1.0, thickness_px=300, seed=8)
    with pytest.warns(UserWarning, match="collector is at the top"):
        g = detect_section(open_mosaic(s.image[::-1]))
    assert g.turned and abs(g.angle_deg + 1.0) < 0.05
    assert g.thickness_um is None and g.thickness_px == pytest.approx(302, abs=6)


def test_largest_rectangle_under_a_histogram():
    assert largest_rectangle([2, 1, 5, 6, 2, 3]) == (2, 4, 5.0)
    assert largest_rectangle([3, 3, 3]) == (0, 3, 3.0)
    assert largest_rectangle([0, 0]) == (0, 0, 0.0)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("noise", "no current collector"),
        ("sem", "no current collector"),
        ("thin", "do not fit"),
    ],
)
def test_bad_sections_give_one_clear_error(kind, words):
    rng = np.random.default_rng(0)
    if kind == "noise":
        img = rng.integers(0, 255, (400, 1200), dtype=np.uint8)
    elif kind == "sem":
        img = synth.sem_frame("NCM622", "pristine", (400, 600), info_bar=None)
    else:
        img = synth.cross_section(0.35, (400, 1500), tilt_deg=0.5, thickness_px=150, seed=1).image
    with pytest.raises(NcmError, match=words) as e:
        detect_section(open_mosaic(img))
    assert "\n" not in str(e.value)


def test_section_detection_reads_the_mosaic_in_strips(monkeypatch):
    """Every read of a lazy mosaic is one strip (or one crop's bounding box), never the whole image."""
    import dask.array as da

    from ncm_core.data import section_detection as sections

    s = synth.cross_section(0.35, (520, 1500), tilt_deg=1.0, thickness_px=300, seed=9)
    shapes = []
    real = sections._gray

    def recording(block):
        shapes.append(np.shape(block))
        return real(block)

    monkeypatch.setattr(sections, "_gray", recording)
    g = detect_section(open_mosaic(da.from_array(s.image, chunks=(256, 256, 3))), strip=32)
    assert abs(g.angle_deg - 1.0) < 0.05
    assert shapes and all(sh[1] <= 32 + 2 * (1 + 520 * np.sin(np.radians(1.5))) for sh in shapes)
    assert max(sh[0] * sh[1] for sh in shapes) < 0.1 * 520 * 1500


# ------------------------------------------------------------------------------------------ targets
def _csv(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_targets_csv_reads_values_groups_and_c_rates(tmp_path):
    from ncm_core.data.targets import read_targets

    t = read_targets(
        _csv(tmp_path, "image,porosity,Q_0.2C,Q_1C,Q_5C\na.tif,0.3,180,150,60\nb,0.4,181,160,80\n"), groups=["porosity"]
    )
    assert t.names == ["Q_0.2C", "Q_1C", "Q_5C"] and t.values.shape == (2, 3)
    assert t.groups["porosity"] == ["0.3", "0.4"] and t.c_rates() == [0.2, 1.0, 5.0]
    assert t.index("a") == 0 and t.index("b.ome.tif") == 1 and t.index("c") is None


@pytest.mark.parametrize(
    "text, words",
    [
        ("image,Q_1C\na,150\nb,abc\n", "row 3: Q_1C of 'b' is not a number"),
        ("image,Q_1C,Q_2C\na,150,\nb,160,120\n", "row 2: Q_2C of 'a' is missing"),
        ("image,Q_1C\na,150\na,160\n", "listed twice"),
        ("name,Q_1C\na,150\n", "needs an 'image' column"),
        ("image,Q_1C\na,0\nb,10\n", "MAPE is undefined at zero"),
    ],
)
def test_bad_targets_csv_is_one_line(tmp_path, text, words):
    from ncm_core.data.targets import read_targets

    with pytest.raises(NcmError, match=words) as e:
        read_targets(_csv(tmp_path, text))
    assert "\n" not in str(e.value) and "t.csv" in str(e.value)


def test_constant_target_warns(tmp_path):
    from ncm_core.data.targets import read_targets

    with pytest.warns(UserWarning, match="same value"):
        read_targets(_csv(tmp_path, "image,Q_1C,Q_2C\na,150,100\nb,150,110\n"))


def test_csv_rows_naming_missing_mosaics_are_an_error(section_crops, section_set, tmp_path):
    from ncm_core.training.regression import load_regression_data

    text = (section_set / "targets.csv").read_text() + "section_999,0.3,1,2,3,4,5\n"
    with pytest.raises(NcmError, match="1 row.*section_999"):
        load_regression_data(section_crops, _csv(tmp_path, text), groups=["porosity"])


# ------------------------------------------------------------------------------------------ model and loss
def test_published_architecture_and_parameter_count():
    import torch

    from ncm_core.models.factory import build_model

    m = build_model("ncm_vgg", 5, in_chans=3)
    conv = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9 + 64 * 96 * 9 + 96 * 96 * 9  # no conv biases
    bn2d = 2 * 2 * (32 + 64 + 96)
    dense = (96 * 64 + 64) + 3 * (64 * 64 + 64) + 4 * 2 * 64 + (64 * 5 + 5)
    assert sum(p.numel() for p in m.parameters()) == conv + bn2d + dense == 223_909
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 96, 96] and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(x, torch.nn.MaxPool2d) for x in m.modules()) == 2
    assert sum(isinstance(x, torch.nn.Linear) for x in m.modules()) == 5
    m.eval()
    assert m(torch.rand(2, 3, 224, 672)).shape == (2, 5) and m(torch.rand(1, 3, 56, 168)).shape == (1, 5)


def test_mape_loss_matches_a_hand_computation():
    import torch

    from ncm_core.training.regression import mape, regression_loss

    pred = torch.tensor([[110.0, 50.0], [95.0, 44.0]])
    true = torch.tensor([[100.0, 40.0], [100.0, 40.0]])
    hand = 100 * (10 / 100 + 10 / 40 + 5 / 100 + 4 / 40) / 4
    assert float(mape(pred, true)) == pytest.approx(hand) == pytest.approx(12.5)
    # the training loss works on standardised values and un-standardises for MAPE
    mean, std = torch.tensor([100.0, 40.0]), torch.tensor([5.0, 2.0])
    assert float(regression_loss("mape")((pred - mean) / std, (true - mean) / std, mean, std)) == pytest.approx(hand)


def test_lookahead_radam_and_warmup_schedule_as_published():
    import torch
    from timm.optim import Lookahead, create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    model = torch.nn.Linear(3, 1)
    opt = create_optimizer_v2(model, opt="lookahead_radam", lr=1e-3)
    assert isinstance(opt, Lookahead) and opt.defaults["lookahead_k"] == 6 and opt.defaults["lookahead_alpha"] == 0.5
    sched, _ = create_scheduler_v2(
        opt,
        sched="cosine",
        num_epochs=9,
        warmup_epochs=1.0,
        warmup_prefix=True,
        warmup_lr=1e-5,
        min_lr=1e-5,
        step_on_epochs=False,
        updates_per_epoch=10,
    )
    lrs = []
    for step in range(100):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-5) and max(lrs) == pytest.approx(1e-3, rel=0.02)
    assert int(np.argmax(lrs)) == 10 and lrs[-1] < 2e-5  # up over the first 10 % of steps, then back down


def test_augmentation_keeps_size_and_is_identity_without_movement(rng):
    import torch

    from ncm_core.training.regression import augment_batch

    x = torch.rand(4, 3, 32, 96)
    same = augment_batch(x, rng, ("shift", "rotate"), max_shift=0.0, max_rotate=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    moved = augment_batch(x, rng, ("shift", "rotate", "hflip"))
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    flipped = augment_batch(x, np.random.default_rng(3), ("hflip",))
    for a, b in zip(flipped, x):
        assert torch.allclose(a, b, atol=1e-5) or torch.allclose(a, b.flip(-1), atol=1e-5)


# ------------------------------------------------------------------------------------------ splits
@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=12, max_size=60), st.integers(2, 5), st.integers(0, 100))
def test_grouped_kfold_never_puts_a_group_on_both_sides(groups, folds, seed):
    from ncm_core.training.regression import grouped_kfold

    groups = [f"m{g}" for g in groups]
    if len(set(groups)) < folds:
        with pytest.raises(NcmError, match="needs at least"):
            grouped_kfold(groups, folds, seed)
        return
    splits = grouped_kfold(groups, folds, seed)
    g = np.asarray(groups)
    seen = np.zeros(len(g), int)
    for tr, te in splits:
        assert not set(g[tr]) & set(g[te])
        assert len(tr) + len(te) == len(g)
        seen[te] += 1
    assert (seen == 1).all()  # every crop is tested exactly once


def test_best_weights_are_restored_not_the_last_ones(tmp_path):
    """The loop keeps the weights of the epoch with the best validation score (scripted here)."""
    import torch

    from ncm_core.training.loop import Task, run_epochs

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = type("S", (), {"step_update": lambda self, **k: None, "step": lambda self, e: None})()
    scores = iter([3.0, 1.0, 2.0, 5.0, 4.0])  # validation MAPE per epoch: epoch 2 is the best
    snapshots = []

    def validate():
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_loss": 0.0, "val_mape": next(scores)}

    x, y = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32), np.ones((16, 1), np.float32)
    task = Task(
        step=lambda xb, yb, r: (((model(xb) - yb) ** 2).mean(), None),
        stats=lambda o, yb: {},
        validate=validate,
        score=lambda rec: (-rec["val_mape"], 0.0),
        has_validation=True,
    )
    st_ = run_epochs(
        model=model,
        opt=opt,
        sched=sched,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        task=task,
        epoch_data=lambda r: (x, y),
        to_input=torch.as_tensor,
        to_target=torch.as_tensor,
        epochs=5,
        batch_size=4,
        steps_per_epoch=4,
        rng=np.random.default_rng(0),
        fingerprint="x",
        ckpt_dir=tmp_path / "ck",
        ckpt=None,
        patience=2,
        progress=None,
        cancel=None,
        on_epoch=None,
        t0=0.0,
    )
    assert st_.best_epoch == 2 and len(st_.history) == 4  # early stop after 2 epochs without improvement
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[1][k]) and not torch.equal(v, snapshots[-1][k])


# ------------------------------------------------------------------------------------------ training
def test_regressor_bundle_keeps_its_best_epoch_and_units(tiny_regressor, section_crops, section_set):
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.regression import load_regression_data, predict_values, regression_metrics

    b = load_bundle(tiny_regressor)
    cfg = b.config
    assert cfg.task == "regress" and cfg.architecture == "ncm_vgg"
    assert cfg.target_names == ["Q_0.2C", "Q_1C", "Q_2C", "Q_3C", "Q_5C"]
    assert cfg.regression["c_rates"] == [0.2, 1.0, 2.0, 3.0, 5.0] and cfg.regression["crop_size"] == [128, 384]
    assert cfg.training["optimizer"] == "lookahead_radam" and cfg.training["loss"] == "mape"
    hist = cfg.training["history"]
    best = cfg.training["best_epoch"]
    assert best == 1 + int(np.argmin([h["val_mape"] for h in hist]))
    # the bundle's weights are the best epoch's: their validation MAPE is the one recorded for it
    d = load_regression_data(section_crops, section_set / "targets.csv", (32, 96), groups=["porosity"])
    val = [i for i, s in enumerate(d.sources) if s in cfg.training["val_sources"]]
    assert val and not set(cfg.training["val_sources"]) & set(cfg.training["train_sources"])
    v = predict_values(b, d.x[val])
    assert regression_metrics(d.y[val], v, d.target_names)["mape"] == pytest.approx(
        hist[best - 1]["val_mape"], rel=1e-4
    )
    assert 20 < float(v.mean()) < 250  # in Ah/kg, not standardised units


def test_cross_validation_is_grouped_and_reports(section_crops, section_set, tmp_path):
    from ncm_core.data.descriptors import DESCRIPTORS
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.regression import cross_validate

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        r = cross_validate(
            section_crops,
            section_set / "targets.csv",
            tmp_path / "cv",
            folds=3,
            groups=["porosity"],
            input_size=(32, 96),
            epochs=2,
            batch_size=8,
            l1=1e-6,
            adversarial=2.0,
            model="cnn",
        )
    folds = {}
    for row in r.predictions:
        folds.setdefault(row["source"], set()).add(row["fold"])
    assert all(len(f) == 1 for f in folds.values()) and set().union(*folds.values()) == {1, 2, 3}
    for k, path in enumerate(r.folds, start=1):
        tr = load_bundle(path).config.training
        test = {s for s, f in folds.items() if f == {k}}
        assert test and not test & set(tr["train_sources"]) and not test & set(tr["val_sources"])
        assert tr["adversarial"] == 2.0 and tr["l1"] == 1e-6
    m = json.loads((tmp_path / "cv" / "metrics.json").read_text())
    assert len(m["folds"]) == 3 and set(m["fold_mean"]) == {"mape", "mae", "r2"}
    assert set(m["crops"]["targets"]) == {"Q_0.2C", "Q_1C", "Q_2C", "Q_3C", "Q_5C"}
    assert {g["value"] for g in m["groups"] if g["group"] == "porosity"} == {"0.25", "0.35", "0.45"}
    for f in ("predictions.csv", "per_group.csv", "per_target.csv", "scatter.png", "rate_capability.png"):
        assert (tmp_path / "cv" / f).stat().st_size > 100
    # the baselines on the same folds (issue 18): training mean and descriptor models, ranked with the CNN
    b = m["baselines"]
    assert set(b["models"]) == {"cnn", "mean", "ridge", "boosting"} and len(b["ranking"]) == 4
    assert b["models"]["cnn"]["crops"]["mape"] == pytest.approx(m["crops"]["mape"])
    assert b["descriptors"][:4] == list(DESCRIPTORS)
    mape = {k: round(v["mosaics"]["mape"], 2) for k, v in b["models"].items()}
    print("cross-validation MAPE per mosaic:", mape)
    warned = [w for w in rec if "does not beat the descriptor model" in str(w.message)]
    assert len(warned) == (0 if b["cnn_beats_descriptors"] else 1)
    assert (tmp_path / "cv" / "baselines.csv").read_text().count("\n") == 5
    assert r.metrics["baselines"]["ranking"] == b["ranking"]
    # a second run reuses the finished folds
    again = cross_validate(
        section_crops,
        section_set / "targets.csv",
        tmp_path / "cv",
        folds=3,
        groups=["porosity"],
        input_size=(32, 96),
        epochs=2,
        batch_size=8,
        l1=1e-6,
        adversarial=2.0,
        model="cnn",
    )
    assert again.metrics["crops"] == r.metrics["crops"] and again.seconds < r.seconds


def test_predict_section_gives_values_per_crop_and_a_summary(tiny_regressor, section_set, tmp_path):
    from ncm_core.training.regression import predict_section, write_section_prediction

    mosaic = section_set / "section_000.ome.tif"
    sp = predict_section(tiny_regressor, mosaic, mode="sliding", device="cpu")
    assert sp.values.shape == (len(sp.geometry.crops), 5) and len(sp.geometry.crops) > 1
    assert sp.geometry.crop == (128, 384) and sp.ood is not None
    s = sp.summary()
    assert s["Q_1C"]["mean"] == pytest.approx(sp.values[:, 1].mean())
    out = write_section_prediction(sp, tmp_path / "pred")
    info = json.loads((out / "summary.json").read_text())
    assert info["crops"] == len(sp.values) and abs(info["geometry"]["angle_deg"]) <= 3.05
    assert (out / "rate_capability.png").is_file() and len((out / "crops.csv").read_text().splitlines()) == len(
        sp.values
    ) + 1


def test_classifier_and_regressor_bundles_are_not_mixed_up(tiny_bundle, tiny_regressor, section_set):
    from ncm_core.training.regression import predict_section

    with pytest.raises(NcmError, match="classifier"):
        predict_section(tiny_bundle, section_set / "section_000.ome.tif")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ncm_core.inference.predict import predict_mosaic

        with pytest.raises(NcmError, match="regress"):
            predict_mosaic(tiny_regressor, section_set / "section_000.ome.tif", "unused.zarr")


def test_val_fraction_zero_trains_on_every_mosaic_and_keeps_the_last_epoch(section_crops, section_set, tmp_path):
    from ncm_core.models.bundle import load_bundle
    from ncm_core.training.config import NO_VALIDATION
    from ncm_core.training.regression import grouped_split, train_regressor

    tr_idx, va_idx = grouped_split(["a", "a", "b", "c"], 0.0)
    assert tr_idx.tolist() == [0, 1, 2, 3] and va_idx.tolist() == []
    r = train_regressor(
        section_crops,
        section_set / "targets.csv",
        tmp_path / "m",
        groups=["porosity"],
        input_size=(32, 96),
        epochs=2,
        batch_size=8,
        val_fraction=0,
        ood=False,
    )
    tr = load_bundle(r.bundle).config.training
    assert tr["val_sources"] == [] and len(tr["train_sources"]) == 6 and tr["val_fraction"] == 0
    assert r.best_epoch == 2 == len(r.history) and tr["kept_epoch"] == NO_VALIDATION and not r.validated
    assert np.isnan(r.best_val_mape)


def test_val_fraction_zero_for_regression_from_the_command_line(section_crops, section_set, tmp_path):
    from .test_cli import ncm

    r = ncm(
        "train",
        section_crops,
        tmp_path / "m",
        "--task",
        "regress",
        "--targets",
        section_set / "targets.csv",
        "--group",
        "porosity",
        "--input-size",
        "32x96",
        "--epochs",
        2,
        "--batch-size",
        8,
        "--val-fraction",
        0,
        "--no-ood",
        "-q",
    )
    assert r.returncode == 0, r.stderr
    assert "no validation data: the last epoch (2 of 2) is kept" in r.stdout
    r = ncm(
        "train",
        section_crops,
        tmp_path / "n",
        "--task",
        "regress",
        "--targets",
        section_set / "targets.csv",
        "--monitor",
        "accuracy",
        "-q",
    )
    assert r.returncode != 0 and "--monitor for regression is mape or loss, not accuracy" in r.stderr


def test_regression_options_are_checked_in_one_line():
    from ncm_core.training.config import RegressConfig

    with pytest.raises(NcmError, match="loss must be one of mape, mae, mse, huber, got 'l1'"):
        RegressConfig(loss="l1").validate()
    with pytest.raises(NcmError, match="did you mean 'max_rotate'"):
        from ncm_core.options import merge_options

        merge_options(RegressConfig, None, {"max_rotation": 5})
