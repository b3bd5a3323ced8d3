"""Microstructure descriptors of crops and the baselines of regression reports (issue 18, item 1)."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest

from ncm_core.data.descriptors import DESCRIPTORS, crop_descriptors, descriptor_matrix


def _discs(shape=(200, 200), r=6, spacing=20, offset=0, dark=0.1, bright=0.8, noise=0.0, seed=0):
    """Gray image of dark discs of radius ``r`` on a grid; returns the image and the pore mask."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy = (yy - offset) % spacing - spacing // 2
    cx = (xx - offset) % spacing - spacing // 2
    mask = cy**2 + cx**2 <= r**2
    img = np.where(mask, dark, bright) + np.random.default_rng(seed).normal(0, noise, shape)
    return img.astype(np.float32), mask


def test_checkerboard_porosity_chords_and_interface():
    s = 8
    yy, xx = np.mgrid[:128, :128]
    board = np.where(((yy // s) + (xx // s)) % 2 == 0, 0.1, 0.9)
    d = crop_descriptors(board[None])
    assert d["porosity"][0] == pytest.approx(0.5, abs=0.02)
    assert d["pore_chord"][0] == pytest.approx(s, rel=0.1) and d["solid_chord"][0] == pytest.approx(s, rel=0.1)
    changes = 2 * 128 * (128 // s - 1)  # along rows and along columns
    assert d["interface_density"][0] == pytest.approx(np.pi / 4 * changes / 128**2)
    # lengths in um with a pixel size; the interface per area in 1/um
    du = crop_descriptors(board[None], pixel_size=0.5)
    assert du["pore_chord"][0] == pytest.approx(0.5 * d["pore_chord"][0])
    assert du["interface_density"][0] == pytest.approx(2 * d["interface_density"][0])


@pytest.mark.parametrize("r,spacing", [(6, 16), (8, 24), (12, 30)])
def test_discs_of_known_radius_rgb_with_noise(r, spacing):
    side = 10 * spacing  # 100 whole discs
    img, mask = _discs(shape=(side, side), r=r, spacing=spacing, noise=0.03, seed=r)
    rgb = np.repeat(img[..., None], 3, -1)
    d = crop_descriptors(rgb[None])
    known = np.pi * r**2 * 100 / side**2
    assert d["porosity"][0] == pytest.approx(known, abs=0.02)
    assert d["pore_chord"][0] == pytest.approx(np.pi * r / 2, rel=0.10)  # mean chord of a disc: pi r / 2
    # Cauchy-Crofton: the interface per area is the discs' perimeter per area, within 10 %
    assert d["interface_density"][0] == pytest.approx(2 * np.pi * r * 100 / side**2, rel=0.10)
    # channels-first crops (as prepared for training) give the same numbers
    cf = crop_descriptors(np.moveaxis(rgb, -1, 0)[None], channels_first=True)
    assert all(cf[k][0] == pytest.approx(d[k][0]) for k in DESCRIPTORS)


def test_a_crop_without_pores_has_defined_values():
    flat = np.full((1, 64, 96), 0.8, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value warning either
        d = crop_descriptors(flat)
        noisy = crop_descriptors(flat + np.random.default_rng(0).normal(0, 0.02, flat.shape), threshold=0.5)
    for v in (d, noisy):
        assert v["porosity"][0] == 0 and v["pore_chord"][0] == 0 and v["interface_density"][0] == 0
        assert all(np.isfinite(v[k]).all() for k in DESCRIPTORS)
    assert d["solid_chord"][0] == pytest.approx(2 * 64 * 96 / (64 + 96))  # whole rows and columns
    # among porous crops, a pore-free (noisy) one reads as pore-free: one Otsu threshold for all crops
    porous, _ = _discs(shape=(64, 96), r=6, noise=0.02)
    bright = 0.8 + np.random.default_rng(1).normal(0, 0.02, (64, 96))
    both = crop_descriptors(np.stack([porous, bright]))
    assert both["porosity"][1] < 0.01 and both["porosity"][0] > 0.1
    # all pores: solid chord 0, no NaN
    dark = crop_descriptors(np.zeros((1, 16, 16)), threshold=0.5)
    assert dark["porosity"][0] == 1 and dark["solid_chord"][0] == 0 and dark["interface_density"][0] == 0


def test_descriptors_are_fast_and_vectorised():
    stack = np.stack([_discs(shape=(128, 384), r=3 + k % 5, seed=k, noise=0.02)[0] for k in range(64)])
    crop_descriptors(stack[:2])
    t0 = time.perf_counter()
    d = crop_descriptors(stack)
    per_crop = (time.perf_counter() - t0) / len(stack)
    assert per_crop < 0.01, f"{1000 * per_crop:.1f} ms per crop"
    assert d["porosity"].shape == (64,)
    x, names = descriptor_matrix(stack[:, None], thickness=np.arange(64.0))
    assert x.shape == (64, len(DESCRIPTORS) + 1) and names[-1] == "thickness"
    x, names = descriptor_matrix(stack[:, None], thickness=np.full(64, 5.0))  # constant: left out
    assert names == list(DESCRIPTORS)


def _porosity_case(n_sections=12, crops=4):
    """Crops of sections whose porosity sets the targets (capacity falling with porosity at high rate)."""
    rng = np.random.default_rng(0)
    xs, sources, ys = [], [], []
    for s in range(n_sections):
        r = 3 + 5 * s / (n_sections - 1)  # radius 3..8 px on a 20 px grid: porosity 0.07..0.5
        for k in range(crops):
            img, mask = _discs(shape=(80, 240), r=r, offset=k * 3, noise=0.02, seed=100 * s + k)
            xs.append(img)
            sources.append(f"s{s:02d}")
        p = np.pi * r**2 / 400
        ys += [[180 - 20 * p, 160 - 120 * p**2, 150 - 200 * p**2]] * crops
    return np.stack(xs)[:, None], np.array(ys) * (1 + rng.normal(0, 0.002, (len(ys), 3))), sources


def test_descriptor_baseline_beats_the_mean_and_the_report_warns_about_a_worse_cnn(tmp_path):
    from ncm_core.evaluation.baselines import baseline_report, cv_baselines, ranking_line
    from ncm_core.training.regression_data import grouped_kfold

    x, y, sources = _porosity_case()
    names = ["Q_0.2C", "Q_1C", "Q_5C"]
    feats, fnames = descriptor_matrix(x)
    splits = grouped_kfold(sources, 4, seed=0)
    pred = cv_baselines(feats, y, splits)
    # a CNN that learnt little: the training mean plus noise
    cnn = pred["mean"] * (1 + np.random.default_rng(1).normal(0, 0.01, y.shape))
    with pytest.warns(UserWarning, match=r"the CNN \(.*\) does not beat the descriptor model") as rec:
        rep = baseline_report(y, sources, pred, names, tmp_path, cnn=cnn, descriptors=fnames)
    assert len([w for w in rec if "does not beat" in str(w.message)]) == 1
    mape = {m: rep["models"][m]["mosaics"]["mape"] for m in rep["models"]}
    print("MAPE per mosaic:", {m: round(v, 2) for m, v in mape.items()})
    assert min(mape["ridge"], mape["boosting"]) < mape["mean"] / 4
    assert rep["ranking"][-2:] in (["cnn", "mean"], ["mean", "cnn"]) and rep["cnn_beats_descriptors"] is False
    table = (tmp_path / "baselines.csv").read_text().splitlines()
    assert table[0].startswith("rank,model,kind,mosaic_mape") and len(table) == 5
    assert ranking_line(rep).startswith("ranking by MAPE per mosaic: ")
    # a CNN that is better than the descriptors: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = baseline_report(y, sources, pred, names, None, cnn=y.copy())
    assert rep["ranking"][0] == "cnn" and rep["cnn_beats_descriptors"] is True


def test_single_fit_with_validation_writes_baselines(tiny_regressor):
    rep = json.loads((tiny_regressor / "baselines.json").read_text())
    assert set(rep["models"]) == {"cnn", "mean", "ridge", "boosting"} and rep["split"] == "validation mosaics"
    assert "porosity" in rep["descriptors"]
    assert (tiny_regressor / "baselines.csv").stat().st_size > 50
