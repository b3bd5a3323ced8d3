"""The SEM classification workflow: crops with frames held out, annotations with regions held out,
training that resumes, evaluation with marginal accuracies, whole-image aggregates and OOD flags."""

import csv
import json
import threading

import numpy as np
import pytest
from PIL import Image

from ncm_core.data import synth
from ncm_core.data.annotations import Rectangle, tiles_from_annotations
from ncm_core.data.crops import build_crops
from ncm_core.data.tilesets import open_tile_set
from ncm_core.errors import Cancelled, NcmError
from ncm_core.evaluation.evaluate import class_factors, evaluate, marginal_metrics, summarize_prediction
from ncm_core.models.bundle import load_bundle
from ncm_core.training.classify import train


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """3 classes x 4 frames of 160x128 px with a 16-row info bar."""
    return synth.write_sem_dataset(
        tmp_path_factory.mktemp("f") / "frames",
        4,
        (160, 128),
        info_bar=16,
        classes=("NCM333_pristine", "NCM811_pristine", "NCM811_cycled100"),
    )


@pytest.fixture(scope="module")
def crops(frames, tmp_path_factory):
    return build_crops(
        frames,
        tmp_path_factory.mktemp("c") / "crops",
        size=32,
        per_frame=6,
        val_fraction=0.25,
        test_fraction=0.25,
        exclude_rows=(-16, None),
        seed=0,
    )


# ----------------------------------------------------------------------------------------- crops
def test_crops_hold_whole_frames_out_before_cropping(crops):
    frames_of = {s: {r.source for r in crops.split(s)} for s in ("train", "val", "test")}
    assert frames_of["train"] and frames_of["val"] and frames_of["test"]
    assert not (frames_of["train"] & frames_of["val"]) and not (frames_of["train"] & frames_of["test"])
    assert not (frames_of["val"] & frames_of["test"])
    for s in ("val", "test"):  # every class has a held-out frame
        assert {r.cls for r in crops.split(s)} == set(crops.class_names)
    assert len(crops.records) == 12 * 6


def test_crop_manifest_records_the_rectangle_and_avoids_the_info_bar(crops, frames):
    for r in crops.records[::7]:
        y0, x0, y1, x1 = r.rect
        assert y1 - y0 == x1 - x0 == 32 and 0 <= y0 and y1 <= 160 - 16  # never touches the 16-row bar
        frame = np.asarray(Image.open(frames / r.source))
        assert np.array_equal(np.asarray(Image.open(crops.root / r.file)), frame[y0:y1, x0:x1])
    meta = json.loads((crops.root / "manifest.json").read_text())
    assert meta["params"]["exclude_rows"] == [-16, None] and meta["class_names"] == crops.class_names


def test_crops_are_reproducible_by_seed(frames, crops, tmp_path):
    again = build_crops(
        frames,
        tmp_path / "again",
        size=32,
        per_frame=6,
        val_fraction=0.25,
        test_fraction=0.25,
        exclude_rows=(-16, None),
        seed=0,
    )
    assert [r.row() for r in again.records] == [r.row() for r in crops.records]
    for a, b in zip(again.records[::11], crops.records[::11]):
        assert (again.root / a.file).read_bytes() == (crops.root / b.file).read_bytes()
    other = build_crops(
        frames,
        tmp_path / "other",
        size=32,
        per_frame=6,
        val_fraction=0.25,
        test_fraction=0.25,
        exclude_rows=(-16, None),
        seed=1,
    )
    assert [r.rect for r in other.records] != [r.rect for r in crops.records]


def test_crops_avoid_masked_pixels(frames, tmp_path):
    masks = tmp_path / "masks" / "NCM333_pristine"
    masks.mkdir(parents=True)
    m = np.zeros((160, 128), np.uint8)
    m[:, :80] = 255  # only the right 48 columns are allowed
    Image.fromarray(m).save(masks / "NCM333_pristine_000.png")
    ts = build_crops(
        frames,
        tmp_path / "c",
        size=32,
        per_frame=10,
        val_fraction=0.25,
        test_fraction=0.0,
        masks=tmp_path / "masks",
        seed=0,
    )
    rects = [r.rect for r in ts.records if r.source == "NCM333_pristine/NCM333_pristine_000.png"]
    assert len(rects) == 10 and all(x0 >= 80 for _, x0, _, _ in rects)


