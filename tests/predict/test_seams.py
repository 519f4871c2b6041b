"""The seam score: tile borders that show in a class map raise it; a seamless map scores ~1."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from geoseg.blocks import plan_blocks
from geoseg.predict._seams import SeamScore, border_lines
from geoseg.schema import IGNORE


def blocky(shape: tuple[int, int], cell: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 6, (shape[0] // cell + 1, shape[1] // cell + 1)).astype(np.uint8)
    return np.kron(base, np.ones((cell, cell), np.uint8))[: shape[0], : shape[1]]


def score(classes: np.ndarray) -> dict[str, float | int | None]:
    plan = plan_blocks(classes.shape, tile_size=64, overlap=16, block_size=96)  # type: ignore[arg-type]
    s = SeamScore(plan)
    for _, rect in plan.iter_rects():
        win = Window(rect.col, rect.row, rect.width, rect.height)
        s.add(win, classes[rect.row : rect.row + rect.height, rect.col : rect.col + rect.width])
    return s.summary()


def test_border_lines_are_tile_starts_ends_and_overlap_middles() -> None:
    plan = plan_blocks((200, 200), tile_size=64, overlap=16, block_size=96)
    lines = np.flatnonzero(border_lines(plan.cols))
    starts = plan.cols.starts
    assert set(starts[1:]) <= set(lines)
    assert {s + 64 for s in starts if s + 64 < 200} <= set(lines)
    assert 0 not in lines and 200 not in lines


def test_a_seamless_map_scores_about_one_and_a_seamed_one_much_more() -> None:
    clean = blocky((640, 640), 13, seed=1)  # object edges every 13 px, unrelated to the tiles
    s_clean = score(clean)
    assert s_clean["ratio"] is not None and 0.5 < s_clean["ratio"] < 2.0
    # a stitching error: each tile region's classes shifted by its index along the row
    plan = plan_blocks((640, 640), tile_size=64, overlap=16, block_size=96)
    region = np.cumsum(border_lines(plan.cols)[:640])
    seamed = ((clean.astype(int) + region[None, :]) % 6).astype(np.uint8)
    s_seamed = score(seamed)
    assert s_seamed["ratio"] is not None and s_seamed["ratio"] > 4 * s_clean["ratio"]


def test_nodata_pairs_are_not_counted_and_a_uniform_map_has_no_ratio() -> None:
    uniform = np.zeros((128, 128), np.uint8)
    assert score(uniform)["ratio"] is None
    empty = np.full((128, 128), IGNORE, np.uint8)
    s = score(empty)
    assert s["border_pairs"] == 0 and s["interior_pairs"] == 0 and s["ratio"] is None
