"""The GPU code path: the same results as on the CPU, within mixed precision's tolerance.

Skipped where CUDA is absent (CI has no GPU); run on a GPU machine with
``pytest tests/test_gpu.py``.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ncm_core.data import synth  # noqa: E402
from ncm_core.errors import NcmError  # noqa: E402
from ncm_core.inference.predict import predict_mosaic  # noqa: E402
from ncm_core.io.mosaic import write_ome_zarr  # noqa: E402
from ncm_core.models.bundle import load_bundle  # noqa: E402

from .conftest import decisive  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    m = synth.sem_mosaic((230, 310), seed=5)
    return write_ome_zarr(tmp_path_factory.mktemp("m") / "mosaic.ome.zarr", m.image, pixel_size=0.05, chunks=64)


def test_asking_for_cuda_without_it_is_one_clear_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from ncm_core.training.classify import resolve_device

    with pytest.raises(NcmError, match="CUDA is not available"):
        resolve_device("cuda")


@cuda
def test_gpu_prediction_matches_the_cpu(tiny_bundle, mosaic_path, tmp_path):
    cpu = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "cpu.zarr", device="cpu")
    gpu = predict_mosaic(tiny_bundle, mosaic_path, tmp_path / "gpu.zarr", device="cuda", batch_size=16)
    assert gpu.attrs["device"].startswith("cuda") and gpu.attrs["complete"]
    pc = np.moveaxis(np.asarray(cpu.probabilities), 0, -1)
    pg = np.moveaxis(np.asarray(gpu.probabilities), 0, -1)
    assert np.abs(pc - pg).max() < 0.05  # bf16 autocast
    ok = decisive(pc, margin=0.1)
    assert ok.mean() > 0.5 and np.array_equal(cpu.classes[ok], gpu.classes[ok])


@cuda
def test_gpu_blocks_are_prepared_in_pinned_memory(tiny_bundle, mosaic_path):
    from ncm_core.inference.engine import Context, read_region
    from ncm_core.inference.predict import plan_grid
    from ncm_core.inference.tiles import TileClassTask
    from ncm_core.io.mosaic import open_mosaic

    bundle = load_bundle(tiny_bundle)
    mosaic = open_mosaic(mosaic_path)
    grid = plan_grid(bundle, mosaic)
    task = TileClassTask(grid, np.ones(grid.shape, bool), (4, 4), 16)
    block = task.blocks()[0]
    assert block.cells == (0, 4, 0, 4)
    x, _ = task.prepare(Context(bundle, mosaic, torch.device("cuda")), block, read_region(mosaic, block.pixels), None)
    assert x.device.type == "cpu" and x.is_pinned() and x.shape[0] == 16


@cuda
def test_gpu_dense_mode_matches_the_cpu(mosaic_path, tmp_path):
    from .test_predict import _local_bundle

    cpu = predict_mosaic(_local_bundle(), mosaic_path, tmp_path / "c.zarr", stride=16, dense=True, device="cpu")
    gpu = predict_mosaic(_local_bundle(), mosaic_path, tmp_path / "g.zarr", stride=16, dense=True, device="cuda")
    assert np.abs(np.asarray(cpu.probabilities) - np.asarray(gpu.probabilities)).max() < 0.05


@cuda
def test_mixed_precision_training_on_gpu_gives_a_bundle_that_loads_on_the_cpu(sem_folders, tmp_path):
    from ncm_core.training.classify import amp_dtype, train

    assert amp_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
    res = train(
        sem_folders,
        tmp_path / "b",
        architecture="resnet10t",
        tile_size=32,
        epochs=2,
        crops_per_image=8,
        batch_size=16,
        exclude_rows=(-16, None),
        device="cuda",
        amp="auto",
    )
    b = load_bundle(res.bundle, device="cpu")
    assert all(torch.isfinite(p).all() for p in b.model.parameters())
    assert next(b.model.parameters()).device.type == "cpu"


@cuda
def test_gpu_explanations_match_the_cpu(tiny_bundle, rng):
    from ncm_core.explain.methods import explain

    tiles = (rng.random((4, 32, 32)) * 255).astype(np.uint8)
    for method in ("gradcam", "guided-backprop", "occlusion"):
        c = explain(tiny_bundle, tiles, method, device="cpu", window=(8, 8))
        g = explain(tiny_bundle, tiles, method, device="cuda", window=(8, 8))
        np.testing.assert_array_equal(c.targets, g.targets)
        scale = np.abs(c.maps).max()
        assert np.abs(c.maps - g.maps).max() <= 1e-3 * scale + 1e-6, method


@cuda
def test_tortuosity_on_the_gpu_equals_the_cpu():
    """TauFactor on CUDA (what ``tortuosity_factor`` picks when a GPU is present) gives the CPU's value."""
    from ncm_core.data.synth_volumes import blobs
    from ncm_core.measure.tortuosity import tortuosity_factor

    pore = blobs((40, 40, 40), porosity=0.45, seed=0).pore
    gpu, cpu = tortuosity_factor(pore, 0), tortuosity_factor(pore, 0, "cpu")
    assert gpu.device.startswith("cuda") and gpu.converged
    assert gpu.tau == pytest.approx(cpu.tau, rel=1e-3)
