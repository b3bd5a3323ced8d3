"""Mosaic prediction: tiling does not change the result, outputs overlay the mosaic, nothing half-written."""

import json
import threading

import numpy as np
import pytest
import zarr

from ncm_core.data import synth
from ncm_core.data.tiling import TileGrid
from ncm_core.errors import Cancelled, NcmError
from ncm_core.inference.predict import classify_tiles, open_prediction, predict_mosaic
from ncm_core.io.mosaic import open_mosaic, write_ome_zarr
from ncm_core.models.bundle import load_bundle

from .conftest import decisive


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    m = synth.sem_mosaic((230, 310), seed=5)  # not a multiple of the 32 px tile
    return write_ome_zarr(tmp_path_factory.mktemp("m") / "mosaic.ome.zarr", m.image, pixel_size=0.05, chunks=64)


def test_blocks_give_the_same_classes_as_tile_by_tile(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", batch_size=7, max_block_pixels=64 * 64 * 3)
    g = pred.grid
    assert g.shape == (8, 10) and g.tile == 32  # 230/32 -> 8 rows with the last one padded
    img = np.asarray(open_mosaic(mosaic_path).data)
    padded = np.pad(img, ((0, 8 * 32 - 230), (0, 10 * 32 - 310)), mode="reflect")
    tiles = np.stack(
        [padded[y0:y1, x0:x1] for i in range(8) for j in range(10) for y0, y1, x0, x1 in [g.cell_rect(i, j)]]
    )
    expected = classify_tiles(load_bundle(tiny_bundle), tiles).reshape(8, 10, 3)
    probs = np.moveaxis(np.asarray(pred.probabilities), 0, -1)
    assert np.allclose(probs, expected, atol=1e-4)
    ok = decisive(expected)
    assert ok.mean() > 0.9 and np.array_equal(pred.classes[ok], expected.argmax(-1)[ok])
    assert expected.std(axis=(0, 1)).max() > 0.05  # the model really tells tiles apart
    assert np.allclose(probs.sum(-1), 1, atol=1e-5)


def test_outputs_carry_the_ngff_transform_that_overlays_the_mosaic(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    scale, trans = TileGrid((230, 310), 32).world_transform(0.05)
    assert pred.world_transform() == (scale, trans)
    meta = json.loads((tmp_path / "p.zarr" / "labels" / "zarr.json").read_text())["attributes"]["ome"]
    t = meta["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert t[0]["scale"] == pytest.approx(list(scale)) and t[1]["translation"] == pytest.approx(list(trans))
    names = {p["label-value"]: p["class"] for p in meta["image-label"]["properties"]}
    assert names == {0: "not predicted", 1: "NCM333_pristine", 2: "NCM811_cycled100", 3: "NCM811_pristine"}
    assert pred.attrs["complete"] and pred.attrs["n_predicted"] == 80


def test_excluded_band_is_marked_not_predicted(tiny_bundle, mosaic_path, tmp_path):
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", exclude_rows=(-40, None))
    lab = np.asarray(pred.labels)
    # rows 190..229 are excluded: tile rows 5 (160..191), 6 and 7 touch them
    assert (lab[5:] == 0).all() and (lab[:5] > 0).all()
    assert np.isnan(np.asarray(pred.probabilities)[:, 5:]).all()
    assert pred.attrs["n_masked"] == 30


def test_cancel_leaves_only_a_resumable_partial(tiny_bundle, mosaic_path, tmp_path):
    stop = threading.Event()

    def progress(done, total, msg):
        if done >= 2:
            stop.set()

    kw = dict(max_block_pixels=64 * 64, backend="torch", memory_format="contiguous")  # see the SIGKILL test
    with pytest.raises(Cancelled):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", progress=progress, cancel=stop, **kw)
    assert not (tmp_path / "p.zarr").exists() and (tmp_path / "p.zarr.partial").exists()
    with pytest.raises(NcmError, match="not found"):
        open_prediction(tmp_path / "p.zarr")
    seen = []
    pred = predict_mosaic(
        tiny_bundle, mosaic_path, tmp_path / "p.zarr", progress=lambda d, t, m: seen.append((d, t)), **kw
    )
    assert seen[0][0] == 2 and seen[-1][0] == seen[-1][1]  # resumed after the two finished blocks
    ref = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "ref.zarr", **kw)
    assert np.asarray(pred.labels).tobytes() == np.asarray(ref.labels).tobytes()
    assert np.asarray(pred.probabilities).tobytes() == np.asarray(ref.probabilities).tobytes()


KILLED_RUN = """
import os, signal, sys
from ncm_core.inference.predict import predict_mosaic

def progress(done, total, msg):
    if not hasattr(progress, "first"):
        progress.first = done
        print("first", done, flush=True)
    if 0 < int(sys.argv[4]) <= done:
        os.kill(os.getpid(), signal.SIGKILL)

predict_mosaic(sys.argv[1], sys.argv[2], sys.argv[3], progress=progress, max_block_pixels=64 * 64, backend="torch",
               memory_format="contiguous")
"""


def killed_runs(tmp_path, bundle, mosaic):
    """``run(out, kill_after)``: ``predict_mosaic`` in a fresh process, SIGKILLed once ``kill_after`` blocks
    are done (0: never); returns the CompletedProcess (``first N`` in stdout: blocks already done at start)."""
    import subprocess
    import sys

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)

    def run(out, kill_after):
        cmd = [sys.executable, str(script), str(bundle), str(mosaic), str(tmp_path / out), str(kill_after)]
        return subprocess.run(cmd, capture_output=True, text=True)

    return run


def test_resume_after_sigkill_is_byte_identical(tiny_bundle, mosaic_path, tmp_path):
    """Killed after 5 blocks, the same command again computes only the rest, and the result equals an
    uninterrupted run's byte for byte. Each run is a fresh process, as a user's would be; one engine and
    layout for all (`auto` measures them per process: a resumed run keeps the first run's choice, but the
    uninterrupted reference run measures afresh; tests/test_light_predict.py covers the light path's resume)."""
    run = killed_runs(tmp_path, tiny_bundle, mosaic_path)

    r = run("p.zarr", 5)
    assert r.returncode == -9, r.stderr  # killed mid-run
    assert not (tmp_path / "p.zarr").exists() and (tmp_path / "p.zarr.partial").exists()
    r = run("p.zarr", 0)
    assert r.returncode == 0, r.stderr
    assert "first 5" in r.stdout  # only the missing blocks were computed
    assert run("ref.zarr", 0).returncode == 0
    for name in ("labels/0", "probabilities/0", "ood/0"):
        a = np.asarray(zarr.open_array(str(tmp_path / "p.zarr" / name), mode="r")[...])
        b = np.asarray(zarr.open_array(str(tmp_path / "ref.zarr" / name), mode="r")[...])
        assert a.tobytes() == b.tobytes(), name


def test_a_changed_run_does_not_resume_a_stale_partial(tiny_bundle, mosaic_path, tmp_path):
    stop = threading.Event()
    with pytest.raises(Cancelled):
        predict_mosaic(
            tiny_bundle,
            mosaic_path,
            tmp_path / "p.zarr",
            max_block_pixels=64 * 64,
            cancel=stop,
            progress=lambda d, t, m: stop.set() if d >= 2 else None,
        )
    seen = []
    predict_mosaic(
        tiny_bundle,
        mosaic_path,
        tmp_path / "p.zarr",
        max_block_pixels=64 * 64,
        stride=16,
        progress=lambda d, t, m: seen.append(d),
    )
    assert seen[0] == 0  # another grid: started afresh


def test_existing_output_is_kept_unless_overwrite(tiny_bundle, mosaic_path, tmp_path):
    predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    with pytest.raises(NcmError, match="output exists"):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr")
    predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", overwrite=True)


def test_tile_size_follows_the_pixel_size(tiny_bundle, tmp_path):
    """A bundle trained at 0.05 um/px on a mosaic at 0.1 um/px uses 16 px tiles (the same area)."""
    b = load_bundle(tiny_bundle)
    b.config.pixel_size = 0.05
    img = np.zeros((64, 64), np.uint8)
    pred = predict_mosaic(b, open_mosaic(img, pixel_size=0.1), tmp_path / "p.zarr")
    assert pred.grid.tile == 16 and pred.grid.shape == (4, 4)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(mosaic=np.zeros((20, 20), np.uint8)), "smaller than one tile"),
        (dict(tile=0), "tile size"),
        (dict(batch_size=0), "batch size"),
    ],
)
def test_bad_parameters(tiny_bundle, mosaic_path, tmp_path, kw, words):
    mosaic = kw.pop("mosaic", mosaic_path)
    with pytest.raises(NcmError, match=words):
        predict_mosaic(tiny_bundle, mosaic, tmp_path / "p.zarr", **kw)
    assert not (tmp_path / "p.zarr").exists()


