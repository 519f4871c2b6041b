"""Road network metrics: hand-derived APLS values, the graph, and CosmiQ's reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from shapely.geometry import LineString, MultiLineString, Point, Polygon

from geoseg.errors import InputError
from geoseg.evaluate.roads import (
    MIN_PATH_LENGTH_M,
    RoadGraph,
    apls_direction,
    road_graph,
    score_roads,
)
from tests.conftest import real_data
from tests.evaluate import apls_reference

# A "T": A(0,0) - B(100,0) - C(200,0) and B - D(100,100), three 100 m edges.
T = [
    LineString([(0, 0), (100, 0)]),
    LineString([(100, 0), (200, 0)]),
    LineString([(100, 0), (100, 100)]),
]
NO_MIDPOINTS = 1000.0  # a control point spacing longer than any edge: nodes only


def test_identical_networks_score_one():
    m = score_roads(T, T)
    assert m.apls == 1.0
    assert m.truth_to_pred.score == m.pred_to_truth.score == 1.0
    # 4 nodes + one midpoint per 100 m edge (ceil(100/50) - 1 = 1): 7 control points
    assert m.truth_to_pred.control_points == m.truth_to_pred.snapped == 7
    assert m.truth_to_pred.routes == 7 * 6  # every ordered pair; none shorter than 10 m
    assert (m.precision, m.recall, m.f1) == (1.0, 1.0, 1.0)
    assert m.truth_length_m == m.pred_length_m == 300.0


def test_a_missing_edge_by_hand():
    # The prediction lacks B-C. Truth onto prediction: A, B, D snap onto themselves, C (100 m
    # from the prediction) has no image. Routes from A: A-B 0, A-C 1, A-D 0; from B: 0, 1, 0;
    # from D: 0, 0, 1; from C: all three count 1. 6 of 12 -> 0.5. Prediction onto truth: the
    # prediction is one edge A-D (B is a degree-2 joint), its two routes exist in the truth
    # at the same length -> 1.0. APLS = 2 * 0.5 * 1 / 1.5 = 2/3.
    m = score_roads(T[::2], T, spacing=NO_MIDPOINTS)
    assert m.truth_to_pred.score == 0.5 and m.truth_to_pred.routes == 12
    assert m.truth_to_pred.snapped == 3 and m.truth_to_pred.control_points == 4
    assert m.pred_to_truth.score == 1.0 and m.pred_to_truth.routes == 2
    assert m.apls == pytest.approx(2 / 3, abs=1e-12)
    # length: all of the prediction is on the truth; the truth is covered for its 200 m
    # plus the 2 m that the buffer reaches into B-C
    assert m.precision == 1.0
    assert m.recall == pytest.approx(202 / 300, abs=1e-9)


def test_a_detour_by_hand():
    # Truth A-B straight (100 m), prediction A-(50,30)-B: 2 * sqrt(50² + 30²) m.
    detour = 2 * math.hypot(50, 30)
    m = score_roads(
        [LineString([(0, 0), (50, 30), (100, 0)])],
        [LineString([(0, 0), (100, 0)])],
        spacing=NO_MIDPOINTS,
    )
    t2p = 1 - (detour - 100) / 100  # normalised by the source's route length
    p2t = 1 - (detour - 100) / detour
    assert m.truth_to_pred.score == pytest.approx(t2p, abs=1e-12)
    assert m.pred_to_truth.score == pytest.approx(p2t, abs=1e-12)
    assert m.apls == pytest.approx(2 * t2p * p2t / (t2p + p2t), abs=1e-12)


def test_empty_prediction_scores_zero_and_empty_truth_is_undefined():
    m = score_roads([], T)
    assert m.apls == 0.0 and m.truth_to_pred.score == 0.0 and m.truth_to_pred.snapped == 0
    assert m.precision == 0.0 and m.recall == 0.0 and m.f1 == 0.0
    m = score_roads(T, [])
    assert math.isnan(m.apls) and math.isnan(m.recall)
    assert m.to_dict()["apls"] is None
    assert math.isnan(score_roads([], []).apls)


def test_networks_far_apart_match_nothing():
    far = [LineString([(1000, 1000), (1200, 1000)])]
    m = score_roads(far, T)
    assert m.precision == 0.0 and m.recall == 0.0 and m.apls == 0.0


def test_short_routes_are_not_scored_but_a_lost_start_loses_them_all():
    # A 5 m spur at B(100,0) of a 200 m road A-C, missing from the prediction (A-C).
    truth = [*T[:2], LineString([(100, 0), (100, 5)])]
    pred = [LineString([(0, 0), (200, 0)])]
    m = score_roads(pred, truth, spacing=NO_MIDPOINTS, snap=4.0)
    # Truth control points A, B, C, S(100,5); S is 5 m from the prediction: lost.
    # From A: A-B 0, A-C 0, A-S 1 (S has no image); from B: B-A 0, B-C 0 (B-S is 5 m,
    # under 10 m: not scored); from C: 0, 0, 1; from S: S-A, S-B, S-C count 1 each, whatever
    # their length. 5 of 11.
    assert m.truth_to_pred.routes == 11
    assert m.truth_to_pred.score == pytest.approx(1 - 5 / 11, abs=1e-12)
    assert MIN_PATH_LENGTH_M == 10.0


def test_graph_nodes_crossings_merges_joints_and_dissolves_overlaps():
    cross = [LineString([(0, 0), (100, 100)]), LineString([(0, 100), (100, 0)])]
    g = road_graph(cross)
    assert (len(g.nodes), len(g.edges)) == (5, 4)
    assert sorted(map(tuple, g.nodes.tolist()))[2] == (50.0, 50.0)
    # end-to-end pieces (and a MultiLineString) become one edge; an overlap counts once
    chain = [
        MultiLineString([[(0, 0), (30, 0)], [(30, 0), (60, 0)]]),
        LineString([(60, 0), (100, 0)]),
        LineString([(10, 0), (50, 0)]),
        None,
        LineString(),
    ]
    g = road_graph(chain)
    assert (len(g.nodes), len(g.edges)) == (2, 1)
    assert g.length == 100.0
    ring = road_graph([LineString([(0, 0), (10, 0), (10, 10), (0, 0)])])
    assert len(ring.nodes) == 1 and ring.edges.tolist() == [[0, 0]]


def test_non_lines_are_refused():
    with pytest.raises(InputError, match="a Polygon is not a road line"):
        road_graph([Polygon([(0, 0), (1, 0), (1, 1)])])
    with pytest.raises(InputError, match="a Point is not a road line"):
        score_roads([Point(0, 0)], T)


def test_units_other_than_metres():
    feet = 0.3048
    in_feet = [LineString(np.asarray(line.coords) / feet) for line in T]
    m = score_roads(in_feet[::2], in_feet, unit=feet)
    ref = score_roads(T[::2], T)
    assert m.apls == pytest.approx(ref.apls, abs=1e-12)
    assert m.truth_length_m == pytest.approx(300.0)
    assert m.recall == pytest.approx(ref.recall, abs=1e-9)
    assert m.truth_to_pred.control_points == ref.truth_to_pred.control_points


def test_big_graphs_score_a_repeatable_sample():
    rng = np.random.default_rng(3)
    lines = [LineString(rng.uniform(0, 1000, (3, 2))) for _ in range(15)]
    g = road_graph(lines)
    full = apls_direction(g, g, spacing=50, snap=4, min_path_length=10, max_pairs=10**9)
    assert not full.sampled and full.score == pytest.approx(1.0, abs=1e-12)
    n = full.control_points
    a = apls_direction(g, road_graph(lines[:-3]), spacing=50, snap=4, min_path_length=10,
                       max_pairs=20 * (n - 1))  # fmt: skip
    b = apls_direction(g, road_graph(lines[:-3]), spacing=50, snap=4, min_path_length=10,
                       max_pairs=20 * (n - 1))  # fmt: skip
    assert a.sampled and a.sources == 20 and a.routes <= 20 * (n - 1)
    assert a == b


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="spacing=0"):
        score_roads(T, T, spacing=0)
    with pytest.raises(InputError, match="unit=0"):
        score_roads(T, T, unit=0)


def test_table_and_dict_show_the_figures():
    m = score_roads(T[::2], T, spacing=NO_MIDPOINTS)
    table = m.format_table()
    assert "APLS" in table and "0.6667" in table and "3/4 snapped" in table
    d = m.to_dict()
    assert d["apls_truth_to_pred"] == {
        "score": 0.5,
        "routes": 12,
        "control_points": 4,
        "snapped": 3,
        "sources": 4,
        "sampled": False,
    }
    assert d["buffer_m"] == 2.0 and d["snap_m"] == 4.0 and d["control_spacing_m"] == 1000.0


# --------------------------------------------------------------------------- reference


@pytest.fixture(scope="module")
def ref():
    return apls_reference.load()


def _jittered(rng: np.random.Generator, n: int) -> tuple[list[LineString], list[LineString]]:
    """Random truth roads, a prediction with each jittered (one missing, one spurious).

    Drawn again while an edge is shorter than 0.5 m: the reference fails on edges shorter
    than about 0.07 m (it takes the wrong end as the node a point falls on, then stops).
    """
    while True:
        truth = [LineString(rng.uniform(0, 300, (int(rng.integers(2, 5)), 2))) for _ in range(n)]
        pred = [
            LineString(np.asarray(t.coords) + rng.normal(0, 1.5, (len(t.coords), 2)))
            for t in truth[:-1]
        ]
        pred += [LineString(rng.uniform(0, 300, (2, 2)))]
        if min(road_graph(pred).lengths.min(), road_graph(truth).lengths.min()) > 0.5:
            return pred, truth


@pytest.mark.parametrize("seed", range(6))
def test_equals_the_reference_on_random_graphs(ref, seed):
    rng = np.random.default_rng(seed)
    pred, truth = _jittered(rng, 6)
    # a ring and a road shared exactly (control points snap onto nodes)
    shared = LineString([(50, 50), (80, 50), (80, 80), (50, 80), (50, 50)])
    pred, truth = [*pred, shared], [*truth, shared]
    spacing, snap = (50.0, 4.0) if seed % 2 else (20.0, 8.0)
    m = score_roads(pred, truth, spacing=spacing, snap=snap)
    total, t2p, p2t = apls_reference.reference_apls(
        ref, road_graph(pred), road_graph(truth), spacing=spacing, snap=snap
    )
    assert 0 < m.apls < 1
    assert m.truth_to_pred.score == pytest.approx(t2p, abs=1e-9)
    assert m.pred_to_truth.score == pytest.approx(p2t, abs=1e-9)
    assert m.apls == pytest.approx(total, abs=1e-9)


def test_equals_the_reference_on_the_hand_examples(ref):
    for pred in (T[::2], [], [LineString([(0, 1), (100, 1)])]):
        m = score_roads(pred, T)
        total, t2p, p2t = apls_reference.reference_apls(ref, road_graph(pred), road_graph(T))
        assert (m.apls, m.truth_to_pred.score, m.pred_to_truth.score) == pytest.approx(
            (total, t2p, p2t), abs=1e-9
        )


def test_graph_type_is_what_the_reference_reads():
    g = road_graph(T)
    assert isinstance(g, RoadGraph)
    nxg = apls_reference.to_networkx(g, 5)
    assert sorted(nxg.nodes) == [5, 6, 7, 8]
    assert sum(d["length"] for *_, d in nxg.edges(data=True)) == 300.0


def test_the_sample_submission_on_vegas_equals_the_reference(ref):
    """SpaceNet 3's sample proposal (pixel WKT) against the Vegas truth, in UTM 11N."""
    import geopandas as gpd
    import pandas as pd
    import rasterio
    import shapely.wkt
    from shapely import affinity

    folder = real_data("apls_spacenet3_vegas_img0")
    with rasterio.open(folder / "RGB-PanSharpen_AOI_2_Vegas_img0.tif") as src:
        t = src.transform
    pix = pd.read_csv(folder / "sn3_sample_submission_albu.csv")["WKT_Pix"]
    lines = [affinity.affine_transform(shapely.wkt.loads(w), [t.a, t.b, t.d, t.e, t.c, t.f])
             for w in pix]  # fmt: skip
    pred = gpd.GeoSeries(lines, crs="EPSG:4326").to_crs("EPSG:32611")
    truth = gpd.read_file(folder / "AOI_2_Vegas_img0_roads_gt.geojson").to_crs("EPSG:32611")
    m = score_roads(pred.values, truth.geometry.values)
    total, t2p, p2t = apls_reference.reference_apls(
        ref, road_graph(pred.values), road_graph(truth.geometry.values)
    )
    assert m.apls == pytest.approx(total, abs=1e-9)  # 0.8237
    assert m.truth_to_pred.score == pytest.approx(t2p, abs=1e-9)
    assert m.pred_to_truth.score == pytest.approx(p2t, abs=1e-9)
    assert 0.7 < m.apls < 0.9
