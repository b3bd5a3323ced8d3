"""Sample data: deterministic, the right shapes and classes, physically sensible labels."""

import numpy as np
import pytest

from ncm_core.data import synth


def test_frames_are_deterministic_by_seed():
    a = synth.sem_frame("NCM622", "formation", (96, 80), info_bar=12, seed=3)
    b = synth.sem_frame("NCM622", "formation", (96, 80), info_bar=12, seed=3)
    c = synth.sem_frame("NCM622", "formation", (96, 80), info_bar=12, seed=4)
    assert a.dtype == np.uint8 and a.shape == (96, 80)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_info_bar_is_dark_band_at_bottom():
    img = synth.sem_frame("NCM333", "pristine", (128, 128), info_bar=20, seed=0)
    bar = img[-20:]
    assert np.median(bar) < 30 and bar.max() > 150  # dark with bright text/scale bar


def test_state_changes_the_image_statistics():
    """Cycled particles have cracks: more dark pixels inside the bright particle area than pristine."""

    def dark_inside(state):
        img = synth.sem_frame("NCM523", state, (256, 256), info_bar=0, seed=1).astype(float)
        return ((img < 45) & (synth.ndimage.uniform_filter(img, 9) > 110)).mean()

    assert dark_inside("cycled100") > 3 * dark_inside("pristine")


def test_mosaic_regions_and_truth():
    m = synth.sem_mosaic((300, 410), grid=(3, 4), seed=2)
    assert m.image.shape == m.truth.shape == (300, 410)
    assert sorted(np.unique(m.truth)) == list(range(12))  # every class once
    for y0, y1, x0, x1, c in m.regions:
        assert (m.truth[y0:y1, x0:x1] == c).all()


@pytest.mark.parametrize("porosity", [0.25, 0.45])
def test_cross_section_porosity_and_labels(porosity):
    s = synth.cross_section(porosity, (300, 600), thickness_px=160, tilt_deg=0.0, seed=1)
    assert s.image.shape == (300, 600, 3)
    assert abs(s.porosity - porosity) < 0.07
    q = list(s.targets.values())
    assert q == sorted(q, reverse=True)  # capacity falls with C-rate


def test_higher_porosity_gives_better_rate_capability():
    low, high = synth.rate_capability(0.2, 40.0), synth.rate_capability(0.5, 40.0)
    assert high["Q_5C"] > low["Q_5C"]
    assert abs(high["Q_0.2C"] - low["Q_0.2C"]) < 10