def test_damaged_chunk_is_recorded_and_the_rest_completes(tiny_bundle, tmp_path):
    from ncm_core.inference.predict import PredictionIncomplete

    img = synth.sem_mosaic((128, 128), seed=4).image
    z = zarr.create_array(str(tmp_path / "d.zarr"), shape=img.shape, chunks=(64, 64), dtype=np.uint8)
    z[:] = img
    chunk = tmp_path / "d.zarr" / "c" / "1" / "1"
    good = chunk.read_bytes()
    chunk.write_bytes(b"\x00garbage")
    with pytest.raises(PredictionIncomplete) as e:
        predict_mosaic(
            tiny_bundle, tmp_path / "d.zarr", tmp_path / "p.zarr", max_block_pixels=64 * 64, retry_delay=0.01
        )
    msg = str(e.value)
    assert "\n" not in msg and "d.zarr" in msg and "1 region in 1 of 4 blocks" in msg and "y 64:128, x 64:128" in msg
    assert e.value.failed[0]["pixels"] == [64, 128, 64, 128]
    status = np.asarray(zarr.open_array(str(tmp_path / "p.zarr.partial" / "blocks"), mode="r")[...])
    assert status.tolist() == [[1, 1], [1, 2]]  # three blocks done, one failed
    assert not (tmp_path / "p.zarr").exists()
    chunk.write_bytes(good)  # the file is repaired: a re-run computes only the failed block
    seen = []
    pred = predict_mosaic(
        tiny_bundle,
        tmp_path / "d.zarr",
        tmp_path / "p.zarr",
        max_block_pixels=64 * 64,
        progress=lambda d, t, m: seen.append(d),
    )
    assert seen[0] == 3 and pred.attrs["complete"] and (np.asarray(pred.labels) > 0).all()