def test_a_tampered_manifest_with_leakage_is_refused(crops, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(crops.root, bad)
    rows = list(csv.DictReader((bad / "manifest.csv").read_text().splitlines()))
    val_frame = next(r["source"] for r in rows if r["split"] == "val")
    for r in rows:
        if r["source"] == val_frame:
            r["split"] = "train"
            break
    with open(bad / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(NcmError, match="leakage"):
        open_tile_set(bad)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(size=200), "larger than the frame"),
        (dict(val_fraction=0.5, test_fraction=0.5), "nothing to train"),
    ],
)
def test_crop_parameters_that_cannot_work(frames, tmp_path, kwargs, words):
    with pytest.raises(NcmError, match=words):
        build_crops(frames, tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.partial").exists()


def test_mixed_frame_sizes_warn(tmp_path):
    root = tmp_path / "d"
    for name, shapes in [("a", [(64, 64), (80, 96), (64, 64)]), ("b", [(64, 64)] * 3)]:
        (root / name).mkdir(parents=True)
        for k, shp in enumerate(shapes):
            Image.fromarray(np.random.default_rng(k).integers(0, 255, shp, np.uint8)).save(root / name / f"{k}.png")
    with pytest.warns(UserWarning, match="different sizes"):
        ts = build_crops(root, tmp_path / "c", size=32, per_frame=2, val_fraction=0.34, test_fraction=0.34)
    assert len(ts.records) == 12


def test_one_frame_too_few_for_three_splits(tmp_path):
    root = tmp_path / "d"
    for name, n in [("a", 3), ("b", 2)]:
        (root / name).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(np.full((64, 64), 10 * k, np.uint8)).save(root / name / f"{k}.png")
    with pytest.raises(NcmError, match="class 'b' has 2 source image"):
        build_crops(root, tmp_path / "c", size=32, val_fraction=0.2, test_fraction=0.2)


# ----------------------------------------------------------------------------------------- annotations
@pytest.fixture(scope="module")
def painted():
    """A 3-class sample mosaic with two separate painted blobs inside every class region."""
    m = synth.sem_mosaic((400, 600), grid=(2, 3), seed=1, classes=synth.CLASS_NAMES[:3])
    lab = np.zeros(m.image.shape, np.uint8)
    for y0, y1, x0, x1, c in m.regions:
        lab[y0 + 8 : y0 + 80, x0 + 8 : x0 + 80] = c + 1
        lab[y1 - 80 : y1 - 8, x1 - 80 : x1 - 8] = c + 1
    return m, lab


def test_painted_regions_never_feed_two_splits(painted, tmp_path):
    m, lab = painted
    ts = tiles_from_annotations(
        m.image, tmp_path / "t", tile=32, labels=lab, names=list(m.class_names), val_fraction=0.25, min_coverage=0.75
    )
    groups = {s: set(ts.groups(s)) for s in ("train", "val")}
    assert groups["train"] and groups["val"] and not groups["train"] & groups["val"]
    present = {m.class_names[c] for *_, c in m.regions}
    assert {r.cls for r in ts.split("val")} == present  # 4 regions per class: one held out each
    for r in ts.records:  # each tile lies under its class's paint, and the tile file is those pixels
        y0, x0, y1, x1 = r.rect
        cover = lab[y0:y1, x0:x1] == m.class_names.index(r.cls) + 1
        assert cover.mean() >= 0.75
    r = ts.records[0]
    y0, x0, y1, x1 = r.rect
    assert np.array_equal(np.asarray(Image.open(ts.root / r.file)), m.image[y0:y1, x0:x1])


def test_rectangles_become_groups_and_overlaps_merge(painted, tmp_path):
    m, _ = painted
    rects = [Rectangle(m.class_names[c], y0, x0, y1, x1) for y0, y1, x0, x1, c in m.regions]
    rects.append(Rectangle(m.class_names[m.regions[0][4]], 0, 0, 50, 50))  # overlaps the first: same group
    ts = tiles_from_annotations(m.image, tmp_path / "r", tile=32, rectangles=rects, val_fraction=0.5)
    assert len(ts.groups("train")) + len(ts.groups("val")) == 6
    assert not set(ts.groups("train")) & set(ts.groups("val"))


def test_annotation_mistakes_are_reported(painted, tmp_path):
    m, lab = painted
    big = np.zeros((410, 600), np.uint8)
    big[405, 10] = 1
    with pytest.raises(NcmError, match="1 labelled pixels lie outside the image"):
        tiles_from_annotations(m.image, tmp_path / "a", tile=32, labels=big, names=list(m.class_names))
    with pytest.raises(NcmError, match="no class name"):
        tiles_from_annotations(m.image, tmp_path / "b", tile=32, labels=lab, names=["only one"])
    with pytest.raises(NcmError, match="outside the image"):
        tiles_from_annotations(m.image, tmp_path / "c", tile=32, rectangles=[Rectangle("x", 500, 0, 600, 50)])
    one = np.where(lab == 1, 1, 0).astype(np.uint8)
    with pytest.raises(NcmError, match="only one class"):
        tiles_from_annotations(m.image, tmp_path / "d", tile=32, labels=one, names=list(m.class_names))
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_a_class_painted_once_is_trained_on_but_not_validated(painted, tmp_path):
    m, lab = painted
    single = lab.copy()
    y0, y1, x0, x1, c = next(r for r in m.regions if r[4] == 0)
    single[single == 1] = 0
    single[y0 + 8 : y0 + 80, x0 + 8 : x0 + 80] = 1  # class 1 painted once
    with pytest.warns(UserWarning, match="too few separate regions"):
        ts = tiles_from_annotations(m.image, tmp_path / "t", tile=32, labels=single, names=list(m.class_names))
    assert m.class_names[0] not in {r.cls for r in ts.split("val")}


# ----------------------------------------------------------------------------------------- training
def _train(data, out, **kw):
    return train(data, out, architecture="resnet10t", epochs=3, batch_size=16, lr=3e-3, **kw)


def test_resume_after_an_interrupted_training_gives_the_same_model(crops, tmp_path):
    full = _train(crops.root, tmp_path / "full")
    stop = threading.Event()

    def progress(done, total, msg):
        if msg.startswith("epoch 2/3 val"):  # epoch 2 finished and checkpointed: stop in epoch 3
            stop.set()

    with pytest.raises(Cancelled):
        _train(crops.root, tmp_path / "cut", progress=progress, cancel=stop)
    assert (tmp_path / "cut" / "checkpoint" / "state.safetensors").is_file()
    assert not (tmp_path / "cut" / "model.safetensors").exists()  # no bundle that looks finished
    resumed = _train(crops.root, tmp_path / "cut")
    assert resumed.resumed_from == 2 and not (tmp_path / "cut" / "checkpoint").exists()
    a, b = load_bundle(full.bundle).model.state_dict(), load_bundle(resumed.bundle).model.state_dict()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert [h["val_loss"] for h in full.history] == [h["val_loss"] for h in resumed.history]
    with pytest.raises(NcmError, match="other settings"):  # a checkpoint of another run is never mixed in
        stop2 = threading.Event()
        with pytest.raises(Cancelled):
            _train(
                crops.root, tmp_path / "x", progress=lambda d, t, m: stop2.set() if "val" in m else None, cancel=stop2
            )
        _train(crops.root, tmp_path / "x", seed=5)


def test_training_options_reach_the_bundle(crops, tmp_path):
    r = train(
        crops.root,
        tmp_path / "m",
        architecture="resnet10t",
        epochs=2,
        batch_size=16,
        optimizer="sgd",
        momentum=0.8,
        augment="flip",
        normalize=True,
        input_size=48,
        monitor="balanced_accuracy",
        amp="off",
    )
    cfg = load_bundle(r.bundle).config
    t = cfg.training
    assert t["optimizer"] == "sgd" and t["augment"] == ["flip"] and t["monitor"] == "balanced_accuracy"
    assert cfg.input.input_size == (48, 48) and cfg.input.mean is not None and cfg.tile_size == 32
    assert t["data_kind"] == "tiles" and not set(t["train_groups"]) & set(t["val_groups"])
    assert cfg.ood["method"].startswith("mahalanobis") and cfg.ood["threshold"] > 0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(augment="mirror"), "unknown augmentation"),
        (dict(monitor="f1"), "monitor must be"),
        (dict(amp="fp16", device="cpu"), "float16 mixed precision needs a CUDA device"),
        (dict(architecture="efficientnet_b99"), "unknown architecture"),
        (dict(tile_size=48), "tiles are 32 px"),
    ],
)
def test_bad_training_options(crops, tmp_path, kwargs, words):
    with pytest.raises(NcmError, match=words):
        train(crops.root, tmp_path / "m", epochs=1, **kwargs)


