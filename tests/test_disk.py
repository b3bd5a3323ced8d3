"""A full disk: refused before the run when the output cannot fit, and one line with nothing left behind
when the disk fills up during the run (issue 15, item 2)."""

import errno
import shutil
from collections import namedtuple

import numpy as np
import pytest

from ncm_core.cli import main
from ncm_core.data import synth
from ncm_core.errors import NcmError
from ncm_core.inference.predict import predict_mosaic
from ncm_core.inference.tiles import TileClassTask
from ncm_core.outputs import atomic_output, check_space

Usage = namedtuple("Usage", "total used free")


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    from ncm_core.io.mosaic import write_ome_zarr

    img = synth.sem_mosaic((128, 192), seed=3).image
    return write_ome_zarr(tmp_path_factory.mktemp("disk") / "m.ome.zarr", img, chunks=64)


def _full_after(n_ok: int):
    """A ``TileClassTask.process`` that writes ``n_ok`` blocks and then meets a full disk."""
    real, calls = TileClassTask.process, []

    def process(self, ctx, block, prepared, arrays):
        calls.append(block.index)
        if len(calls) > n_ok:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, ctx, block, prepared, arrays)

    return process


def test_a_disk_that_fills_up_ends_the_run_in_one_line_with_nothing_left(tiny_bundle, mosaic, tmp_path, monkeypatch):
    monkeypatch.setattr(TileClassTask, "process", _full_after(2))
    with pytest.raises(NcmError, match="disk filled up while writing; removed the unfinished output") as e:
        predict_mosaic(tiny_bundle, mosaic, tmp_path / "p.zarr", max_block_pixels=64 * 64, backend="torch")
    assert "\n" not in str(e.value) and "p.zarr" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its .partial


def test_the_cli_says_so_in_one_line(tiny_bundle, mosaic, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(TileClassTask, "process", _full_after(0))  # the default block holds this mosaic
    code = main(["predict", str(tiny_bundle), str(mosaic), str(tmp_path / "p.zarr"), "-q", "--backend", "torch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("ncm: error:") and "disk filled up" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_fit_is_refused_before_the_run(tiny_bundle, mosaic, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 100, 100))  # the grid needs 24 x 18 bytes
    with pytest.raises(NcmError, match=r"the prediction needs about .* MB, but only 0.0 MB are free"):
        predict_mosaic(tiny_bundle, mosaic, tmp_path / "p.zarr")
    assert list(tmp_path.iterdir()) == []
    check_space(tmp_path / "x", 99)  # fits


def test_every_atomic_writer_cleans_up_after_a_full_disk(tmp_path):
    with pytest.raises(NcmError, match="disk filled up"), atomic_output(tmp_path / "out") as part:
        (part / "a.bin").write_bytes(np.zeros(1000, np.uint8).tobytes())
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    # any other error passes through unchanged
    with pytest.raises(OSError, match="Permission"), atomic_output(tmp_path / "out"):
        raise PermissionError("Permission denied")
    assert list(tmp_path.iterdir()) == []
