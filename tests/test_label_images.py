"""Segmentation training data: sample images with known phases, painted strokes, and label sets read
from a folder, with one clear line for each way a folder can be wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ncm_core.data.label_images import fit_normalization, load_label_set
from ncm_core.data.synth_phases import PHASES, paint_strokes, phase_sample, write_phase_dataset
from ncm_core.errors import NcmError


@pytest.mark.parametrize("kind", ["sem", "section"])
def test_phase_samples_know_their_phases_and_particles(kind):
    s = phase_sample(kind, (160, 200), seed=3)
    assert s.image.shape[:2] == s.truth.shape == (160, 200)
    assert s.image.ndim == (2 if kind == "sem" else 3)
    assert sorted(np.unique(s.truth)) == list(range(len(PHASES[kind])))
    # particles are discs of the stated radii that do not overlap: the active area is their total area
    cy, cx, r = s.particles.T
    inside = (cy - r >= 0) & (cy + r < 160) & (cx - r >= 0) & (cx + r < 200)
    assert inside.sum() > 10
    d = np.hypot(cy[:, None] - cy[None], cx[:, None] - cx[None]) + np.eye(len(r)) * 1e9
    assert (d >= r[:, None] + r[None] - 0.5).all()
    yy, xx = np.mgrid[:160, :200]
    for y, x, rad in s.particles[inside][:5]:
        disc = (yy - y) ** 2 + (xx - x) ** 2 < (rad - 1) ** 2
        assert (s.truth[disc] == PHASES[kind].index("active")).all()
    assert np.array_equal(phase_sample(kind, (160, 200), seed=3).image, s.image)


def test_strokes_stay_inside_their_phase_and_cover_about_one_percent():
    s = phase_sample("sem", (256, 256), seed=1)
    strokes = paint_strokes(s.truth, 3, fraction=0.01, seed=1)
    painted = strokes > 0
    assert 0.005 < painted.mean() < 0.02
    assert (strokes[painted] == s.truth[painted] + 1).all()
    assert set(np.unique(strokes[painted])) == {1, 2, 3}  # every phase gets strokes


def test_written_dataset_reads_back_as_a_label_set(tmp_path):
    out = write_phase_dataset(tmp_path / "phases", 2, "section", (96, 128), seed=2)
    info = json.loads((out / "phases.json").read_text())
    assert set(info) == {"section_000", "section_001"} and info["section_000"]["radii_px"]
    ls = load_label_set(out)
    assert ls.classes == list(PHASES["section"]) and ls.names == ["section_000", "section_001"]
    assert ls.channels == 3 and ls.images[0].shape == (3, 96, 128)
    assert ls.counts().min() > 0 and not ls.notes
    truth = np.asarray(Image.open(out / "section_000_truth.png"))
    assert (ls.labels[0][ls.labels[0] > 0] == truth[ls.labels[0] > 0]).all()
    lo, hi = fit_normalization(ls.images)
    assert 0 <= lo < hi <= 255
    assert np.mean([(im < lo).mean() for im in ls.images]) < 0.02  # a low percentile, robust to outliers


def _folder(tmp_path, labels, image_shape=(20, 30), channels=(1,), classes="a\nb\nc\n"):
    d = tmp_path / "data"
    d.mkdir()
    for i, lab in enumerate(labels):
        c = channels[i % len(channels)]
        img = np.full(image_shape + ((c,) if c > 1 else ()), 100, np.uint8)
        Image.fromarray(img).save(d / f"im{i}.png")
        Image.fromarray(np.asarray(lab, np.uint8)).save(d / f"im{i}_labels.png")
    if classes:
        (d / "classes.txt").write_text(classes)
    return d


def _lab(*values, shape=(20, 30)):
    lab = np.zeros(shape, np.uint8)
    for k, v in enumerate(values):
        lab[k, :5] = v
    return lab


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda p: _folder(p, [_lab(1, 2, shape=(20, 31))]), ["im0_labels.png", "20x31 px", "same size"]),
        (lambda p: _folder(p, [_lab(2, 2)]), ["only class 'b' is labelled"]),
        (lambda p: _folder(p, [_lab(1, 4)]), ["classes.txt", "label value 4 has no class name", "a, b, c"]),
        (lambda p: _folder(p, [_lab()]), ["no labelled pixel"]),
        (lambda p: _folder(p, [_lab(1), _lab(2)], channels=(1, 3)), ["im1.png", "3 channel(s)", "same channels"]),
        (lambda p: _folder(p, [], classes=None), ["no image with a label image"]),
    ],
    ids=["size", "one-class", "class-list", "unlabelled", "channels", "no-labels"],
)
def test_bad_label_folders_are_refused_in_one_line(tmp_path, make, words):
    with pytest.raises(NcmError) as e:
        load_label_set(make(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_classes_argument_wins_and_unlabelled_classes_are_noted(tmp_path):
    d = _folder(tmp_path, [_lab(1, 2)], classes=None)
    ls = load_label_set(d, classes=["pore", "solid", "binder"])
    assert ls.classes == ["pore", "solid", "binder"] and list(ls.counts()) == [5, 5, 0]
    assert any("binder" in n for n in ls.notes)
    assert load_label_set(d).classes == ["class_1", "class_2"]


def test_sample_commands_write_phase_folders_and_a_chunked_mosaic(tmp_path, capsys):
    import zarr

    from ncm_core.cli import main
    from ncm_core.io.mosaic import open_mosaic

    assert main(["sample", "phases", str(tmp_path / "p"), "--frames", "1", "--shape", "64", "80"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "classes.txt",
        "ncm-sample.json",
        "phases.json",
        "sem_000.png",
        "sem_000_labels.png",
        "sem_000_truth.png",
    ]
    args = ["sample", "phase-mosaic", str(tmp_path / "m.zarr"), "--shape", "300", "260", "--chunks", "128"]
    assert main(args) == 0
    m = open_mosaic(tmp_path / "m.zarr")
    assert m.shape[:2] == (300, 260) and m.data.chunksize[:2] == (128, 128) and m.pixel_size == 0.05
    root = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    truth, strokes = np.asarray(root["labels/truth/0"]), np.asarray(root["labels/strokes/0"])
    painted = strokes > 0
    assert set(np.unique(truth)) == {1, 2, 3} and (strokes[painted] == truth[painted]).all()
    assert len(root.attrs["phases"]["radii_px"]) > 10
    assert "phase mosaic" in capsys.readouterr().out
