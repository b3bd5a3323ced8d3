"""Self-supervised pretraining (``ncm pretrain``): a backbone learnt from unlabelled SEM frames beats a random
one on a k-NN probe, starts a classifier and a segmentation encoder, resumes, and bad data is one line."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

pytest.importorskip("lightly")

from ncm_core.errors import Cancelled, NcmError  # noqa: E402
from ncm_core.training.pretrain import pretrain  # noqa: E402

SSL = dict(
    architecture="resnet10t",
    method="simclr",
    epochs=5,
    batch_size=24,
    crop_size=48,
    input_size=32,
    crops_per_image=8,
    lr=3e-3,
    seed=1,
)


@pytest.fixture(scope="module")
def pretrained(sem_folders, tmp_path_factory):
    """SimCLR on the SEM frames (labels ignored; the same frames with labels are the probe), cancelled after
    epoch 2 and resumed to the end."""
    out = tmp_path_factory.mktemp("ssl") / "simclr"
    stop = threading.Event()
    with pytest.raises(Cancelled):
        pretrain(
            sem_folders, out, probe=sem_folders, cancel=stop, on_epoch=lambda r: r["epoch"] == 2 and stop.set(), **SSL
        )
    assert (out / "checkpoint" / "state.json").is_file() and not (out / "backbone.safetensors").exists()
    return pretrain(sem_folders, out, probe=sem_folders, **SSL)


@pytest.mark.slow  # the module's pretraining run: about 25 s on 2 idle cores
def test_pretraining_beats_a_random_backbone_on_a_knn_probe(pretrained):
    r = pretrained
    assert r.resumed_from == 2 and [h["epoch"] for h in r.history] == [1, 2, 3, 4, 5]
    assert r.knn >= r.knn_initial + 0.10, (r.knn_initial, [h["knn_accuracy"] for h in r.history])
    meta = json.loads((r.out / "backbone.json").read_text())
    assert meta["format"] == "ncm-backbone" and meta["architecture"] == "resnet10t" and meta["in_chans"] == 1
    assert meta["method"] == "simclr" and meta["input_size"] == 32 and meta["epochs"] == 5
    assert set(meta["info_bars"].values()) == {"-16:"}  # the frames' information bar was left out
    assert not (r.out / "checkpoint").exists() and r.images_per_second > 0


@pytest.mark.slow  # the module's pretraining run: about 25 s on 2 idle cores
def test_the_backbone_starts_a_classifier(pretrained, sem_folders, tmp_path, caplog):
    from safetensors.torch import load_file

    from ncm_core.models.bundle import load_bundle
    from ncm_core.models.factory import build_model
    from ncm_core.training.classify import train

    weights = load_file(str(pretrained.backbone))
    model = build_model("resnet10t", 3, in_chans=1, pretrained=pretrained.backbone)
    state = model.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in weights.items())
    assert set(state) - set(weights) == {"fc.weight", "fc.bias"}  # only the new classifier is not pretrained
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # timm loads a grey backbone quietly
    r = train(
        sem_folders,
        tmp_path / "bundle",
        architecture="resnet10t",
        pretrained=pretrained.backbone,
        epochs=1,
        tile_size=48,
        input_size=32,
        crops_per_image=4,
        ood=False,
    )
    assert load_bundle(r.bundle).config.training["pretrained"] == str(pretrained.backbone)


@pytest.mark.slow  # the module's pretraining run: about 25 s on 2 idle cores
def test_the_backbone_loads_into_a_segmentation_encoder(pretrained):
    smp = pytest.importorskip("segmentation_models_pytorch")
    import torch
    from safetensors.torch import load_file

    from ncm_core.models.backbone import load_encoder_weights

    net = smp.Unet(encoder_name="tu-resnet10t", encoder_weights=None, in_channels=1, classes=2)
    load_encoder_weights(net, pretrained.backbone)
    weights = load_file(str(pretrained.backbone))
    enc = net.encoder.model.state_dict()
    assert all(np.array_equal(v.numpy(), weights[k].numpy()) for k, v in enc.items())
    assert net.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.slow  # the module's pretraining run: about 25 s on 2 idle cores
def test_weights_of_another_architecture_are_refused_naming_both(pretrained):
    smp = pytest.importorskip("segmentation_models_pytorch")

    from ncm_core.models.backbone import load_encoder_weights
    from ncm_core.models.factory import build_model

    with pytest.raises(NcmError, match=r"resnet10t.*resnet18|resnet18.*resnet10t") as e:
        build_model("resnet18", 3, in_chans=1, pretrained=pretrained.backbone)
    assert "\n" not in str(e.value)
    with pytest.raises(NcmError, match="pretrained on 1-channel images, the model takes 3"):
        build_model("resnet10t", 3, in_chans=3, pretrained=pretrained.backbone)
    net = smp.Unet(encoder_name="tu-resnet18", encoder_weights=None, in_channels=1, classes=2)
    with pytest.raises(NcmError, match=r"resnet18.*resnet10t"):
        load_encoder_weights(net, pretrained.backbone)
    rgb = smp.Unet(encoder_name="tu-resnet10t", encoder_weights=None, in_channels=3, classes=2)
    with pytest.raises(NcmError, match="input channels differ"):
        load_encoder_weights(rgb, pretrained.backbone)


def test_views_are_deterministic_by_seed():
    import torch

    from ncm_core.training.ssl import augment_views

    x = torch.rand(6, 1, 40, 40)
    a, b = (augment_views(x, 24, torch.Generator().manual_seed(3)) for _ in range(2))
    c = augment_views(x, 24, torch.Generator().manual_seed(4))
    assert a.shape == (6, 1, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)


def test_mosaics_give_tiles_read_lazily(tmp_path):
    from ncm_core.data import synth
    from ncm_core.io.mosaic import write_ome_zarr
    from ncm_core.training.pretrain_data import pretrain_source

    img = synth.sem_mosaic((256, 320), seed=1).image
    write_ome_zarr(tmp_path / "m.zarr", img, chunks=64)
    d = pretrain_source(tmp_path, 48, 8, 20, "detect", 16)
    assert len(d.mosaics) == 1 and not d.frames and d.per_epoch == 20
    tiles = d.epoch(np.random.default_rng(0))
    assert tiles.shape == (20, 48, 48) and tiles.dtype == img.dtype
    # every tile is a window of the mosaic
    t = tiles[0]
    windows = np.lib.stride_tricks.sliding_window_view(img, (48, 48))
    assert (windows == t).all(axis=(2, 3)).any()


def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("few", r"1 image gives 8 crops per epoch, fewer than the batch size 16"),
        ("channels", r"b\.png: images of mixed channel counts: this one has 3, a\.png has 1"),
        ("depths", r"b\.png: images of mixed bit depths: this one is uint16, a\.png is uint8"),
    ],
)
def test_bad_pretraining_data_is_one_line(tmp_path, capsys, case, message):
    from ncm_core.cli import main

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (64, 64), dtype=np.uint8)
    _png(tmp_path / "data" / "a.png", gray)
    if case == "channels":
        _png(tmp_path / "data" / "b.png", np.stack([gray] * 3, -1))
    if case == "depths":
        _png(tmp_path / "data" / "b.png", gray.astype(np.uint16) * 200)
    args = ["pretrain", str(tmp_path / "data"), str(tmp_path / "out"), "--crop-size", "32", "--crops", "8"]
    assert main([*args, "--batch-size", "16", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ncm: error: ") and __import__("re").search(message, err[0]), err


def test_cli_prints_the_knn_score_of_each_epoch(sem_folders, tmp_path, capsys):
    from ncm_core.cli import main

    out = tmp_path / "byol"
    args = ["pretrain", str(sem_folders), str(out), "--arch", "resnet10t", "--method", "byol", "--epochs", "1"]
    args += [
        "--crop-size",
        "48",
        "--input-size",
        "32",
        "--crops",
        "4",
        "--batch-size",
        "12",
        "--probe",
        str(sem_folders),
    ]
    assert main([*args, "-q"]) == 0
    text = capsys.readouterr().out
    assert "epoch 1: loss" in text and "k-NN accuracy" in text and str(out / "backbone.safetensors") in text
    assert json.loads((out / "backbone.json").read_text())["method"] == "byol"
    assert main([*args, "-q"]) == 2  # a finished backbone is not replaced without --overwrite
    assert "holds a finished pretrained backbone" in capsys.readouterr().err


@pytest.mark.slow  # three short runs
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(sem_folders, tmp_path):
    from safetensors.torch import load_file

    kw = dict(SSL, method="byol", epochs=2, batch_size=8, crop_size=32, input_size=24, crops_per_image=2)
    whole = pretrain(sem_folders, tmp_path / "whole", **kw)
    stop = threading.Event()
    with pytest.raises(Cancelled):
        pretrain(sem_folders, tmp_path / "cut", cancel=stop, on_epoch=lambda r: stop.set(), **kw)
    resumed = pretrain(sem_folders, tmp_path / "cut", **kw)
    assert resumed.resumed_from == 1
    a, b = load_file(str(whole.backbone)), load_file(str(resumed.backbone))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