def _traced_peak(bundle, mosaic, out, **kw) -> int:
    """Peak bytes of Python/numpy allocations (tracemalloc, all threads) during one prediction."""
    import tracemalloc

    tracemalloc.start()
    try:
        predict_mosaic(bundle, mosaic, out, max_block_pixels=256 * 256, **kw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_pipeline_never_holds_the_mosaic(tiny_bundle, tmp_path, monkeypatch):
    """Peak memory the pipeline allocates is a few blocks, below the mosaic itself even in its own 8-bit
    pixels; a reader that holds the whole mosaic (as uint8 or as float32) fails the same bound."""

    side = 2048
    z = zarr.create_array(str(tmp_path / "m.zarr"), shape=(side, side), chunks=(256, 256), dtype=np.uint8)
    rng = np.random.default_rng(0)
    for y in range(0, side, 256):  # written chunk row by chunk row: never whole in memory
        z[y : y + 256] = rng.integers(0, 255, (256, side), dtype=np.uint8)
    bundle = load_bundle(tiny_bundle)
    _traced_peak(bundle, tmp_path / "m.zarr", tmp_path / "warm.zarr")  # warm-up: kernels, caches, imports
    bound = side * side  # the mosaic as uint8, 4.2 MB (the pipeline needs about 2 MB here)
    real = _traced_peak(bundle, tmp_path / "m.zarr", tmp_path / "p.zarr")
    print(f"traced peak {real / 1e6:.1f} MB, bound {bound / 1e6:.1f} MB")
    assert real < bound, (real, bound)

    from ncm_core.inference import reading

    read = reading.read_region
    for dtype in (np.uint8, np.float32):  # the bug this test is for: the whole mosaic in memory
        held: list[np.ndarray] = []

        def holding(mosaic, pixels, held=held, dtype=dtype):
            if not held:
                held.append(np.asarray(mosaic.data).astype(dtype))
            return read(mosaic, pixels)

        monkeypatch.setattr(reading, "read_region", holding)
        broken = _traced_peak(bundle, tmp_path / "m.zarr", tmp_path / f"b{np.dtype(dtype).name}.zarr")
        print(f"holding the mosaic as {np.dtype(dtype).name}: {broken / 1e6:.1f} MB")
        assert broken >= bound, (dtype, broken, bound)  # the same bound catches it


def test_foreground_detection_skips_empty_tiles(tiny_bundle, tmp_path):
    """The right half of this mosaic is empty slide: with foreground=True its tiles are not predicted."""
    img = synth.sem_mosaic((128, 256), seed=3).image
    img[:, 128:] = 5
    pred = predict_mosaic(tiny_bundle, img, tmp_path / "p.zarr", foreground=True)
    lab = np.asarray(pred.labels)
    assert (lab[:, 4:] == 0).all() and (lab[:, :4] > 0).mean() > 0.7
    assert pred.attrs["n_masked"] >= 16


@pytest.mark.slow
def test_local_cluster_gives_the_single_process_result(tiny_bundle, mosaic_path, tmp_path):
    ref = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "ref.zarr", max_block_pixels=64 * 64)
    pred = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", max_block_pixels=64 * 64, scheduler="local:2")
    assert pred.attrs["complete"]
    assert np.array_equal(np.asarray(pred.labels), np.asarray(ref.labels))
    # workers run torch with one thread each, this process with two: oneDNN sums in another order
    np.testing.assert_allclose(np.asarray(pred.probabilities), np.asarray(ref.probabilities), rtol=0, atol=1e-6)


