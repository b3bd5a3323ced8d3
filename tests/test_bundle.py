"""Model bundles: safetensors + JSON, round trip, no unpickling, clear errors; local pretrained weights."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from ncm_core.errors import NcmError
from ncm_core.models.bundle import load_bundle, save_bundle
from ncm_core.models.factory import build_model


def test_round_trip_gives_the_same_outputs(tiny_bundle):
    b = load_bundle(tiny_bundle)
    assert len(b.config.class_names) == 3 and b.config.input.input_size == (32, 32)
    assert sorted(p.name for p in tiny_bundle.iterdir()) == ["config.json", "extra.safetensors", "model.safetensors"]
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        y1 = b.model(x)
    b2 = load_bundle(save_bundle(b.model, b.config, tiny_bundle.parent / "copy"))
    with torch.inference_mode():
        assert torch.allclose(b2.model(x), y1)
    cfg = json.loads((tiny_bundle / "config.json").read_text())
    assert cfg["format"] == "ncm-bundle" and "torch" in cfg["versions"]


def _refuse(*a, **k):
    raise AssertionError("unpickling during bundle load")


class _RefusingUnpickler:
    def __init__(self, *a, **k):
        _refuse()


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every way into pickle fails: the module functions, the Unpickler class (what torch.load uses), torch.load."""
    import _pickle

    for mod in (pickle, _pickle):
        monkeypatch.setattr(mod, "load", _refuse)
        monkeypatch.setattr(mod, "loads", _refuse)
        monkeypatch.setattr(mod, "Unpickler", _RefusingUnpickler)
    monkeypatch.setattr(torch, "load", _refuse)


def test_the_unpickling_guard_catches_every_route(no_unpickling, tmp_path):
    import io

    data = pickle.dumps({"a": 1})
    for attempt in (
        lambda: pickle.loads(data),
        lambda: pickle.Unpickler(io.BytesIO(data)).load(),
        lambda: torch.load(io.BytesIO(b"x")),
    ):
        with pytest.raises(AssertionError, match="unpickling"):
            attempt()


def test_loading_never_unpickles(tiny_bundle, no_unpickling):
    load_bundle(tiny_bundle)


def test_config_that_does_not_match_the_weights(tiny_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_bundle, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["class_names"] = ["a", "b", "c", "d"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NcmError) as e:
        load_bundle(bad)
    msg = str(e.value)
    assert "\n" not in msg and "bad" in msg and "do not match" in msg and "wrong shape" in msg


def test_damaged_bundle_files(tiny_bundle, tmp_path):
    import shutil

    bad = tmp_path / "dam"
    shutil.copytree(tiny_bundle, bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(NcmError, match="damaged or not safetensors"):
        load_bundle(bad)
    (bad / "config.json").write_text("{oops")
    with pytest.raises(NcmError, match="not valid JSON"):
        load_bundle(bad)
    with pytest.raises(NcmError, match="not found"):
        load_bundle(tmp_path / "nothing")


def test_hub_weights_are_refused_with_instructions():
    with pytest.raises(NcmError, match="does not download weights.*pretrained="):
        build_model("efficientnet_b0", 12, pretrained=True)


def test_unknown_architecture_suggests_names():
    with pytest.raises(NcmError, match="did you mean.*efficientnet_b0"):
        build_model("efficientnet_b00", 12)


def test_local_pretrained_file_adapts_channels_and_classes(tmp_path):
    """ImageNet-shaped weights (3 channels, 1000 classes) into a 1-channel, 12-class model."""
    torch.manual_seed(1)
    src = build_model("resnet18", 1000, in_chans=3)
    save_file(src.state_dict(), str(tmp_path / "resnet18.safetensors"))
    m = build_model("resnet18", 12, in_chans=1, pretrained=tmp_path / "resnet18.safetensors")
    assert m.fc.out_features == 12 and m.conv1.in_channels == 1
    # timm sums the RGB filters for a grayscale stem; other layers are copied
    assert torch.allclose(m.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(m.layer1[0].conv1.weight, src.layer1[0].conv1.weight)


def test_bad_pretrained_files(tmp_path):
    with pytest.raises(NcmError, match="not found"):
        build_model("resnet18", 2, pretrained=tmp_path / "none.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"junk")
    with pytest.raises(NcmError, match="cannot load these weights"):
        build_model("resnet18", 2, pretrained=tmp_path / "w.safetensors")
