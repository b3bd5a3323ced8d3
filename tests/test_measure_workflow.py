"""``ncm measure``: a segmentation in, a folder of numbers, tables, figures and layers out (issue 19,
item 3): measured against the truth the sample was built with, with the bad inputs of the issue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ncm_core.data import synth_volumes
from ncm_core.errors import Cancelled, NcmError
from ncm_core.measure import _labels
from ncm_core.workflows import measure as wf


@pytest.fixture(scope="module")
def discs(tmp_path_factory):
    """Separate solid discs of radius 8 px in pore, with a collector band at the bottom, as an OME-Zarr
    with NGFF labels (pore, active, collector) at 0.5 um/px: what ``ncm predict`` writes."""
    from ncm_core.io.mosaic import write_ome_zarr

    s = synth_volumes.sphere_pack((150, 200), radius=8, solid_fraction=0.3, seed=1)
    lab = s.labels.copy()
    lab[140:] = 3  # the collector
    path = tmp_path_factory.mktemp("seg") / "seg.zarr"
    classes = ["pore", "active", "collector"]
    write_ome_zarr(path, lab * 80, pixel_size=0.5, chunks=64, labels={"phases": lab}, label_classes={"phases": classes})
    return path, lab, s.truth


def test_measure_a_segmentation_against_its_truth(discs, tmp_path, monkeypatch):
    from ncm_core.outputs import output_kind

    path, lab, truth = discs
    monkeypatch.setattr(_labels, "BLOCK_PIXELS", 64 * 200)  # the sums run block by block
    seen = []
    out = wf.measure(path, tmp_path / "m", region="0:140,0:200", progress=lambda d, t, m: seen.append((d, t)))
    s = json.loads((out / "measure.json").read_text())
    assert s["unit"] == "um" and s["pore"] == ["pore"] and output_kind(out) == "a measurement folder"
    assert s["fractions"]["porosity"] == pytest.approx((lab == 1).sum() / lab.size, abs=1e-12)
    p = s["particles"]
    assert p["phase"] == ["active"] and p["d50"] == pytest.approx(truth["d50"] * 0.5, rel=0.05)
    assert p["count"] == len(json.loads((out / "particles.json").read_text())["rows"]) > 10
    t = s["tortuosity"]
    assert t["percolating"] and 1.0 <= t["tau"] < 2.0
    for f in (
        "fractions",
        "profile",
        "interfaces",
        "particles",
        "local_thickness",
        "tortuosity",
        "two_point_correlation",
    ):
        assert (out / f"{f}.csv").is_file() and (out / f"{f}.json").is_file()
    assert set(s["figures"]) == {"size_distribution.png", "porosity_profile.png", "tortuosity.png"}
    profile = json.loads((out / "profile.json").read_text())["rows"]
    assert len(profile) == 150 and profile[-1]["collector"] == 1.0 and profile[-1]["porosity"] == 0
    import tifffile

    assert tifffile.imread(out / "particles.tif").shape == (140, 200)  # the measured region
    assert s["region_offset"] == [0, 0]
    done = [d / t for d, t in seen]
    assert done == sorted(done) and done[-1] == 1.0
    with pytest.raises(NcmError, match="output exists"):
        wf.measure(path, out)


def test_regions_and_a_profile_from_the_collector(discs, tmp_path):
    import tifffile

    path, lab, _ = discs
    regions = np.zeros(lab.shape, np.uint8)
    regions[:, :100], regions[:, 100:] = 1, 2
    tifffile.imwrite(tmp_path / "regions.tif", regions)
    # the collector's top edge at row 140, running along x: d points down, towards it
    geom = {
        "format": "ncm-sections",
        "mosaics": [{"name": "seg", "origin": [140.0, 0.0], "d": [1.0, 0.0], "thickness_px": 100}],
    }
    (tmp_path / "sections.json").write_text(json.dumps(geom))
    out = wf.measure(
        path, tmp_path / "m", regions=tmp_path / "regions.tif", sections=tmp_path, particles=False, tortuosity=False
    )
    rows = json.loads((out / "regions.json").read_text())["rows"]
    for r, half in zip(rows, (lab[:, :100], lab[:, 100:]), strict=True):
        assert r["porosity"] == pytest.approx((half == 1).mean())
    prof = json.loads((out / "profile.json").read_text())
    assert prof["coordinate"] == "distance from the collector"
    first = prof["rows"][0]
    assert first["position"] == pytest.approx(0.25) and first["collector"] == 0  # 0.5 px from the collector
    assert len(prof["rows"]) == 140
    # the section's descriptors for rate capability: the active layer's porosity and thickness
    sec = json.loads((out / "section_descriptors.json").read_text())["rows"][0]
    assert sec["porosity"] == pytest.approx((lab[40:140] == 1).mean()) and sec["thickness"] == 50.0
    assert sec["tortuosity"] is None and sec["d50"] is None  # not measured in this run


def test_a_volume_without_pixel_size_is_measured_in_pixels_with_a_warning(tmp_path, capsys):
    """The command line on a 3D tif stack of straight pores: tortuosity 1 along them, in pixels."""
    import warnings

    import tifffile

    from ncm_core.cli import main

    s = synth_volumes.tubes((24, 24, 24), radius=3, spacing=12)
    tifffile.imwrite(tmp_path / "vol.tif", s.labels)
    show = warnings.showwarning
    try:
        code = main(
            ["measure", str(tmp_path / "vol.tif"), str(tmp_path / "m"), "--classes", "pore,solid", "--no-figures", "-q"]
        )
    finally:
        warnings.showwarning = show
    r = capsys.readouterr()
    assert code == 0, r.err
    assert "ncm: warning: the segmentation has no pixel size: measures are in pixels" in r.err
    assert "tortuosity factor of the pores along axis 0: 1.000" in r.out
    m = json.loads((tmp_path / "m" / "measure.json").read_text())
    assert m["unit"] == "px" and m["pixel_size"] is None
    assert m["fractions"]["porosity"] == pytest.approx(s.truth["porosity"], abs=1e-12)
    assert m["specific_surface_area"]["pore"] > 0 and m["tortuosity"]["tau"] == pytest.approx(1.0, abs=0.01)


def test_bad_inputs_are_one_clear_line_and_nothing_written(discs, tmp_path, monkeypatch):
    path, lab, _ = discs
    out = tmp_path / "m"
    with pytest.raises(NcmError, match="have no class name .*--classes"):
        wf.measure(lab, out, classes="pore,active")  # value 3 is not named
    with pytest.raises(NcmError, match="say which class is pore: --pore CLASS"):
        wf.measure(lab, out, classes="a,b,c")
    monkeypatch.setattr(wf, "IN_MEMORY_BYTES_PER_PIXEL", 2**50)
    with pytest.raises(NcmError, match="pick a region with --region"):
        wf.measure(path, out)
    monkeypatch.undo()
    with pytest.raises(Cancelled):
        wf.measure(path, out, cancel=lambda: True)
    assert list(tmp_path.iterdir()) == []  # no output, no .partial
    # a phase that does not cross the region: infinite tortuosity with a note, not a crash
    closed = np.full((40, 40), 2, np.uint8)
    closed[5:35, 5:35] = 1
    with pytest.warns(UserWarning, match="measures are in pixels"):
        res = wf.measure(closed, out, classes="pore,solid", particles=False, figures=False)
    t = json.loads((res / "tortuosity.json").read_text())
    assert t["tau"] is None and "infinite" in t["note"] and not t["percolating"]


def test_sample_volumes_carry_their_truth(tmp_path):
    """``ncm sample volume``: a TIFF stack with its pixel size, class names and the truth it was built with."""
    from ncm_core.io.labels import open_labels
    from ncm_core.measure.phases import porosity

    out = synth_volumes.write_volume_sample(tmp_path / "v", "blobs", (24, 24, 24), seed=1)
    truth = json.loads((out / "truth.json").read_text())
    img = open_labels(out / "volume.tif")
    assert img.shape == (24, 24, 24) and img.pixel_size == pytest.approx(0.1) and img.classes == {1: "pore", 2: "solid"}
    assert porosity(np.asarray(img.data[:]), img.classes) == pytest.approx(truth["porosity"], abs=0.02)
    with pytest.raises(NcmError, match="kind must be one of"):
        synth_volumes.make_sample("foam")