def test_distributed_needs_paths_and_a_reachable_scheduler(tiny_bundle, mosaic_path, tmp_path):
    with pytest.raises(NcmError, match="file or zarr path"):
        predict_mosaic(tiny_bundle, np.zeros((64, 64), np.uint8), tmp_path / "p.zarr", scheduler="local:1")
    with pytest.raises(NcmError, match="cannot reach the dask scheduler at tcp://127.0.0.1:9"):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "q.zarr", scheduler="tcp://127.0.0.1:9")


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing(tiny_bundle, tmp_path):
    import os
    import signal

    from distributed import Client, LocalCluster

    img = synth.sem_mosaic((1024, 1024), seed=6).image  # 32 x 32 tiles in 256 blocks of 2 x 2
    mp = write_ome_zarr(tmp_path / "m.zarr", img, chunks=64)
    ref = predict_mosaic(tiny_bundle, mp, tmp_path / "ref.zarr", max_block_pixels=64 * 64)
    killed = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        pids = list(client.run(os.getpid).values())

        def progress(done, total, msg):
            if done >= 20 and not killed:
                os.kill(pids[0], signal.SIGKILL)  # a worker dies mid-run
                killed.append((done, total))

        pred = predict_mosaic(
            tiny_bundle, mp, tmp_path / "p.zarr", max_block_pixels=64 * 64, scheduler=client, progress=progress
        )
    assert killed and killed[0][0] < killed[0][1]  # it died while blocks were still running
    assert pred.attrs["complete"] and np.array_equal(np.asarray(pred.labels), np.asarray(ref.labels))


