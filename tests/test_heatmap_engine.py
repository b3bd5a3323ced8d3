"""Mosaic heatmaps on the streaming engine: resume after SIGKILL, and dask.distributed."""

import subprocess
import sys

import numpy as np
import pytest
import zarr

from ncm_core.data import synth
from ncm_core.explain.heatmaps import explain_mosaic
from ncm_core.explain.options import ExplainOptions
from ncm_core.io.mosaic import write_ome_zarr


@pytest.fixture(scope="module")
def mosaic_path(tmp_path_factory):
    m = synth.sem_mosaic((150, 190), seed=7)
    return write_ome_zarr(tmp_path_factory.mktemp("hm") / "mosaic.ome.zarr", m.image, pixel_size=0.05, chunks=64)


KW = dict(method="gradcam", target="all", factor=1, block_pixels=64, device="cpu")

KILLED_RUN = """
import os, signal, sys
from ncm_core.explain.heatmaps import explain_mosaic

def progress(done, total, msg):
    if done >= int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)

explain_mosaic(sys.argv[1], sys.argv[2], sys.argv[3], progress=progress, **{KW!r})
""".replace("{KW!r}", repr(KW))


def test_heatmap_resumes_after_sigkill_byte_identically(tiny_bundle, mosaic_path, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    r = subprocess.run([sys.executable, str(script), str(tiny_bundle), str(mosaic_path), str(tmp_path / "h.zarr"), "4"])
    assert r.returncode == -9  # killed mid-run
    assert not (tmp_path / "h.zarr").exists() and (tmp_path / "h.zarr.partial").exists()
    seen = []
    h = explain_mosaic(
        tiny_bundle, mosaic_path, tmp_path / "h.zarr", progress=lambda d, t, m: seen.append((d, t)), **KW
    )
    assert seen[0][0] == 4 and seen[0][1] > 4  # only the missing blocks were computed
    explain_mosaic(tiny_bundle, mosaic_path, tmp_path / "ref.zarr", ExplainOptions(**KW))
    assert h.attrs["complete"] and h.attrs["options"]["method"] == "gradcam"
    a = np.asarray(zarr.open_array(str(tmp_path / "h.zarr" / "maps" / "0"), mode="r")[...])
    b = np.asarray(zarr.open_array(str(tmp_path / "ref.zarr" / "maps" / "0"), mode="r")[...])
    assert np.isfinite(a).all() and a.tobytes() == b.tobytes()


def test_heatmap_options_reject_unknown_keywords(tiny_bundle, mosaic_path, tmp_path):
    from ncm_core.errors import NcmError

    with pytest.raises(NcmError, match="did you mean 'overlap'"):
        explain_mosaic(tiny_bundle, mosaic_path, tmp_path / "h.zarr", overlapp=4)
    with pytest.raises(NcmError, match="unknown explanation method"):
        ExplainOptions(method="gradcan")


@pytest.mark.slow
def test_heatmap_on_a_local_cluster_equals_the_single_process_result(tiny_bundle, mosaic_path, tmp_path):
    ref = explain_mosaic(tiny_bundle, mosaic_path, tmp_path / "ref.zarr", **KW)
    h = explain_mosaic(tiny_bundle, mosaic_path, tmp_path / "d.zarr", scheduler="local:2", **KW)
    assert h.attrs["complete"] and not (tmp_path / "d.zarr.partial").exists()
    # workers run torch with one thread each, this process with two: oneDNN sums in another order
    np.testing.assert_allclose(np.asarray(h.data), np.asarray(ref.data), rtol=1e-5, atol=1e-6)
