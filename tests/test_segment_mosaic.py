"""Segmenting whole mosaics on the streaming engine (issue 19): the class map stitched from windows equals
the whole image's, resumes after SIGKILL byte for byte, and is an NGFF image-label that napari opens with
the class names and colours."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
import zarr

from ncm_core.errors import NcmError
from ncm_core.inference.segment import open_segmentation, predict_image, segment_mosaic
from ncm_core.io.mosaic import write_ome_zarr
from ncm_core.models.segmenter import SegmenterConfig

CLASSES = ["pore", "binder", "particle"]


class SmoothThreshold:
    """A segmenter whose result is local with a known reach: a Gaussian filter (sigma 2 px, truncated at 4
    sigma: 8 px) and soft thresholds around three grey levels."""

    def __init__(self, halo: int = 8) -> None:
        self.config = SegmenterConfig(engine="forest", classes=CLASSES, halo=halo, norm_low=0, norm_high=255)

    def predict_proba(self, windows):
        s = ndi.gaussian_filter(windows, sigma=(0, 0, 2, 2), truncate=4.0)
        e = -50 * (s - np.array([0.2, 0.5, 0.8], np.float32)[None, :, None, None]) ** 2
        e = np.exp(e - e.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


def smooth_image(shape, seed=0):
    img = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 6)
    return ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """300 x 420 px (not a multiple of any window or chunk), stored in 64 px chunks."""
    img = smooth_image((300, 420))
    return img, write_ome_zarr(tmp_path_factory.mktemp("seg") / "m.ome.zarr", img, pixel_size=0.5, chunks=64)


def class_map(path, name="segmentation"):
    return np.asarray(zarr.open_array(str(path / "labels" / name / "0"), mode="r")[...])


@pytest.mark.parametrize(
    "cut",
    [
        dict(window=64, chunk=96),  # blocks of whole strides: each window runs once
        dict(window=64, chunk=80, overlap=8, blend="gaussian"),  # windows shared by blocks, cores blended
    ],
)
def test_a_mosaic_segmented_in_windows_equals_the_whole_image(mosaic, tmp_path, cut):
    img, path = mosaic
    whole = predict_image(SmoothThreshold(), img).argmax(0) + 1
    out = segment_mosaic(SmoothThreshold(), path, tmp_path / "s.zarr", **cut)
    assert (class_map(out) == whole).mean() == 1.0
    assert len(np.unique(whole)) == 3  # every class occurs: the comparison is not trivial


def test_a_halo_below_the_segmenters_reach_shows_seams(mosaic, tmp_path):
    img, path = mosaic
    whole = predict_image(SmoothThreshold(), img).argmax(0) + 1
    claims_less = SmoothThreshold(halo=2)  # says its reach is 2 px; it is 8
    out = segment_mosaic(claims_less, path, tmp_path / "s.zarr", window=64, chunk=96)
    assert (class_map(out) != whole).sum() > 0
    with pytest.raises(NcmError, match="less than the segmenter's reach"):
        segment_mosaic(SmoothThreshold(), path, tmp_path / "t.zarr", halo=4)


def test_probabilities_at_a_coarser_scale_are_the_means_of_the_pixels(mosaic, tmp_path):
    img, path = mosaic
    out = segment_mosaic(SmoothThreshold(), path, tmp_path / "s.zarr", window=96, probabilities=True, chunk=96)
    probs = np.asarray(zarr.open_array(str(out / "probabilities" / "0"), mode="r")[...])
    assert probs.shape == (3, 75, 105)  # one value per 4 x 4 pixels
    whole = predict_image(SmoothThreshold(), img)
    np.testing.assert_allclose(probs, whole.reshape(3, 75, 4, 105, 4).mean(axis=(2, 4)), atol=1e-6)
    seg = open_segmentation(out)
    assert seg.world_transform("probabilities") == ((2.0, 2.0), (0.75, 0.75))  # 4 px of 0.5 um, centred


def test_the_class_map_is_an_ngff_image_label_napari_shows_with_names_and_colours(mosaic, tmp_path, monkeypatch):
    from ncm_core.inference import segmentation

    monkeypatch.setattr(segmentation, "MIN_SIDE", 128)  # a pyramid for this small image: 420 -> 210 -> 105
    img, path = mosaic
    out = segment_mosaic(SmoothThreshold(), path, tmp_path / "s.zarr", window=64, name="phases")
    root = zarr.open_group(str(out), mode="r")
    assert root["labels"].attrs["ome"]["labels"] == ["phases"]
    ome = root["labels/phases"].attrs["ome"]
    ms = ome["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]
    assert ms["datasets"][1]["coordinateTransformations"][0]["scale"] == [1.0, 1.0]  # 2 x 0.5 um
    assert root["labels/phases/2"].shape == (75, 105)
    assert [p["class"] for p in ome["image-label"]["properties"]] == ["not predicted", *CLASSES]
    assert [c["label-value"] for c in ome["image-label"]["colors"]] == [0, 1, 2, 3]
    assert np.array_equal(root["labels/phases/1"][...], class_map(out, "phases")[::2, ::2])

    from napari_ncm._reader import napari_get_reader

    layers = napari_get_reader(str(out))(str(out))
    data, kw, kind = next(layer for layer in layers if layer[2] == "labels")
    assert kw["name"] == "phases" and kw["multiscale"] and len(data) == 3
    assert kw["scale"] == (0.5, 0.5)
    assert list(kw["features"]["class"])[1:] == CLASSES  # names shown on hover


def test_bad_input_is_one_line(mosaic, tmp_path):
    img, path = mosaic
    rgb = write_ome_zarr(tmp_path / "rgb.ome.zarr", np.stack([img] * 3, -1), chunks=64)
    with pytest.raises(NcmError, match=r"3 channel\(s\) but the segmentation bundle was trained on 1"):
        segment_mosaic(SmoothThreshold(), rgb, tmp_path / "a.zarr")
    small = SmoothThreshold()
    small.config.min_size = 32
    tiny = write_ome_zarr(tmp_path / "tiny.ome.zarr", img[:20, :100], chunks=64)
    with pytest.raises(NcmError, match=r"\(20 x 100 px\) is smaller than the segmenter's minimum input \(32 px"):
        segment_mosaic(small, tiny, tmp_path / "b.zarr")
    with pytest.raises(NcmError, match="leave no core"):
        segment_mosaic(SmoothThreshold(), path, tmp_path / "c.zarr", window=16)
    assert not any(p.name.endswith(".zarr") for p in tmp_path.iterdir() if p.name[0] in "abc")


KILLED_RUN = """
import os, signal, sys
from ncm_core.inference.segment import segment_mosaic