def _local_bundle(kind: str = "pointwise"):
    """Models of known answer for dense mode (feature stride 8, 32 px tiles = 4 x 4 cells):

    - ``"pointwise"``: the trunk is a 1 x 1 convolution and an 8 x 8 average pool (purely local), so a
      tile's window of a block's feature map is exactly the tile's own features;
    - ``"padded"``: a 3 x 3 zero-padded convolution first, so cells at a tile's border see padding in
      per-tile evaluation and the neighbouring tile's pixels in dense mode;
    - ``"global"``: a squeeze-and-excitation-like gate inside the trunk (pooled over the whole input).
    """
    import torch

    from ncm_core.models.bundle import BundleConfig, ModelBundle
    from ncm_core.models.preprocess import InputSpec

    class LocalNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)  # before the layers: their biases must not depend on earlier tests
            k = 1 if kind == "pointwise" else 3
            self.conv = torch.nn.Conv2d(1, 4, k, padding=k // 2)
            self.fc = torch.nn.Linear(4, 3)
            torch.nn.init.normal_(self.conv.weight, std=3.0 / k)
            torch.nn.init.normal_(self.fc.weight, std=3.0)

        def forward_features(self, x):
            f = torch.tanh(self.conv(x - 0.4))
            if kind == "global":
                f = f * torch.sigmoid(f.mean(dim=(2, 3), keepdim=True))
            return torch.nn.functional.avg_pool2d(f, 8)

        def forward_head(self, f, pre_logits=False):
            f = f.amax(dim=(2, 3))  # max pooling: sensitive to which cells are in the window
            return f if pre_logits else self.fc(f)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))

    cfg = BundleConfig(architecture="localnet", class_names=["a", "b", "c"], input=InputSpec(1, (32, 32)), tile_size=32)
    return ModelBundle(LocalNet().eval(), cfg)


def test_dense_mode_equals_exact_for_a_local_model(mosaic_path, tmp_path):
    b = _local_bundle()
    exact = predict_mosaic(b, mosaic_path, tmp_path / "e.zarr", stride=16, max_block_pixels=96 * 96)
    dense = predict_mosaic(
        b, mosaic_path, tmp_path / "d.zarr", stride=16, dense=True, max_block_pixels=96 * 96, dense_recheck=0
    )
    assert dense.grid.shape == exact.grid.shape == (14, 19) and dense.attrs["dense"]
    np.testing.assert_allclose(np.asarray(dense.probabilities), np.asarray(exact.probabilities), atol=1e-5)
    assert np.asarray(exact.probabilities).std(axis=(1, 2)).max() > 0.01  # outputs differ from tile to tile


def test_dense_mode_checks_the_stride(mosaic_path, tmp_path):
    b = _local_bundle()
    with pytest.raises(NcmError, match="multiple of 8 px"):
        predict_mosaic(b, mosaic_path, tmp_path / "d.zarr", stride=12, dense=True)
    with pytest.raises(NcmError, match="overlapping tiles"):
        predict_mosaic(b, mosaic_path, tmp_path / "d.zarr", dense=True)


def test_dense_mode_rechecks_undecided_tiles_exactly(mosaic_path, tmp_path):
    b = _local_bundle("padded")
    kw = dict(stride=16, max_block_pixels=96 * 96)
    exact = np.asarray(predict_mosaic(b, mosaic_path, tmp_path / "e.zarr", **kw).probabilities)
    approx = np.asarray(
        predict_mosaic(b, mosaic_path, tmp_path / "d0.zarr", dense=True, dense_recheck=0, **kw).probabilities
    )
    assert np.abs(approx - exact).max() > 1e-3  # tile borders see their neighbours instead of padding
    full = predict_mosaic(b, mosaic_path, tmp_path / "d1.zarr", dense=True, dense_recheck=1, **kw)
    assert full.attrs["n_rechecked"] == full.grid.size == 14 * 19
    np.testing.assert_allclose(np.asarray(full.probabilities), exact, atol=1e-5)
    part = predict_mosaic(b, mosaic_path, tmp_path / "d2.zarr", dense=True, dense_recheck=0.3, **kw)
    p = np.asarray(part.probabilities)
    from ncm_core.inference.dense import top2_margin

    undecided = top2_margin(np.moveaxis(approx, 0, -1)) < 0.3
    assert 0 < undecided.sum() == part.attrs["n_rechecked"] < undecided.size
    np.testing.assert_allclose(p[:, undecided], exact[:, undecided], atol=1e-5)  # rechecked: exact
    np.testing.assert_allclose(p[:, ~undecided], approx[:, ~undecided], atol=1e-6)  # the rest: dense


