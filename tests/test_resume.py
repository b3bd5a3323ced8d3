"""Resume only the same run: a changed input is computed again where it changed, and a damaged status
record is rebuilt or named (issue 15, item 3)."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import zarr

from ncm_core.data import synth
from ncm_core.errors import Cancelled, NcmError
from ncm_core.inference.predict import predict_mosaic
from ncm_core.io.mosaic import write_ome_zarr

from .test_predict import killed_runs  # the same command in a fresh process, SIGKILLed after N blocks

# one engine and layout for every run (``auto`` measures per process; see test_predict's SIGKILL test)
KW = dict(max_block_pixels=64 * 64, backend="torch", memory_format="contiguous")


@pytest.fixture
def mosaic(tmp_path):
    m = synth.sem_mosaic((192, 320), seed=11)  # 3 x 5 blocks of 64 px (2 x 2 tiles of 32 px)
    return write_ome_zarr(tmp_path / "mosaic.ome.zarr", m.image, chunks=64)


def _arrays(path):
    return {
        name: np.asarray(zarr.open_array(str(path / name), mode="r")[...]).tobytes()
        for name in ("labels/0", "probabilities/0", "ood/0", "unpredicted")
    }


def _change(path, y, x):
    """Another image in the 64 px block at (y, x) of the mosaic's pixels (a different sample's)."""
    z = zarr.open_array(str(path / "0"), mode="r+")
    z[y : y + 64, x : x + 64] = synth.sem_mosaic((64, 64), (1, 1), seed=99, classes=("NCM811_cycled100",)).image


def test_a_changed_input_resumes_to_a_fresh_runs_result(tiny_bundle, mosaic, tmp_path):
    """Killed after 5 of 15 blocks; the pixels of one finished block (0, 1) and one unfinished block (2, 3)
    change; the same command again recomputes the changed finished block (with a warning that names it)
    and the rest, and equals a fresh run on the changed mosaic byte for byte."""
    run = killed_runs(tmp_path, tiny_bundle, mosaic)

    r = run("p.zarr", 5)
    assert r.returncode == -9, r.stderr
    status = np.asarray(zarr.open_array(str(tmp_path / "p.zarr.partial" / "blocks"), mode="r")[...])
    assert status[0, 1] == 1 and status[2, 3] == 0  # the first block done, the second not yet
    _change(mosaic, 0, 64)
    _change(mosaic, 128, 192)
    r = run("p.zarr", 0)
    assert r.returncode == 0, r.stderr
    assert "first 4" in r.stdout  # 5 done, one of them changed: 4 kept
    assert "input changed since the interrupted run in 1 finished block" in r.stderr
    assert "block 0,1 (y 0:64, x 64:128)" in r.stderr
    assert run("ref.zarr", 0).returncode == 0
    assert _arrays(tmp_path / "p.zarr") == _arrays(tmp_path / "ref.zarr")


def _cancelled_after(bundle, mosaic, out, n):
    stop = threading.Event()
    with pytest.raises(Cancelled):
        predict_mosaic(bundle, mosaic, out, cancel=stop, progress=lambda d, t, m: stop.set() if d >= n else None, **KW)


def test_a_damaged_status_record_is_rebuilt_from_the_digests(tiny_bundle, mosaic, tmp_path):
    out = tmp_path / "p.zarr"
    _cancelled_after(tiny_bundle, mosaic, out, 3)
    chunk = out.with_name("p.zarr.partial") / "blocks" / "c" / "0" / "0"
    chunk.write_bytes(b"\xffnot a status byte")
    seen = []
    with pytest.warns(UserWarning, match="status record .* damaged; rebuilt it from the block digests"):
        pred = predict_mosaic(tiny_bundle, mosaic, out, progress=lambda d, t, m: seen.append(d), **KW)
    assert seen[0] == 3  # the three finished blocks were kept
    ref = predict_mosaic(tiny_bundle, mosaic, tmp_path / "ref.zarr", **KW)
    assert _arrays(pred.path) == _arrays(ref.path)


def test_a_record_that_cannot_be_rebuilt_names_restart(tiny_bundle, mosaic, tmp_path):
    out = tmp_path / "p.zarr"
    _cancelled_after(tiny_bundle, mosaic, out, 2)
    partial = out.with_name("p.zarr.partial")
    for name in ("blocks", "digests"):
        (partial / name / "zarr.json").write_text("{damaged")
    with pytest.raises(NcmError, match="damaged; run again with --restart") as e:
        predict_mosaic(tiny_bundle, mosaic, out, **KW)
    assert "\n" not in str(e.value)
    r = subprocess.run(
        [sys.executable, "-m", "ncm_core.cli", "predict", str(tiny_bundle), str(mosaic), str(out), "-q", "--restart"],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert r.returncode == 0, r.stderr
    assert (out / "labels").is_dir() and not partial.exists()