def progress(done, total, msg):
    if done >= int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)

segment_mosaic(sys.argv[1], sys.argv[2], sys.argv[3], progress=progress, **KW)
"""
KW = dict(window=64, chunk=64, probabilities=True, device="cpu")


@pytest.fixture(scope="module")
def unet_bundle(tmp_path_factory):
    """An untrained small U-Net saved as a bundle (its outputs are arbitrary but deterministic)."""
    from ncm_core.models.unet import UnetSegmenter, UnetSpec, unet_config

    spec = UnetSpec(depth=3, decoder_channels=(16, 8, 8))
    config = unet_config(spec, CLASSES, 1, halo=16, norm_low=0, norm_high=255)
    return UnetSegmenter.build(config).save(tmp_path_factory.mktemp("unet") / "bundle")


def test_resume_after_sigkill_is_byte_identical(unet_bundle, mosaic, tmp_path):
    path = write_ome_zarr(tmp_path / "m.ome.zarr", mosaic[0][:150, :250], chunks=64)
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN.replace("**KW", f"**{KW!r}"))
    r = subprocess.run([sys.executable, str(script), str(unet_bundle), str(path), str(tmp_path / "s.zarr"), "4"])
    assert r.returncode == -9  # killed mid-run
    assert not (tmp_path / "s.zarr").exists() and (tmp_path / "s.zarr.partial").exists()
    seen = []
    out = segment_mosaic(unet_bundle, path, tmp_path / "s.zarr", progress=lambda d, t, m: seen.append((d, t)), **KW)
    assert seen[0][0] == 4 and seen[0][1] == 12  # 3 x 4 blocks; only the missing ones were computed
    ref = segment_mosaic(unet_bundle, path, tmp_path / "ref.zarr", **KW)
    for name in ("labels/segmentation/0", "probabilities/0"):
        a = zarr.open_array(str(out / name), mode="r")[...]
        b = zarr.open_array(str(ref / name), mode="r")[...]
        assert a.tobytes() == b.tobytes(), name
    assert (class_map(out) > 0).all()


def test_ncm_predict_segments_with_a_segmentation_bundle(unet_bundle, mosaic, tmp_path, capsys):
    from ncm_core.cli import main

    _, path = mosaic
    out = tmp_path / "s.zarr"
    assert main(["predict", str(unet_bundle), str(path), str(out), "-q", "--window", "96", "--probabilities"]) == 0
    printed = capsys.readouterr().out
    assert f"segmentation: {out}/labels/segmentation  300 x 420 px, 3 classes (pore, binder, particle)" in printed
    seg = open_segmentation(out)
    assert seg.attrs["window"] == 96 and seg.attrs["halo"] == 16 and len(seg.probability_levels()) == 1
    assert main(["predict", str(unet_bundle), str(path), str(tmp_path / "t.zarr"), "--tile", "32"]) == 2
    assert "--tile: for tile classifiers, not for a segmentation bundle" in capsys.readouterr().err


def test_a_missing_chunk_is_reported_and_left_not_predicted(mosaic, tmp_path):
    import shutil

    from ncm_core.inference.engine import RunIncomplete

    img, path = mosaic
    damaged = tmp_path / "damaged.ome.zarr"
    shutil.copytree(path, damaged)
    (damaged / "0" / "c" / "2" / "3").unlink()  # the chunk of pixels y 128:192, x 192:256 is gone
    cut = dict(window=64, chunk=96, retries=0)
    with pytest.raises(RunIncomplete, match="could not be read"):
        segment_mosaic(SmoothThreshold(), damaged, tmp_path / "s.zarr", **cut)
    with pytest.warns(UserWarning, match="marked as not computed"):
        out = segment_mosaic(SmoothThreshold(), damaged, tmp_path / "s.zarr", allow_incomplete=True, **cut)
    labels = class_map(out)
    assert (labels[136:184, 200:248] == 0).all()  # not predicted: every window there reads the lost chunk
    whole = predict_image(SmoothThreshold(), img).argmax(0) + 1
    assert (labels[:96] == whole[:96]).all()  # the rest as before
    assert open_segmentation(out).attrs["failed_regions"]


@pytest.mark.slow
def test_segmentation_on_a_local_cluster_equals_the_single_process_result(unet_bundle, mosaic, tmp_path):
    path = write_ome_zarr(tmp_path / "m.ome.zarr", mosaic[0][:150, :250], chunks=64)  # 2 x 2 blocks
    kw = dict(window=96, chunk=128, probabilities=True, device="cpu")
    ref = segment_mosaic(unet_bundle, path, tmp_path / "ref.zarr", **kw)
    out = segment_mosaic(unet_bundle, path, tmp_path / "d.zarr", scheduler="local:2", **kw)
    assert open_segmentation(out).attrs["complete"] and not (tmp_path / "d.zarr.partial").exists()
    # workers run torch with one thread each, this process with two: sums in another order, ties may differ
    assert (class_map(out) == class_map(ref)).mean() >= 0.999
    a, b = (zarr.open_array(str(p / "probabilities" / "0"), mode="r")[...] for p in (out, ref))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cancel_stops_a_forest_within_one_window_and_leaves_no_output(mosaic, tmp_path):
    """A forest computes its features window by window, so a Cancel is acted on before the next window, not
    after a whole batch (the GUI's Cancel must act within seconds)."""
    import threading

    from ncm_core.errors import Cancelled

    img, path = mosaic
    seen, flag = [], threading.Event()

    class Slow(SmoothThreshold):
        def predict_proba(self, windows):
            seen.append(len(windows))
            if len(seen) == 2:
                flag.set()  # Cancel pressed while the second window runs
            return super().predict_proba(windows)

    with pytest.raises(Cancelled):
        segment_mosaic(Slow(), path, tmp_path / "seg.zarr", window=64, chunk=96, batch_size=8, cancel=flag)
    assert seen == [1, 1], seen  # one window per call, none after the Cancel
    assert not (tmp_path / "seg.zarr").exists()


class StripForest(SmoothThreshold):
    """A per-pixel classifier on features, as the forest is: ``features`` then ``predict_features``."""

    def __init__(self, on_strip=None):
        super().__init__()
        self.strips, self.on_strip = [], on_strip

    def features(self, window):
        return ndi.gaussian_filter(window, sigma=(0, 2, 2), truncate=4.0)

    def predict_features(self, f):
        self.strips.append(f.shape[1])
        if self.on_strip is not None:
            self.on_strip(len(self.strips))
        e = -50 * (f - np.array([0.2, 0.5, 0.8], np.float32)[:, None, None]) ** 2
        e = np.exp(e - e.max(0, keepdims=True))
        return (e / e.sum(0, keepdims=True)).astype(np.float32)

    def predict_proba(self, windows):
        return np.stack([self.predict_features(self.features(w)) for w in windows])


def test_a_forest_is_predicted_in_strips_that_cancel_stops_between_and_that_change_nothing(
    mosaic, tmp_path, monkeypatch
):
    """A 1024 px forest window takes about 10 s on two cores: the GUI's Cancel waited for it (11 s seen);
    the window's rows are now predicted in strips with a check of Cancel between them."""
    import threading

    import ncm_core.inference.segment as segment_module
    from ncm_core.errors import Cancelled

    monkeypatch.setattr(segment_module, "FOREST_STRIP_ROWS", 16)
    img, path = mosaic
    kw = dict(window=64, chunk=96, batch_size=8)
    ref = segment_mosaic(StripForest(), path, tmp_path / "ref.zarr", **kw)  # no cancel flag: whole windows
    forest = StripForest()
    out = segment_mosaic(forest, path, tmp_path / "strips.zarr", cancel=threading.Event(), **kw)
    assert max(forest.strips) == 16  # strips were used, and they give the same class map
    np.testing.assert_array_equal(class_map(out), class_map(ref))

    flag = threading.Event()
    forest = StripForest(on_strip=lambda n: flag.set() if n == 2 else None)  # Cancel during the 2nd strip
    with pytest.raises(Cancelled):
        segment_mosaic(forest, path, tmp_path / "seg.zarr", cancel=flag, **kw)
    assert len(forest.strips) == 2, forest.strips  # no strip after the Cancel, even within the first window
    assert not (tmp_path / "seg.zarr").exists()
