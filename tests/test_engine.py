"""The streaming engine's pixel-level path: overlapping windows with a halo stitch without seams."""

from dataclasses import dataclass

import numpy as np
import pytest

from ncm_core.errors import NcmError
from ncm_core.inference import engine
from ncm_core.inference.windows import WindowGeometry, WindowTask, blend_weights
from ncm_core.io.mosaic import open_mosaic


def box3(img: np.ndarray) -> np.ndarray:
    """3 x 3 mean of a (padded) image, 'valid' part: a local filter of reach 1."""
    h, w = img.shape[0] - 2, img.shape[1] - 2
    return sum(img[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9.0


@dataclass
class FilterTask(WindowTask):
    """A trivial pixel-level 'model': identity, or a 3 x 3 box filter computed per window."""

    kind: str = "identity"

    def run_windows(self, ctx, x):
        x = np.asarray(x, np.float64)
        if self.kind == "identity":
            return x[:, None]
        out = np.zeros_like(x)
        out[:, 1:-1, 1:-1] = np.stack([box3(w) for w in x])  # window edges stay wrong: the halo drops them
        return out[:, None]


def _run(tmp_path, img, geometry, kind, name="o.zarr", **kw):
    mosaic = open_mosaic(img)
    task = FilterTask(geometry, 1, 5, "out/0", kind)
    ctx = engine.Context(None, mosaic, "cpu")
    out = tmp_path / name
    partial, root, _ = engine.start(out, "fp", {"kind": "test"}, task, overwrite=False, resume=True)
    gen = engine.execute(task, ctx, **kw)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        assert stop.value == []
    engine.complete(root, {"kind": "test"}, partial, out)
    import zarr

    return np.asarray(zarr.open_array(str(out / "out" / "0"), mode="r")[...])[0]


@pytest.mark.parametrize("blend", ["cosine", "gaussian", "constant"])
def test_identity_windows_stitch_to_the_image(tmp_path, blend):
    img = np.random.default_rng(0).random((70, 93)).astype(np.float32)
    g = WindowGeometry(img.shape, window=16, halo=2, overlap=4, factor=1, chunk=24, blend=blend)
    assert g.status_shape == (3, 4)  # several blocks, windows on block borders
    np.testing.assert_allclose(_run(tmp_path, img, g, "identity"), img, rtol=0, atol=1e-6)


def test_a_local_filter_with_a_halo_equals_the_whole_image_result(tmp_path):
    img = np.random.default_rng(1).random((61, 77)).astype(np.float32)
    whole = box3(np.pad(img.astype(np.float64), 1, mode="reflect"))
    g = WindowGeometry(img.shape, window=20, halo=1, overlap=6, factor=1, chunk=32, blend="gaussian")
    stitched = _run(tmp_path, img, g, "box")
    np.testing.assert_allclose(stitched, whole, rtol=0, atol=1e-6)  # no seams, exact at the image border
    # without the halo, the windows' wrong edges leak in: seams
    g0 = WindowGeometry(img.shape, window=20, halo=0, overlap=6, factor=1, chunk=32, blend="gaussian")
    assert np.abs(_run(tmp_path, img, g0, "box", "o0.zarr") - whole).max() > 0.05


def test_window_geometry_checks():
    with pytest.raises(NcmError, match="leave no stride"):
        WindowGeometry((64, 64), window=8, halo=2, overlap=4)
    with pytest.raises(NcmError, match="factor 3 must divide"):
        WindowGeometry((64, 64), window=16, factor=3)
    with pytest.raises(NcmError, match="blend must be"):
        WindowGeometry((64, 64), window=16, blend="box")
    w = blend_weights(8, 2, "cosine")
    assert w.shape == (8, 8) and w.min() > 0 and w[4, 4] == 1


def test_unreadable_blocks_are_retried_then_recorded(tmp_path, monkeypatch):
    from ncm_core.inference import reading

    img = np.random.default_rng(2).random((48, 48)).astype(np.float32)
    g = WindowGeometry(img.shape, window=16, halo=0, overlap=0, chunk=24)
    mosaic = open_mosaic(img)
    calls = []
    real = reading.read_region

    def flaky(m, pixels):
        calls.append(pixels)
        if pixels[0] >= 16 and pixels[2] >= 16:
            raise NcmError("cannot read pixels (test)")
        return real(m, pixels)

    task = FilterTask(g, 1, 5, "out/0", "identity")
    engine.start(tmp_path / "o.zarr", "fp", {}, task, overwrite=False, resume=True)
    monkeypatch.setattr(reading, "read_region", flaky)
    gen = engine.execute(task, engine.Context(None, mosaic, "cpu"), retries=2, retry_delay=0)
    failed = None
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        failed = stop.value
    assert len(failed) == 1 and failed[0]["pixels"] == [16, 48, 16, 48]
    # one read and two retries of the block, then its one chunk once more with one retry
    assert sum(1 for p in calls if p[0] >= 16 and p[2] >= 16) == 5
    err = engine.incomplete(failed, 4, tmp_path / "o.zarr.partial", "m")
    assert "1 region in 1 of 4 blocks" in str(err) and "\n" not in str(err) and "--allow-incomplete" in str(err)