def test_dense_mode_refuses_a_trunk_with_a_global_operation(mosaic_path, tmp_path):
    with pytest.raises(NcmError, match="local convolutional trunk.*squeeze-and-excitation"):
        predict_mosaic(_local_bundle("global"), mosaic_path, tmp_path / "d.zarr", stride=16, dense=True)
    assert not (tmp_path / "d.zarr").exists() and not (tmp_path / "d.zarr.partial").exists()


def test_onnx_runtime_backend_gives_the_pytorch_result(tiny_bundle, mosaic_path, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ref = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "t.zarr", backend="torch")
    ort = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "o.zarr", backend="onnxruntime")
    assert ref.attrs["backend"] == "torch" and ort.attrs["backend"] == "onnxruntime"
    np.testing.assert_allclose(np.asarray(ort.probabilities), np.asarray(ref.probabilities), atol=1e-5)
    ok = decisive(np.moveaxis(np.asarray(ref.probabilities), 0, -1))
    assert np.array_equal(ort.classes[ok], ref.classes[ok])
    if ref.attrs.get("ood"):
        np.testing.assert_allclose(np.asarray(ort.ood), np.asarray(ref.ood), rtol=1e-4, atol=1e-5)
    # dense mode: the trunk in ONNX Runtime (free height and width), rechecks too
    b = _local_bundle("padded")
    kw = dict(stride=16, max_block_pixels=96 * 96, dense=True)
    d_t = predict_mosaic(b, mosaic_path, tmp_path / "dt.zarr", backend="torch", **kw)
    d_o = predict_mosaic(b, mosaic_path, tmp_path / "do.zarr", backend="onnxruntime", **kw)
    assert d_o.attrs["n_rechecked"] == d_t.attrs["n_rechecked"] > 0
    np.testing.assert_allclose(np.asarray(d_o.probabilities), np.asarray(d_t.probabilities), atol=1e-5)


def test_backend_errors_are_one_line(tiny_bundle, mosaic_path, tmp_path, monkeypatch):
    with pytest.raises(NcmError, match="backend must be one of auto, torch, onnxruntime"):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", backend="tensorrt")
    import ncm_core.inference.runtime

    monkeypatch.setattr(ncm_core.inference.runtime, "have_onnxruntime", lambda: False)
    with pytest.raises(NcmError, match=r"pip install \"napari-ncm\[onnx\]\""):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", backend="onnxruntime")
    # "auto" quietly stays on PyTorch without it
    assert predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "a.zarr").attrs["backend"] == "torch"


def test_section_summary_line_keeps_its_text_without_a_pixel_size():
    from types import SimpleNamespace

    from ncm_core.cli.predict import section_line

    g = SimpleNamespace(angle_deg=1.5, thickness_um=None, thickness_px=42.0, crops=[0, 1, 2])
    assert section_line(g) == "section: collector angle +1.50 deg, active layer 42 px, 3 crops"
    g.thickness_um = 2.125
    assert section_line(g) == "section: collector angle +1.50 deg, active layer 2.1 um, 3 crops"


def test_options_are_the_one_home_of_the_defaults(tiny_bundle, mosaic_path, tmp_path):
    from ncm_core.cli import build_parser
    from ncm_core.inference.options import PredictOptions

    a = build_parser().parse_args(["predict", "b", "m", "o"])
    d = PredictOptions()
    assert (a.backend, a.dense_recheck, a.device) == (d.backend, d.dense_recheck, d.device)
    assert a.batch_size is None  # the task's own default: PredictOptions (tiles) or SegmentOptions (windows)
    with pytest.raises(NcmError, match="did you mean 'batch_size'"):
        predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", batchsize=8)
    p = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "p.zarr", PredictOptions(batch_size=9), stride=16)
    assert p.attrs["options"]["batch_size"] == 9 and p.attrs["options"]["stride"] == 16 and p.grid.stride == 16
