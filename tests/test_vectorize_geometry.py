"""Pure geometry of geoseg.vectorize: nodes, arc-wise simplification, regularization,
border merging and centre-line pruning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geoseg.vectorize._centerlines import prune_spurs
from geoseg.vectorize._clean import canonical_polygon, node_mask
from geoseg.vectorize._regularize import clip_to_territory, regularize_polygon


def _pieces(a: np.ndarray) -> list[tuple[int, shapely.Polygon]]:
    return [
        (int(v), shapely.geometry.shape(g))
        for g, v in rasterio.features.shapes(
            a.astype(np.int32), connectivity=4, transform=Affine.identity()
        )
    ]


def _nodes(a: np.ndarray) -> np.ndarray:
    pad = np.pad(a.astype(np.int16), 1, constant_values=-1)
    nm = node_mask(pad)
    i, j = np.nonzero(nm)
    return np.sort(i.astype(np.int64) * (a.shape[1] + 1) + j)


def test_node_mask_cases() -> None:
    a = np.array([[1, 1, 2], [1, 3, 2], [4, 4, 2]])
    nm = node_mask(np.pad(a, 1, constant_values=-1))
    # Corner (1, 1): values 1,1 / 1,3 -> a simple turn, no node.
    assert not nm[1, 1]
    # Corner (1, 2): 1,2 / 3,2 -> three values meet.
    assert nm[1, 2]
    # Corner (2, 1): 1,3 / 4,4 -> three values.
    assert nm[2, 1]
    # A diagonal touch is a node.
    d = np.array([[1, 2], [2, 1]])
    assert node_mask(np.pad(d, 1, constant_values=-1))[1, 1]


def _shared_length(x: list[shapely.Polygon], y: list[shapely.Polygon]) -> float:
    return sum(shapely.intersection(p.boundary, q.boundary).length for p in x for q in y)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), tol=st.sampled_from([0.0, 0.7, 1.5, 3.0]))
def test_arcs_stay_shared_after_simplification(seed: int, tol: float) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, size=(6, 7)).repeat(4, axis=0).repeat(4, axis=1)
    a[rng.random(a.shape) < 0.05] = 3
    nodes = _nodes(a)
    stride = a.shape[1] + 1
    cleaned = [
        (v, canonical_polygon(p, nodes, stride=stride, tolerance=tol)) for v, p in _pieces(a)
    ]
    polys = [q for _, ps in cleaned for q in ps]
    assert all(q.is_valid for q in polys)
    # Arcs are shared, so the simplified polygons still tile the raster. Only when the
    # tolerance nears the object size (4 px here) can arcs cross and leave small gaps.
    total = sum(q.area for q in polys)
    union = shapely.union_all(polys).area
    if tol <= 0.7:
        assert union == pytest.approx(a.size, abs=1e-6)
        assert total == pytest.approx(union, abs=1e-6)
    else:
        assert a.size - union <= 0.05 * a.size
        assert total - union <= 0.01 * a.size
    if tol == 0:
        assert total == pytest.approx(union, abs=1e-9)
        assert union == pytest.approx(a.size)
        for (_, ps), (_, p) in zip(cleaned, _pieces(a), strict=False):
            assert shapely.equals(shapely.union_all(ps), p)


def test_canonical_polygon_is_independent_of_vertex_order() -> None:
    a = np.zeros((30, 30), np.int32)
    a[5:25, 5:12] = 1
    a[5:12, 5:25] = 1
    a[12:20, 12:20] = 2
    nodes = _nodes(a)
    poly = next(p for v, p in _pieces(a) if v == 1)
    rotated = shapely.Polygon(np.roll(np.asarray(poly.exterior.coords)[:-1], 3, axis=0))
    reversed_ = shapely.Polygon(np.asarray(poly.exterior.coords)[::-1])
    outs = [
        shapely.normalize(canonical_polygon(g, nodes, stride=31, tolerance=1.5)[0])
        for g in (poly, rotated, reversed_)
    ]
    assert outs[0].equals_exact(outs[1], 0) and outs[0].equals_exact(outs[2], 0)


def test_staircase_simplifies_to_a_straight_edge() -> None:
    truth = shapely.Polygon([(2, 2), (40, 12), (40, 40), (2, 40)])
    a = rasterio.features.rasterize([(truth, 1)], out_shape=(44, 44), transform=Affine.identity())
    poly = next(p for v, p in _pieces(a) if v == 1)
    out = canonical_polygon(poly, _nodes(a), stride=45, tolerance=1.0)
    assert len(out) == 1
    assert len(out[0].exterior.coords) < len(poly.exterior.coords) / 3
    assert shapely.hausdorff_distance(out[0], truth) < 1.5


def _angles(poly: shapely.Polygon) -> np.ndarray:
    xy = np.asarray(poly.exterior.coords)[:-1]
    v1 = np.roll(xy, 1, axis=0) - xy
    v2 = np.roll(xy, -1, axis=0) - xy
    cos = (v1 * v2).sum(1) / np.hypot(*v1.T) / np.hypot(*v2.T)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _staircase(truth: shapely.Polygon, size: int = 160) -> shapely.Polygon:
    a = rasterio.features.rasterize(
        [(truth, 1)], out_shape=(size, size), transform=Affine.identity(), all_touched=False
    )
    return max((p for v, p in _pieces(a) if v == 1), key=lambda p: p.area)


L_SHAPE = shapely.Polygon([(0, 0), (60, 0), (60, 25), (25, 25), (25, 50), (0, 50)])


@pytest.mark.parametrize(
    ("shape", "angle"),
    [
        (shapely.box(0, 0, 70, 35), 0),
        (shapely.box(0, 0, 70, 35), 17),
        (shapely.box(0, 0, 70, 35), 33),
        (shapely.box(0, 0, 50, 50), 45),
        (L_SHAPE, 12),
        (L_SHAPE, 30),
        (L_SHAPE, 61),
    ],
)
def test_regularize_recovers_rotated_shapes(shape: shapely.Polygon, angle: float) -> None:
    truth = shapely.affinity.translate(
        shapely.affinity.rotate(shape, angle, origin="centroid"),
        80 - shape.centroid.x,
        80 - shape.centroid.y,
    )
    stair = _staircase(truth)
    if angle % 90:
        assert shapely.hausdorff_distance(stair, truth) > 0.4  # really a staircase
    reg = regularize_polygon(stair)
    assert reg is not None and reg.is_valid
    assert shapely.hausdorff_distance(reg, truth) < 1.0
    assert len(reg.exterior.coords) - 1 == len(shape.exterior.coords) - 1
    ang = _angles(reg)
    assert np.all(np.abs(ang - 90) < 0.5)
    # Walls run along the true orientation (the raw estimate is refined from the walls).
    d = np.diff(np.asarray(reg.exterior.coords), axis=0)
    longest = d[np.argmax(np.hypot(*d.T))]
    theta = math.degrees(math.atan2(longest[1], longest[0])) % 90
    assert min(abs(theta - angle % 90), 90 - abs(theta - angle % 90)) < 1.0


def test_regularize_keeps_a_true_diagonal() -> None:
    truth = shapely.Polygon([(0, 0), (60, 0), (60, 30), (30, 60), (0, 60)])
    truth = shapely.affinity.translate(truth, 40, 40)
    reg = regularize_polygon(_staircase(truth))
    assert reg is not None
    assert shapely.hausdorff_distance(reg, truth) < 1.5
    ang = np.sort(_angles(reg))
    assert np.all(np.abs(ang[:3] - 90) < 1.0)
    assert np.all(np.abs(ang[3:] - 135) < 3.0)


def test_clip_to_territory_prevents_overlap() -> None:
    a = shapely.box(0, 0, 10, 10)
    b = shapely.box(11, 0, 21, 10)  # a 1-pixel gap
    grow_a = shapely.box(-1, -1, 11.8, 11)  # regularized outlines that overreach
    grow_b = shapely.box(10.2, -1, 22, 11)
    ca = shapely.union_all(clip_to_territory(grow_a, a, [b], 2.0))
    cb = shapely.union_all(clip_to_territory(grow_b, b, [a], 2.0))
    assert shapely.intersection(ca, cb).area == 0
    assert ca.contains(a) and cb.contains(b)
    # With no neighbour near, the outline is kept as it is.
    assert clip_to_territory(grow_a, a, [shapely.box(100, 100, 110, 110)], 2.0) == [grow_a]


def test_prune_spurs_drops_short_dead_ends() -> None:
    main = [shapely.LineString([(0, 0), (50, 0)]), shapely.LineString([(50, 0), (100, 0)])]
    spur = shapely.LineString([(50, 0), (50, 4)])
    branch = shapely.LineString([(50, 0), (50, -60)])
    out = prune_spurs([*main, spur, branch], 10)
    merged = shapely.union_all(out)
    assert merged.length == pytest.approx(160)
    assert not merged.intersects(shapely.Point(50, 3))
