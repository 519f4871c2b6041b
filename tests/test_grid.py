from __future__ import annotations

import itertools

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.grid import GeoBox, axis_starts, block_rows, block_windows, tile_windows


def test_axis_starts_shift_last_back_inside() -> None:
    assert axis_starts(1000, 512, 64) == [0, 448, 488]
    assert axis_starts(512, 512, 64) == [0]
    assert axis_starts(300, 512, 64) == [0]
    assert axis_starts(960, 512, 64) == [0, 448]


@pytest.mark.parametrize("bad", [(0, 10, 0), (10, 0, 0), (10, 5, 5), (10, 5, -1)])
def test_axis_starts_rejects_bad_values(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        axis_starts(*bad)


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    size=st.integers(16, 300),
    overlap_frac=st.floats(0, 0.9),
)
def test_tiles_cover_every_pixel_and_stay_inside(
    height: int, width: int, size: int, overlap_frac: float
) -> None:
    overlap = min(size - 1, int(size * overlap_frac))
    cover = np.zeros((height, width), dtype=np.int32)
    wins = list(tile_windows((height, width), size=size, overlap=overlap))
    for w in wins:
        assert (w.width, w.height) == (size, size)
        r0, c0 = int(w.row_off), int(w.col_off)
        # inside the grid unless the grid is smaller than a tile along that axis
        assert r0 >= 0 and c0 >= 0
        assert r0 + size <= height or r0 == 0
        assert c0 + size <= width or c0 == 0
        cover[r0 : r0 + size, c0 : c0 + size] += 1
    assert cover.min() >= 1
    # neighbours overlap by at least `overlap` (last ones may overlap more)
    rows = sorted({int(w.row_off) for w in wins})
    for a, b in itertools.pairwise(rows):
        assert size - (b - a) >= overlap


def test_geobox_window_transform_offsets_by_window() -> None:
    gb = GeoBox(100, 80, Affine(0.5, 0, 1000, 0, -0.5, 2000), None)
    w = Window(10, 20, 30, 30)
    assert gb.window_transform(w) == Affine(0.5, 0, 1005, 0, -0.5, 1990)
    assert gb.bounds == (1000, 1960, 1050, 2000)
    assert gb.window(w).shape == (30, 30)


@given(h=st.integers(1, 90), w=st.integers(1, 90), block=st.integers(1, 40))
@settings(max_examples=60, deadline=None)
def test_block_windows_cover_each_pixel_once(h: int, w: int, block: int) -> None:
    count = np.zeros((h, w), int)
    for win in block_windows(h, w, block):
        assert 0 < win.width <= block and 0 < win.height <= block
        count[win.row_off : win.row_off + win.height, win.col_off : win.col_off + win.width] += 1
    assert (count == 1).all()
    rows = block_rows(h, w, block)
    assert [x for row in rows for x in row] == list(block_windows(h, w, block))
    assert len({win.row_off for win in rows[0]}) == 1


def test_block_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="block_size=0"):
        block_rows(10, 10, 0)
