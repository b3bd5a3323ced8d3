"""Microstructure measures against known truth (issue 19, item 3): a disc of known radius, a striped
phase whose tortuosity is 1 along the stripes, a known porosity, the perimeter of a known shape."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ncm_core.errors import NcmError
from ncm_core.measure import _labels, interfaces, particles, phases, tortuosity
from ncm_core.measure.correlation import lineal_path, two_point_correlation


def disc(shape, centre, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r**2


def test_a_disc_has_its_diameter_and_a_circularity_near_one():
    r = 20
    t = particles.particle_sizes(disc((100, 100), (50, 50), r), pixel_size=0.5)
    assert len(t["label"]) == 1
    assert t["equivalent_diameter"][0] == pytest.approx(2 * r * 0.5, rel=0.01)
    assert t["circularity"][0] > 0.95 and t["aspect_ratio"][0] == pytest.approx(1, abs=0.03)
    assert not t["touches_border"][0]


@pytest.mark.parametrize("method", ["snow", "watershed"])
def test_touching_discs_are_separated_and_their_d50_is_known(method):
    radii = [12, 16, 16, 20, 24]
    mask = np.zeros((120, 260), bool)
    x = 30
    for r in radii:  # a row of discs, each overlapping the next by 3 px
        mask |= disc(mask.shape, (60, x), r)
        x += r + radii[min(radii.index(r) + 1, len(radii) - 1)] - 3
    lab = particles.separate_particles(mask, method=method)
    assert lab.max() == len(radii)
    s = particles.particle_summary(particles.particle_sizes(lab), mask.shape)
    assert s["count"] == len(radii)
    assert s["d50"] == pytest.approx(2 * 16, rel=0.05)
    assert s["count_per_area"] == pytest.approx(len(radii) / mask.size)
    # without separation they are one particle
    assert particles.separate_particles(mask, method="none").max() == 1


def test_size_quantiles_by_number_and_by_volume():
    d = np.array([1.0, 1.0, 1.0, 10.0])
    assert particles.size_quantiles(d)["d50"] == 1.0
    assert particles.size_quantiles(d, weighting="volume", ndim=3)["d50"] > 9  # the big one holds the volume
    assert math.isnan(particles.size_quantiles(np.array([]))["d50"])


def test_a_known_porosity_and_phase_fractions_in_memory_and_block_by_block(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    rng = np.random.default_rng(0)
    lab = rng.choice([1, 2, 3], size=(96, 80), p=[0.3, 0.5, 0.2]).astype(np.uint8)
    lab[:4] = 0  # not predicted: out of every fraction
    truth = (lab == 1).sum() / (lab > 0).sum()
    classes = ["pore", "active", "binder"]
    assert phases.porosity(lab, classes) == pytest.approx(truth, abs=1e-12)
    f = phases.phase_fractions(lab, classes)
    assert sum(f.values()) == pytest.approx(1) and f["pore"] == pytest.approx(truth)
    z = zarr.create_array(str(tmp_path / "l.zarr"), shape=lab.shape, chunks=(16, 80), dtype=lab.dtype)
    z[:] = lab
    monkeypatch.setattr(_labels, "BLOCK_PIXELS", 16 * 80)  # several blocks
    seen = []
    assert phases.phase_fractions_lazy(z, classes, progress=lambda d, t, m: seen.append(t)) == f
    assert seen and seen[-1] == 6
    # a boolean mask is a pore mask
    assert phases.porosity(lab == 1) == pytest.approx((lab == 1).mean())


def test_the_pore_class_must_be_found_or_named():
    lab = np.array([[1, 2], [2, 2]])
    assert phases.porosity(lab, ["pore", "active"]) == 0.25
    assert phases.porosity(lab, ["a", "b"], pore="a") == 0.25
    with pytest.raises(NcmError, match="say which class is pore: --pore CLASS"):
        phases.porosity(lab, ["a", "b"])
    with pytest.raises(NcmError, match="'c' is not one of a, b"):
        phases.porosity(lab, ["a", "b"], pore="c")


def test_a_profile_through_the_thickness(tmp_path, monkeypatch):
    lab = np.full((40, 30), 2, np.uint8)
    lab[:, :10] = 1  # pore on the left third
    monkeypatch.setattr(_labels, "BLOCK_PIXELS", 300)
    p = phases.profile(lab, 1, ["pore", "solid"], pixel_size=2.0)
    assert p["position"][0] == 1.0 and len(p["position"]) == 30
    np.testing.assert_array_equal(p["pore"], np.r_[np.ones(10), np.zeros(20)])
    # a coordinate map (e.g. the distance from the collector) bins pixels by it
    q = phases.profile(lab, 0, ["pore", "solid"], coordinate=lambda sl: np.arange(30)[None, :] // 10, bin_width=1)
    np.testing.assert_array_equal(q["pore"], [1, 0, 0])
    assert list(q["pixels"]) == [400, 400, 400]


def test_interface_length_of_a_disc_and_block_by_block(monkeypatch):
    r = 30
    m = disc((100, 120), (50, 60), r)
    length = interfaces.interface_density(m, 1) * m.size
    assert length == pytest.approx(2 * np.pi * r, rel=0.02)
    assert interfaces.interface_density(m, 1, pixel_size=0.5) == pytest.approx(2 * interfaces.interface_density(m, 1))
    lab = np.where(m, 1, 2)
    lab[:, :20] = 3
    monkeypatch.setattr(_labels, "BLOCK_PIXELS", 7 * 120)
    pairs = [(1, 2), (2, 3), (1, None)]
    assert interfaces.interface_counts_lazy(lab, pairs) == [interfaces.interface_changes(lab, a, b) for a, b in pairs]


def test_surface_of_a_sphere_and_local_thickness_of_a_slab():
    r = 12
    zz, yy, xx = np.mgrid[:40, :40, :40]
    ball = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= r**2
    ssa = interfaces.specific_surface_area(ball)
    assert ssa * ball.size == pytest.approx(4 * np.pi * r**2, rel=0.01)
    assert interfaces.specific_surface_area(ball, smooth=0) * ball.size > 1.05 * 4 * np.pi * r**2  # staircase
    assert interfaces.interface_density(ball, 1) * ball.size == pytest.approx(4 * np.pi * r**2, rel=0.05)
    slab = np.zeros((30, 40), bool)
    slab[:, 10:20] = True
    lt = interfaces.local_thickness(slab, pixel_size=0.5)
    assert lt[15, 15] == pytest.approx(5.0) and lt[0, 0] == 0


def test_percolation_and_connected_fraction():
    m = np.zeros((30, 30), bool)
    m[:, 5] = True  # a channel from top to bottom
    m[10:12, 20:25] = True  # an island
    assert interfaces.percolates(m, 0) and not interfaces.percolates(m, 1)
    assert interfaces.connected_fraction(m, 0) == pytest.approx(30 / (30 + 10))


def test_correlation_curves_start_at_the_phase_fraction():
    m = np.zeros((64, 64), bool)
    m[:, ::8] = True
    m[:, 1::8] = True  # stripes 2 px wide every 8 px
    s2 = two_point_correlation(m)
    assert s2["probability"][0] == pytest.approx(m.mean(), rel=0.05)
    chords = lineal_path(m, axis=1, bins=5)
    assert chords["length"][np.argmax(chords["pdf"])] == pytest.approx(2, abs=0.5)


def stripes(shape, width=4, period=10):
    m = np.zeros(shape, bool)
    for s in range(0, shape[1], period):
        m[:, s : s + width] = True
    return m


def test_tortuosity_is_one_along_stripes_and_infinite_across():
    m = stripes((60, 40))
    along = tortuosity.tortuosity_factor(m, axis=0, device="cpu")
    assert along.tau == pytest.approx(1.0, abs=0.01) and along.converged and along.percolating
    assert along.effective_diffusivity == pytest.approx(m.mean(), rel=0.01)
    across = tortuosity.tortuosity_factor(m, axis=1, device="cpu")
    assert math.isinf(across.tau) and not across.percolating and "infinite" in across.note
    assert across.to_dict()["tau"] is None


def test_tortuosity_of_a_volume_too_large_for_memory_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(tortuosity, "available_memory", lambda device: 1000)
    with pytest.raises(NcmError, match=r"needs about .* GiB .*--region"):
        tortuosity.tortuosity_factor(stripes((60, 40)), axis=0, device="cpu")


def test_crop_descriptors_are_the_measures_of_each_crop():
    from ncm_core.data.descriptors import mask_descriptors
    from ncm_core.measure.correlation import mean_chord_length

    rng = np.random.default_rng(3)
    stack = np.stack([disc((40, 50), (20, 25), r) for r in (5, 9, 14)]) | (rng.random((3, 40, 50)) < 0.02)
    d = mask_descriptors(stack, pixel_size=0.5)
    for k, m in enumerate(stack):
        assert d["interface_density"][k] == pytest.approx(interfaces.interface_density(m, 1, pixel_size=0.5))
        assert d["pore_chord"][k] == pytest.approx(mean_chord_length(m, 0.5))
        assert d["porosity"][k] == pytest.approx(phases.porosity(m))
    square = np.zeros((30, 30), bool)
    square[5:15, 5:15] = True
    assert mean_chord_length(square) == 10.0  # every chord through a square crosses its side


def test_a_region_is_y_x_then_z_in_the_array_axis_order():
    from ncm_core.measure.options import parse_region

    assert parse_region("10:20,:30", (100, 200)) == (slice(10, 20), slice(0, 30))
    assert parse_region("10:20,0:30,5:", (8 + 5, 100, 200)) == (slice(5, 13), slice(10, 20), slice(0, 30))
    assert parse_region(None, (4, 5)) == (slice(0, 4), slice(0, 5))
    for bad in ("10:20", "a:b,0:3", "10:11,0:30"):
        with pytest.raises(NcmError, match="region"):
            parse_region(bad, (100, 200))