# ----------------------------------------------------------------------------------------- evaluation
def test_marginal_accuracies_of_a_hand_made_confusion_matrix():
    names = ["NCM333_pristine", "NCM333_cycled100", "NCM811_pristine", "NCM811_cycled100"]
    cm = [
        [5, 3, 0, 0],  # true 333 pristine: 3 right composition, wrong state
        [0, 4, 0, 0],
        [2, 0, 6, 0],  # 2 wrong composition, right state
        [0, 0, 1, 9],
    ]
    f = class_factors(names)
    assert f == {
        "composition": ["NCM333", "NCM333", "NCM811", "NCM811"],
        "state": ["pristine", "cycled100", "pristine", "cycled100"],
    }
    comp, state = marginal_metrics(cm, f["composition"]), marginal_metrics(cm, f["state"])
    assert comp["accuracy"] == pytest.approx((5 + 3 + 4 + 6 + 1 + 9) / 30)
    assert state["accuracy"] == pytest.approx((5 + 4 + 2 + 6 + 9) / 30)
    assert comp["confusion_matrix"] == [[12, 0], [2, 16]] and comp["class_names"] == ["NCM333", "NCM811"]
    assert state["confusion_matrix"] == [[13, 3], [1, 13]]
    assert class_factors(["a", "b_c"]) == {}  # names that do not factor: no marginals


