"""Tile grids: coverage and the cell -> pixel mapping, including the far edges (property tests)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncm_core.data.tiling import TileGrid, band_mask, extract_tiles, pixel_mask_to_cells
from ncm_core.errors import NcmError


@st.composite
def grids(draw, edge=st.sampled_from(["pad", "drop"])):
    tile = draw(st.integers(1, 40))
    stride = draw(st.integers(1, 50))
    oy, ox = draw(st.integers(0, 10)), draw(st.integers(0, 10))
    h = draw(st.integers(oy + tile, oy + tile + 150))
    w = draw(st.integers(ox + tile, ox + tile + 150))
    return TileGrid((h, w), tile, stride, (oy, ox), draw(edge))


@given(grids(edge=st.just("pad")))
@settings(max_examples=200, deadline=None)
def test_pad_grid_covers_every_pixel_from_the_offset(g):
    h, w = g.image_shape
    cov = np.zeros((h + 2 * g.tile + g.stride, w + 2 * g.tile + g.stride), bool)
    rows, cols = g.shape
    for i in range(rows):
        for j in range(cols):
            y0, y1, x0, x1 = g.cell_rect(i, j)
            cov[y0:y1, x0:x1] = True
    if g.stride <= g.tile:
        assert cov[g.offset[0] : h, g.offset[1] : w].all()
    y0, y1, x0, x1 = g.cell_rect(rows - 1, cols - 1)
    assert y0 < h and x0 < w  # no tile starts outside the image
    if g.stride <= g.tile:
        assert y1 >= h and x1 >= w  # the last row and column reach the far edges
    if rows >= 2 and g.stride <= g.tile:
        assert g.cell_rect(rows - 2, 0)[1] < h  # and no row more than needed
    if cols >= 2 and g.stride <= g.tile:
        assert g.cell_rect(0, cols - 2)[3] < w


@given(grids(edge=st.just("drop")))
@settings(max_examples=200, deadline=None)
def test_drop_grid_keeps_only_whole_tiles_and_misses_none(g):
    h, w = g.image_shape
    rows, cols = g.shape
    y0, y1, x0, x1 = g.cell_rect(rows - 1, cols - 1)
    assert y1 <= h and x1 <= w
    assert y1 + g.stride > h and x1 + g.stride > w  # the next tile would not fit


@given(grids())
@settings(max_examples=150, deadline=None)
def test_extract_tiles_matches_direct_slicing(g):
    h, w = g.image_shape
    img = np.arange(h * w, dtype=np.int64).reshape(h, w)
    rows, cols = g.shape
    r0, c0 = rows // 2, cols // 2
    y0, y1, x0, x1 = g.region(r0, rows, c0, cols)
    tiles = extract_tiles(img[y0 : min(y1, h), x0 : min(x1, w)], g, r0, rows, c0, cols)
    assert tiles.shape == (rows - r0, cols - c0, g.tile, g.tile)
    for i in range(r0, rows):
        for j in range(c0, cols):
            a0, a1, b0, b1 = g.cell_rect(i, j)
            inside = img[a0 : min(a1, h), b0 : min(b1, w)]
            t = tiles[i - r0, j - c0]
            assert np.array_equal(t[: inside.shape[0], : inside.shape[1]], inside)


@given(grids(), st.floats(0.01, 10), st.floats(-100, 100), st.floats(-100, 100))
@settings(max_examples=150, deadline=None)
def test_world_transform_puts_each_value_on_its_tile_centre(g, s, ty, tx):
    scale, trans = g.world_transform(s, (ty, tx))
    rows, cols = g.shape
    for i, j in [(0, 0), (rows - 1, cols - 1), (rows // 2, cols // 3)]:
        y0, y1, x0, x1 = g.cell_rect(i, j)
        centre_world = (ty + s * (y0 + y1 - 1) / 2, tx + s * (x0 + x1 - 1) / 2)  # pixel centres at integers
        cell_world = (trans[0] + scale[0] * i, trans[1] + scale[1] * j)
        assert np.allclose(cell_world, centre_world)


def test_cell_of_pixel_is_the_inverse_of_the_mapping():
    g = TileGrid((1000, 1500), 96)
    assert g.shape == (11, 16)  # 1000 / 96 = 10.4 -> 11 rows with padding
    assert g.cell_of_pixel(0, 0) == (0, 0)
    assert g.cell_of_pixel(999, 1499) == (10, 15)
    assert g.cell_of_pixel(96, 95) == (1, 0)


def test_band_mask_drops_tiles_over_an_info_bar():
    g = TileGrid((544, 512), 64)
    keep = band_mask(g, (-32, None))
    assert keep[:8].all() and not keep[8:].any()  # rows 512..543 are the bar; tile row 8 starts at 512


def test_pixel_mask_at_lower_resolution():
    g = TileGrid((400, 400), 100)
    small = np.zeros((40, 40), bool)
    small[:, :20] = True  # left half is foreground
    keep = pixel_mask_to_cells(g, small)
    assert keep[:, :2].all() and not keep[:, 2:].any()


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(image_shape=(100, 100), tile=0), "tile size"),
        (dict(image_shape=(100, 100), tile=16, stride=0), "stride"),
        (dict(image_shape=(30, 40), tile=64), "smaller than one tile"),
    ],
)
def test_bad_grids(kw, words):
    with pytest.raises(NcmError, match=words):
        TileGrid(**kw)


def test_parse_rows():
    from ncm_core.data.tiling import parse_rows

    assert parse_rows("-32:") == (-32, None) and parse_rows("10:20") == (10, 20) and parse_rows(" ") is None
    with pytest.raises(NcmError, match="START:STOP"):
        parse_rows("32")


def test_foreground_mask_drops_flat_areas_only():
    from ncm_core.data import synth
    from ncm_core.data.tiling import foreground_mask

    img = synth.sem_mosaic((256, 320), seed=1).image
    grid = TileGrid(img.shape, 64)
    assert pixel_mask_to_cells(grid, foreground_mask(img)).all()  # all sample: no tile dropped
    img[:, 192:] = 230  # a bright empty stage on the right
    keep = pixel_mask_to_cells(grid, foreground_mask(img))
    assert keep[:, :3].all() and not keep[:, 3:].any()
