"""Regularizing attached buildings together: one common wall, no gap, no overlap."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize, shapes
from shapely.geometry import Polygon, shape

from geoseg.vectorize._walls import regularize_group, straight_wall

EXTENT = shapely.box(0, 0, 400, 400)


def _units(angle_deg: float, widths: list[float], depth: float = 60.0) -> list[Polygon]:
    """True row-house footprints (pixel units), rotated about the scene centre."""
    x = 100.0
    out = []
    for w in widths:
        out.append(
            shapely.affinity.rotate(
                shapely.box(x, 170, x + w, 170 + depth), angle_deg, origin=(200, 200)
            )
        )
        x += w
    return out


def _pixel_parts(truth: list[Polygon]) -> list[Polygon]:
    """The units as a class map would give them once split: pixel outlines that tile."""
    labels = rasterize(
        [(g, i + 1) for i, g in enumerate(truth)], out_shape=(400, 400), dtype="int32"
    )
    parts: list[Polygon] = [Polygon()] * len(truth)
    for geom, value in shapes(labels, mask=labels > 0, connectivity=4):
        parts[int(value) - 1] = shape(geom)
    return parts


def _corner_turns(poly: Polygon) -> np.ndarray:
    d = np.diff(np.asarray(poly.exterior.coords), axis=0)
    ang = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    return np.abs((np.diff(np.r_[ang, ang[:1]]) + 90.0) % 180.0 - 90.0)


@pytest.mark.parametrize("angle", [0.0, 17.0, 33.0])
def test_regularized_neighbours_share_their_walls(angle: float) -> None:
    truth = _units(angle, [36.0, 41.0, 29.0, 52.0])
    parts = _pixel_parts(truth)
    out, regularized = regularize_group(parts, EXTENT)
    assert regularized and len(out) == len(parts)
    union = shapely.union_all(out)
    for a, b in itertools.combinations(out, 2):
        assert a.intersection(b).area < 1e-6  # no overlap
    # no gap: the parts tile their union, which is one polygon without holes
    assert sum(p.area for p in out) == pytest.approx(union.area, abs=1e-6)
    assert isinstance(union, Polygon) and not union.interiors
    for k in range(3):  # neighbours share one straight wall of the full depth
        wall = out[k].intersection(out[k + 1])
        assert wall.length == pytest.approx(60.0, abs=1.5)
        assert len(shapely.line_merge(wall).coords) == 2
    for p, t in zip(out, truth, strict=True):
        assert len(p.exterior.coords) - 1 == 4  # rectangles
        assert np.all(np.abs(_corner_turns(p) - 90.0) < 1e-6)  # right angles
        assert p.intersection(t).area / p.union(t).area > 0.97


def test_an_l_shaped_terrace_keeps_its_walls() -> None:
    a = shapely.box(100, 100, 160, 150)
    b = shapely.box(160, 100, 200, 150)
    c = shapely.box(160, 150, 200, 220)  # the corner house turns the terrace
    parts = _pixel_parts([a, b, c])
    out, regularized = regularize_group(parts, EXTENT)
    assert regularized
    for p, q in itertools.combinations(out, 2):
        assert p.intersection(q).area < 1e-6
    assert shapely.union_all(out).area == pytest.approx(sum(p.area for p in out), abs=1e-6)
    assert out[1].intersection(out[2]).length == pytest.approx(40.0, abs=1.0)


def test_parts_that_do_not_touch_keep_their_pixel_outlines() -> None:
    parts = [shapely.box(0, 0, 10, 10), shapely.box(20, 0, 30, 10)]
    out, regularized = regularize_group(parts, EXTENT)
    assert not regularized and out == parts


def test_a_staircase_wall_becomes_one_straight_segment() -> None:
    # a wall tilted 3 degrees off the group's axis, as pixels draw it
    steps = [(0.0, float(y)) if y % 20 < 10 else (1.0, float(y)) for y in range(0, 60)]
    wall = straight_wall(shapely.LineString(steps), angle=math.radians(90.0))
    assert wall is not None
    d = np.diff(np.asarray(wall.coords), axis=0)[0]
    assert abs(d[0]) < 1e-9  # snapped onto the axis
    assert wall.length == pytest.approx(59.0 + 5.0, abs=1e-6)
    assert straight_wall(shapely.LineString([(0, 0), (1, 0)]), angle=0.0) is None
