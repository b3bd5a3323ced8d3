"""The U-Net segmentation engine (issue 19): it learns phases from painted strokes in one short epoch, its
bundle is safetensors + JSON, its halo is its measured reach, and a mosaic segmented in windows equals the
whole image on at least 99.9 % of the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from ncm_core.data.synth_phases import phase_sample, write_phase_dataset
from ncm_core.errors import NcmError
from ncm_core.inference.segment import predict_image, segment_mosaic
from ncm_core.io.mosaic import write_ome_zarr
from ncm_core.models.segmenter import load_segmenter
from ncm_core.models.unet import UnetSegmenter, measure_reach
from ncm_core.training.segment import iou_scores, train_segmenter

from .test_segment_mosaic import SmoothThreshold, smooth_image

#: one short epoch of small patches (16 batches): enough to learn the phases, seconds on two cores
QUICK = dict(engine="unet", epochs=1, batch_size=8, patch_size=32, lr=3e-3, patience=0, device="cpu")


@pytest.fixture(scope="module")
def phases(tmp_path_factory):
    """Three 160 x 160 SEM-like images with strokes over about 2 % of their pixels."""
    return write_phase_dataset(tmp_path_factory.mktemp("seg") / "phases", 3, "sem", (160, 160), fraction=0.02, seed=7)


@pytest.fixture(scope="module")
def unet(phases, tmp_path_factory):
    return train_segmenter(phases, tmp_path_factory.mktemp("b") / "unet", **QUICK)


def dense_miou(seg, seeds=(70, 71)) -> float:
    """Mean IoU over pore, active and binder on the dense truth of images never seen."""
    scores = []
    for seed in seeds:
        s = phase_sample("sem", (160, 160), seed=seed)
        pred = predict_image(seg, s.image.astype(np.float32)).argmax(0)
        scores.append(iou_scores([pred], [s.truth.astype(np.int32) + 1], list(s.classes))["mIoU"])
    return float(np.mean(scores))


def test_a_unet_learns_the_phases_from_strokes_and_segments_a_mosaic_like_the_whole_image(unet, tmp_path):
    seg = load_segmenter(unet)
    c = seg.config
    assert isinstance(seg, UnetSegmenter) and c.classes == ["pore", "active", "binder"]
    assert sorted(p.name for p in unet.iterdir()) == ["config.json", "model.safetensors", "training_curves.png"]
    t = c.training
    assert t["validation"] == "images" and t["val_iou"]["mIoU"] >= 0.6  # the held-out image's strokes
    # unseen images, dense truth: the trained net passes 0.45, the same net untrained does not reach 0.3
    assert dense_miou(seg) >= 0.45
    assert dense_miou(UnetSegmenter.build(c)) < 0.3
    # the halo is the measured reach, on the network's grid (a multiple of 16 px for a depth of 5)
    assert c.halo >= t["reach"]["reach"] and c.halo % 16 == 0 and c.multiple == 32
    # a mosaic cut into 12 windows (cores of 96 px) gives the whole image's classes on >= 99.9 % of pixels
    s = phase_sample("sem", (256, 320), seed=5)
    mosaic = write_ome_zarr(tmp_path / "m.ome.zarr", s.image, chunks=64)
    out = segment_mosaic(unet, mosaic, tmp_path / "s.zarr", window=2 * c.halo + 96, chunk=96, device="cpu")
    assert zarr.open_group(str(out), mode="r").attrs["ncm"]["n_windows"] == 12
    labels = np.asarray(zarr.open_array(str(out / "labels" / "segmentation" / "0"), mode="r")[...])
    whole = predict_image(seg, s.image.astype(np.float32)).argmax(0) + 1
    assert (labels == whole).mean() >= 0.999


def test_the_reach_of_a_local_segmenter_is_measured_exactly():
    """A Gaussian of sigma 2 px truncated at 4 sigma reads 8 px around each pixel: nothing farther counts."""
    img = smooth_image((120, 120)).astype(np.float32)[None] / 255
    r = measure_reach(SmoothThreshold(), [img], step=4, max_reach=24)
    assert r["reach"] == 8 and r["changes"][4] > 1e-3 and r["changes"][8] == 0.0  # bisection tried 4 and 8


def test_the_bundle_is_safetensors_and_json_and_reloads_to_the_same_probabilities(tmp_path):
    from ncm_core.models.unet import UnetSpec, unet_config

    config = unet_config(UnetSpec(depth=3, decoder_channels=(16, 8, 8)), ["a", "b"], 1, norm_high=255)
    path = UnetSegmenter.build(config).save(tmp_path / "bundle")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    a, b = load_segmenter(path), load_segmenter(path)
    x = np.random.default_rng(0).random((2, 1, 40, 56), dtype=np.float32)  # not a multiple of 8: padded inside
    pa = a.predict_proba(x)
    assert pa.shape == (2, 2, 40, 56) and np.array_equal(pa, b.predict_proba(x))
    np.testing.assert_allclose(pa.sum(1), 1, atol=1e-5)


def test_a_patch_size_off_the_networks_grid_is_one_line(phases, tmp_path):
    with pytest.raises(NcmError, match=r"patch size \(48 px\) must be a multiple of 32"):
        train_segmenter(phases, tmp_path / "u", **{**QUICK, "patch_size": 48})