def test_evaluate_writes_the_report(tiny_bundle, sem_folders, tmp_path):
    m = evaluate(tiny_bundle, sem_folders, out=tmp_path / "ev")
    files = {p.name for p in (tmp_path / "ev").iterdir()}
    assert {
        "metrics.json",
        "tiles_confusion_matrix.csv",
        "tiles_confusion_matrix.png",
        "images_per_class.csv",
        "predictions.csv",
        "tiles.csv",
        "tiles_state_confusion_matrix.csv",
    } <= files
    rows = list(csv.DictReader((tmp_path / "ev" / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 9 and {"majority", "confidence", "ood_fraction", "p_NCM811_pristine"} <= set(rows[0])
    probs = np.array([[float(r[f"p_{n}"]) for n in load_bundle(tiny_bundle).class_names] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert 0 <= m["tiles"]["composition_accuracy"] <= 1 and "state_accuracy" in m["images"]


def test_evaluating_other_classes_than_the_bundle_is_refused(tiny_bundle, tmp_path):
    root = synth.write_sem_dataset(tmp_path / "other", 1, (96, 96), info_bar=0, classes=("NCM523_formation",))
    with pytest.raises(NcmError, match="not classes of the model"):
        evaluate(tiny_bundle, root)


def test_whole_image_aggregate_and_ood_flags(tiny_bundle, tmp_path):
    from ncm_core.inference.predict import predict_mosaic

    sem = synth.sem_mosaic(
        (192, 256), grid=(1, 2), seed=4, classes=("NCM333_pristine", "NCM811_pristine", "NCM811_cycled100")
    )
    p = predict_mosaic(tiny_bundle, sem.image, tmp_path / "sem.zarr")
    [whole] = summarize_prediction(p)
    assert whole["tiles"] == p.grid.size and whole["predicted"] in p.class_names
    probs = np.moveaxis(np.asarray(p.probabilities), 0, -1).reshape(-1, 3)
    assert whole["confidence"] == pytest.approx(probs.mean(0).max(), abs=1e-5)
    regions = np.zeros(sem.image.shape, np.uint8)
    regions[:, 128:] = 2
    regions[:, :128] = 1
    rows = summarize_prediction(p, regions)
    assert [r["region"] for r in rows] == ["1", "2"] and sum(r["tiles"] for r in rows) == p.grid.size

    # an image unlike anything in training (detector noise) is flagged; SEM tiles mostly are not
    foreign = np.random.default_rng(0).integers(0, 255, (192, 256)).astype(np.uint8)
    q = predict_mosaic(tiny_bundle, foreign, tmp_path / "noise.zarr")
    assert p.attrs["ood_fraction"] < 0.3 < 0.9 < q.attrs["ood_fraction"]
    assert q.ood.shape == q.grid.shape
