"""More options checked at the boundary (issue 15, item 5): pretrained weights of another architecture name
both, split names are checked for every kind of data."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from ncm_core.errors import NcmError
from ncm_core.evaluation.evaluate import evaluate
from ncm_core.models.factory import build_model


def test_pretrained_weights_of_another_architecture_name_both(tiny_bundle, tmp_path):
    with pytest.raises(NcmError, match="these weights are for resnet10t, not for efficientnet_b0") as e:
        build_model("efficientnet_b0", 3, in_chans=1, pretrained=tiny_bundle / "model.safetensors")
    assert "\n" not in str(e.value) and "--arch resnet10t" in str(e.value)
    # weights outside a bundle: the architecture from the safetensors metadata
    weights = tmp_path / "backbone.safetensors"
    net = build_model("resnet10t", 3, in_chans=1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights), {"architecture": "resnet10t"})
    with pytest.raises(NcmError, match="for resnet10t, not for efficientnet_b0"):
        build_model("efficientnet_b0", 3, in_chans=1, pretrained=weights)
    assert isinstance(build_model("resnet10t", 3, in_chans=1, pretrained=weights), torch.nn.Module)
    # nothing says where they come from, and timm would skip every name it does not know: refused too
    save_file({"w": torch.zeros(2)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(NcmError, match="hold 0 of the 84 tensors of resnet10t; are they for another network") as e:
        build_model("resnet10t", 3, in_chans=1, pretrained=tmp_path / "odd.safetensors")
    assert "odd.safetensors" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("split, words", [("tset", "unknown split 'tset'"), ("train", "class folders have no splits")])
def test_split_names_are_checked_for_every_kind_of_data(tiny_bundle, sem_folders, split, words):
    with pytest.raises(NcmError, match=words):
        evaluate(tiny_bundle, sem_folders, split=split)
    r = subprocess.run(
        [sys.executable, "-m", "ncm_core.cli", "evaluate", str(tiny_bundle), str(sem_folders), "--split", split, "-q"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr


def test_frames_and_tiles_with_nan_pixels_are_refused_in_one_line(tmp_path):
    """Read whole (frames for crops and training, images to explain, tiles of a tile set), a float image
    with NaN pixels is refused naming the file, instead of a NaN loss or heatmap."""
    import numpy as np
    import tifffile

    from ncm_core.data.datasets import load_image
    from ncm_core.data.tilesets import _read_tile
    from ncm_core.explain.folders import read_images

    img = np.ones((40, 40), np.float32)
    img[3, 4] = np.nan
    img[5, 6] = np.inf
    tifffile.imwrite(tmp_path / "frame.tif", img)
    for read in (load_image, _read_tile, lambda p: read_images([p])[0]):
        with pytest.raises(NcmError, match="2 of the image's pixels are not finite") as e:
            read(tmp_path / "frame.tif")
        assert "frame.tif" in str(e.value) and "\n" not in str(e.value)
    tifffile.imwrite(tmp_path / "ok.tif", np.ones((40, 40), np.float32))
    assert load_image(tmp_path / "ok.tif").shape == (40, 40)


def test_sample_writers_refuse_a_folder_that_is_not_empty(tmp_path):
    """The API as well as ``ncm sample``: old and new frames never mix."""
    from ncm_core.data import synth

    root = tmp_path / "frames"
    root.mkdir()
    (root / "mine.txt").write_text("the user's")
    with pytest.raises(NcmError, match="output exists"):
        synth.write_sem_dataset(root, 1, (64, 64), info_bar=0, classes=("NCM333_pristine",))
    with pytest.raises(NcmError, match="only replaces what napari-ncm wrote"):
        synth.write_sem_dataset(root, 1, (64, 64), info_bar=0, classes=("NCM333_pristine",), overwrite=True)
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]
    new = synth.write_sem_dataset(tmp_path / "new", 1, (64, 64), info_bar=0, classes=("NCM333_pristine",))
    again = synth.write_sem_dataset(new, 2, (64, 64), info_bar=0, classes=("NCM811_pristine",), overwrite=True)
    assert sorted(p.name for p in again.iterdir()) == ["NCM811_pristine", "ncm-sample.json"]
    assert len(list((again / "NCM811_pristine").iterdir())) == 2


@pytest.fixture(scope="module")
def small_world(tmp_path_factory, tiny_bundle, sem_folders):
    """A bundle, class folders of frames, a truncated TIFF and a plain file, in one folder."""
    import shutil

    import numpy as np
    import tifffile

    w = tmp_path_factory.mktemp("small_world")
    shutil.copytree(tiny_bundle, w / "bundle")
    shutil.copytree(sem_folders, w / "frames")
    tifffile.imwrite(w / "whole.tif", np.zeros((256, 256), np.uint8), tile=(64, 64))
    (w / "cut.tif").write_bytes((w / "whole.tif").read_bytes()[:3000])  # truncated mid-way
    (w / "notes.txt").write_text("not a folder")
    return w


MORE_FAULTS = [
    (
        ["predict", "{w}/bundle", "{w}/frames/NCM333_pristine/NCM333_pristine_000.png", "{w}/notes.txt/p.zarr"],
        ["notes.txt is a file, not a folder"],
        2,
    ),
    (
        ["train", "{w}/frames", "{w}/b", "--arch", "efficientnet_b0", "--pretrained", "{w}/bundle/model.safetensors"],
        ["model.safetensors", "for resnet10t, not for efficientnet_b0"],
        2,
    ),
    (["evaluate", "{w}/bundle", "{w}/frames", "--split", "val"], ["class folders have no splits"], 2),
    # a truncated TIFF: its header reads, its tiles do not: the run is incomplete (status 3), the tiles
    # that could be read are kept in <out>.partial, and the line says how to finish
    (
        ["predict", "{w}/bundle", "{w}/cut.tif", "{w}/p.zarr", "--backend", "torch"],
        ["cut.tif", "--allow-incomplete"],
        3,
    ),
    (["explain", "{w}/bundle", "{w}/cut.tif", "{w}/h.zarr"], ["cut.tif", "could not be read"], 3),
]


@pytest.mark.parametrize(
    "args, words, code", MORE_FAULTS, ids=[f"{a[0]} {k}" for k, (a, _, _) in enumerate(MORE_FAULTS)]
)
def test_more_faults_give_one_line_and_leave_nothing(small_world, args, words, code, capsys):
    """In this process (``main``: what the ``ncm`` command runs; any exception but the one-line errors
    would fail the test), which saves a PyTorch import per case."""
    import shutil

    from ncm_core.cli import main
    from tests.test_reliability import _snapshot

    before = _snapshot(small_world)
    assert main([a.format(w=small_world) for a in args] + ["-q"]) == code
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ncm: error:" if code == 2 else "ncm: incomplete:"), lines
    for word in words:
        assert word in lines[0], lines
    if code == 3:  # only the resumable record of the run is left, never an output that looks finished
        partial = small_world / (args[3].rsplit("/", 1)[1] + ".partial")
        assert partial.is_dir() and not partial.with_suffix("").exists()
        shutil.rmtree(partial)
    assert _snapshot(small_world) == before
