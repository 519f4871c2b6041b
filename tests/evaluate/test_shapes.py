"""Outline quality: C-IoU, N-ratio, PoLiS, and gaps and overlaps between neighbours."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import Polygon, box

from geoseg.evaluate.objects import ObjectMetrics, match_objects
from geoseg.evaluate.shapes import neighbour_gaps, pair_shape, polis, vertex_count


def test_polis_of_a_shifted_square_by_hand() -> None:
    # A's left corners are 1 off B, B's right corners 1 off A: (0 + 0 + 1 + 1) / 4 each way
    assert polis(box(0, 0, 10, 10), box(1, 0, 11, 10)) == pytest.approx(0.5)
    assert polis(box(0, 0, 10, 10), box(0, 0, 10, 10)) == 0.0


def test_c_iou_punishes_a_staircase_that_a_plain_iou_forgives() -> None:
    truth = box(0, 0, 10, 10)
    stair = Polygon([(0, 0), (10, 0), (10, 9), (9, 9), (9, 10), (0, 10)])  # one notch
    iou = stair.area / truth.area
    c_iou, n_ratio, _ = pair_shape(stair, truth, iou)
    assert vertex_count(stair) == 6 and n_ratio == pytest.approx(1.5)
    assert c_iou == pytest.approx(iou * (1 - 2 / 10))
    assert pair_shape(truth, truth, 1.0)[:2] == (1.0, 1.0)


@pytest.mark.parametrize(
    ("b", "gap", "overlap"),
    [
        (box(10, 0, 20, 10), 0.0, 0.0),  # a shared wall
        (box(10, 3, 20, 13), 0.0, 0.0),  # a shared wall, staggered
        (box(10.2, 0, 20.2, 10), 2.0, 0.0),  # a 0.2 m sliver along a 10 m wall
        (box(9.5, 0, 19.5, 10), 0.0, 5.0),  # 0.5 m of overlap
        (box(15, 0, 25, 10), 0.0, 0.0),  # 5 m apart: not neighbours
    ],
)
def test_gaps_and_overlaps_between_neighbours(b: Polygon, gap: float, overlap: float) -> None:
    g, o = neighbour_gaps([box(0, 0, 10, 10), b], tolerance=1.0)
    assert g == pytest.approx(gap, abs=1e-9) and o == pytest.approx(overlap, abs=1e-9)


def test_match_objects_reports_outline_quality_and_pools_it() -> None:
    truth = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10), box(20, 0, 30, 10)], crs=32633)
    prop = gpd.GeoDataFrame(
        geometry=[box(0, 0, 10, 10), shapely.affinity.translate(box(20, 0, 30, 10), 1, 0)],
        crs=32633,
    )
    m = match_objects(prop, truth)
    assert m.tp == 2
    q = m.shapes
    assert q.c_iou == pytest.approx((1.0 + 9 / 11) / 2)
    assert q.n_ratio == 1.0 and q.polis == pytest.approx(0.25)
    d = m.to_dict()
    assert d["c_iou"] == pytest.approx(q.c_iou) and d["gap_area"] == 0.0
    assert "C-IoU" in m.format_table() and "PoLiS" in m.format_table()
    both = ObjectMetrics.combine([m, m])
    assert both.shapes.c_iou == pytest.approx(q.c_iou) and both.tp == 4
