"""geoseg.vectorize._regularize: rectilinear outlines and territories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine

from geoseg.vectorize._regularize import clip_to_territory, regularize_polygon
from tests.vectorize.helpers import raster_pieces


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
    return max((p for v, p in raster_pieces(a) if v == 1), key=lambda p: p.area)


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
