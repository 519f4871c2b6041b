"""Pure blending tests: weight windows, exact overlap-add, the block plan (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.blend import (
    PROB_SCALE,
    WEIGHT_FLOOR,
    Accumulator,
    Edges,
    decode,
    quantize_probs,
    quantize_weights,
    seam_sums,
    taper,
    tile_edges,
    weight_bits,
    weight_window,
)
from geoseg.blocks import BlockPlan, Rect, plan_blocks
from geoseg.schema import IGNORE

KINDS = ("hann", "spline", "mean")


def blend_like_the_engine(
    plan: BlockPlan,
    probs_for: Callable[[Rect], np.ndarray],
    *,
    kind: str,
    overlap: int,
    num_classes: int,
) -> tuple[np.ndarray, int]:
    """Blend block by block exactly as geoseg.predict does: own tiles, then seams from pieces.

    Returns the final sums of every pixel and the number of tiles computed.
    """
    bits = weight_bits(plan.max_cover)
    h, w = plan.shape
    out = np.full((num_classes + 1, h, w), -1, dtype=np.int64)
    pieces: dict[tuple[int, int], list] = defaultdict(list)
    computed = 0
    for b in plan.blocks:
        acc = Accumulator(plan.extent_rect(b), num_classes)
        for t in plan.tiles(b):
            wq = quantize_weights(
                weight_window(
                    (t.height, t.width), kind=kind, overlap=overlap, edges=tile_edges(t, plan.shape)
                ),
                bits,
            )
            acc.add(quantize_probs(probs_for(t)), wq, t)
            computed += 1
        br = plan.block_rect(b)
        out[(slice(None), *br.slices(Rect(0, 0, h, w)))] = acc.sums.numpy()[
            (slice(None), *br.slices(acc.rect))
        ]
        pieces[b].extend((r, acc.take(r).numpy()) for r in plan.seam_rects(b))
        for d in plan.dependents(b):
            r = plan.piece_rect(b, d)
            if not r.empty:
                pieces[d].append((r, acc.take(r).numpy()))
    for b in plan.blocks:
        for rect, sums in seam_sums(plan, b, pieces[b]):
            out[(slice(None), *rect.slices(Rect(0, 0, h, w)))] = sums
    return out, computed


def blend_in_one_piece(
    plan: BlockPlan,
    probs_for: Callable[[Rect], np.ndarray],
    *,
    kind: str,
    overlap: int,
    num_classes: int,
) -> np.ndarray:
    """The reference: every tile of the global plan into one scene-sized accumulator."""
    bits = weight_bits(plan.max_cover)
    acc = Accumulator(Rect(0, 0, *plan.shape), num_classes)
    th, tw = plan.tile_size
    for r in plan.rows.starts:
        for c in plan.cols.starts:
            t = Rect(r, c, th, tw)
            wq = quantize_weights(
                weight_window(
                    (th, tw), kind=kind, overlap=overlap, edges=tile_edges(t, plan.shape)
                ),
                bits,
            )
            acc.add(quantize_probs(probs_for(t)), wq, t)
    return acc.sums.numpy().astype(np.int64)


# -- windows --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_taper_rises_within_floor_and_one(kind: str) -> None:
    r = taper(32, kind)  # type: ignore[arg-type]
    assert r.shape == (32,)
    assert np.all(np.diff(r) >= 0)
    assert r.min() >= WEIGHT_FLOOR and r.max() <= 1.0
    if kind != "mean":
        assert r[0] < 0.01 and r[-1] > 0.99
        # symmetric ramps add up to one (partition of unity) over the overlap
        np.testing.assert_allclose(r + r[::-1], 1.0, atol=WEIGHT_FLOOR)
    assert taper(0, kind).size == 0  # type: ignore[arg-type]


def test_taper_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown blend window"):
        taper(4, "gauss")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_window_does_not_taper_on_scene_edges(kind: str) -> None:
    inner = weight_window((40, 30), kind=kind, overlap=10)  # type: ignore[arg-type]
    corner = weight_window(
        (40, 30),
        kind=kind,
        overlap=10,
        edges=Edges(top=True, left=True),  # type: ignore[arg-type]
    )
    everywhere = weight_window(
        (40, 30),
        kind=kind,
        overlap=10,
        edges=Edges(True, True, True, True),  # type: ignore[arg-type]
    )
    assert np.all(everywhere == 1.0)
    assert np.all(corner[0, :20] == 1.0) and np.all(corner[:30, 0] == 1.0)
    assert inner.min() >= WEIGHT_FLOOR**2 and inner.max() == 1.0
    if kind != "mean":
        assert inner[0, 0] < 0.01 and corner[-1, -1] < 0.01


def test_tile_edges() -> None:
    assert tile_edges(Rect(0, 0, 10, 10), (30, 30)) == Edges(True, False, True, False)
    assert tile_edges(Rect(20, 5, 10, 10), (30, 30)) == Edges(False, True, False, False)
    assert tile_edges(Rect(0, 0, 64, 64), (30, 40)) == Edges(True, True, True, True)


def test_weight_bits_bounds_int32_and_rejects_extreme_overlap() -> None:
    for cover in (1, 2, 4, 9, 64, 1024):
        bits = weight_bits(cover)
        assert cover * (1 << bits) * PROB_SCALE < 2**31
    with pytest.raises(ValueError, match="overlap"):
        weight_bits(2**12)


# -- exact accumulation ----------------------------------------------------------------------


def test_quantize_probs_rounds_half_to_even_and_clips() -> None:
    p = np.array([0.0, 1.0, 1.5, -0.2, 0.5], dtype=np.float32)
    q = quantize_probs(p)
    assert q.dtype == np.uint16
    assert q.tolist() == [0, 65535, 65535, 0, int(np.rint(np.float32(0.5) * 65535))]


def test_decode_invalid_pixels_are_nodata_and_ties_go_low() -> None:
    sums = np.zeros((3, 2, 2), dtype=np.int32)
    sums[0] = 10 * PROB_SCALE // 2
    sums[1] = 10 * PROB_SCALE // 2
    sums[2] = 10
    sums[:, 1, 1] = 0  # no tile covered this pixel
    valid = np.array([[True, False], [True, True]])
    classes, probs = decode(sums, valid, probabilities=True)
    assert classes.tolist() == [[0, IGNORE], [0, IGNORE]]
    assert probs is not None
    assert probs[:, 0, 0].tolist() == [128, 128]  # round(127.5) -> 128 in integer arithmetic
    assert probs[:, 0, 1].tolist() == [0, 0] and probs[:, 1, 1].tolist() == [0, 0]


def test_accumulator_clips_tiles_to_its_rectangle() -> None:
    acc = Accumulator(Rect(10, 10, 5, 5), 2)
    probs = np.full((2, 8, 8), 100, dtype=np.uint16)
    acc.add(probs, np.full((8, 8), 3, dtype=np.int32), Rect(6, 12, 8, 8))
    assert acc.sums[2].sum() == 3 * 4 * 3  # rows 10..13, cols 12..14
    with pytest.raises(ValueError, match="not inside"):
        acc.take(Rect(9, 10, 2, 2))


# -- the plan ----------------------------------------------------------------------------------

plans = st.tuples(
    st.integers(1, 260),  # height
    st.integers(1, 260),  # width
    st.integers(16, 96),  # tile size
    st.floats(0.0, 0.6),  # overlap fraction of the tile
    st.integers(1, 300),  # block size
).map(lambda t: (t[0], t[1], t[2], int(t[2] * t[3]), t[4]))


@given(plans)
@settings(max_examples=60, deadline=None)
def test_plan_owns_every_tile_once_and_seams_hold_all_foreign_coverage(params) -> None:
    h, w, size, overlap, block = params
    plan = plan_blocks((h, w), tile_size=size, overlap=overlap, block_size=block)
    owned = [t for b in plan.blocks for t in plan.tiles(b)]
    assert len(owned) == len(set(owned)) == plan.n_tiles
    owner = np.full((h, w), -1)
    coverage = np.zeros((h, w), dtype=int)
    for i, b in enumerate(plan.blocks):
        br = plan.block_rect(b)
        sl = br.slices(Rect(0, 0, h, w))
        assert np.all(owner[sl] == -1)
        owner[sl] = i
        assert br.intersect(plan.extent_rect(b)) == br  # own tiles cover the block
    assert np.all(owner >= 0)  # blocks partition the scene
    foreign = np.zeros((h, w), dtype=bool)
    for i, b in enumerate(plan.blocks):
        for t in plan.tiles(b):
            part = t.intersect(Rect(0, 0, h, w))
            sl = part.slices(Rect(0, 0, h, w))
            coverage[sl] += 1
            foreign[sl] |= owner[sl] != i
    assert np.all(coverage >= 1) and coverage.max() <= plan.max_cover
    seam = np.zeros((h, w), dtype=bool)
    for b in plan.blocks:
        for r in plan.seam_rects(b):
            seam[r.slices(Rect(0, 0, h, w))] = True
        for d in plan.dependents(b):
            assert b in plan.contributors(d)
    assert np.array_equal(foreign & ~seam, np.zeros_like(seam))


probs_cases = st.tuples(plans, st.sampled_from(KINDS), st.integers(2, 5), st.integers(0, 2**16))


@given(probs_cases)
@settings(max_examples=40, deadline=None)
def test_constant_prediction_stays_exactly_constant(case) -> None:
    (h, w, size, overlap, block), kind, ncls, seed = case
    p = np.random.default_rng(seed).dirichlet(np.ones(ncls)).astype(np.float32)
    plan = plan_blocks((h, w), tile_size=size, overlap=overlap, block_size=block)

    def const(t: Rect) -> np.ndarray:
        return np.broadcast_to(p[:, None, None], (ncls, t.height, t.width))

    sums, _ = blend_like_the_engine(plan, const, kind=kind, overlap=overlap, num_classes=ncls)
    q = quantize_probs(p).astype(np.int64)
    # sum(W * P) == P * sum(W) at every pixel, corners and edges included: exact.
    assert np.array_equal(sums[:ncls], q[:, None, None] * sums[ncls][None])
    classes, probs = decode(sums.astype(np.int32), np.ones((h, w), bool), probabilities=True)
    assert np.all(classes == classes[0, 0])
    assert probs is not None
    assert np.array_equal(probs, np.broadcast_to(probs[:, :1, :1], probs.shape))
    np.testing.assert_allclose(probs[:, 0, 0] / 255.0, p, atol=0.5 / 255 + 1e-6)


@given(probs_cases, st.integers(1, 300))
@settings(max_examples=40, deadline=None)
def test_blocks_do_not_change_the_result(case, other_block) -> None:
    (h, w, size, overlap, block), kind, ncls, seed = case

    def varied(t: Rect) -> np.ndarray:
        rng = np.random.default_rng([seed, t.row, t.col])
        x = rng.random((ncls, t.height, t.width)).astype(np.float32)
        return x / x.sum(axis=0)

    ref = None
    for bs in (block, other_block):
        plan = plan_blocks((h, w), tile_size=size, overlap=overlap, block_size=bs)
        sums, computed = blend_like_the_engine(
            plan, varied, kind=kind, overlap=overlap, num_classes=ncls
        )
        assert computed == plan.n_tiles  # no tile computed twice
        one = blend_in_one_piece(plan, varied, kind=kind, overlap=overlap, num_classes=ncls)
        assert np.array_equal(sums, one)
        if ref is None:
            ref = sums
        assert np.array_equal(sums, ref)


def test_plan_block_size_rounds_to_whole_strides_shared_evenly() -> None:
    plan = plan_blocks((6000, 6000), tile_size=512, overlap=128, block_size=2048)
    # 16 tile starts, 5 strides per block: 3 blocks of 5, 6 and 5 tiles, not a fourth
    # block of one edge tile that would be 400 of its 512 rows seam
    assert plan.rows.cuts == (0, 1920, 4224)
    assert [len(plan.rows.owned(j)) for j in range(3)] == [5, 6, 5]
    assert plan.max_cover == 9
    assert plan.seam_rects((1, 1)) == [
        Rect(1920, 1920, 128, 2304),
        Rect(2048, 1920, 2176, 128),
    ]
