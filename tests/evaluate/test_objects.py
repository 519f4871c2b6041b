from __future__ import annotations

import logging
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, Polygon, box

from geoseg.errors import InputError
from geoseg.evaluate.objects import ObjectMetrics, match_objects, match_objects_by_group

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
ATLANTA = REAL / "solaris_spacenet4_atlanta"
SN2 = REAL / "solaris_spacenet2_eval"
needs_real = pytest.mark.skipif(
    not (ATLANTA.is_dir() and SN2.is_dir()),
    reason=f"shared real data not found at {REAL} (only present in the project workspace)",
)


def _frame(geoms, **cols):
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=32633)


def _shifted_iou(s, size=10.0):
    """IoU of two size x size squares offset by s along x (by hand)."""
    return (size - s) * size / (size * size + s * size)


# ----------------------------------------------------------------------- synthetic


def test_squares_with_known_ious():
    truth = _frame([box(0, 0, 10, 10), box(100, 0, 110, 10), box(200, 0, 210, 10)])
    props = _frame(
        [
            box(2, 0, 12, 10),  # IoU 8/12 with truth 0: match
            box(104, 0, 114, 10),  # IoU 6/14 with truth 1: below 0.5, FP
            box(500, 500, 510, 510),  # touches nothing: FP
            box(1, 0, 11, 10),  # IoU 9/11 with truth 0, already taken: FP
        ]
    )
    m = match_objects(props, truth)
    assert (m.tp, m.fp, m.fn) == (1, 3, 2)
    assert len(m.matches) == 1
    pair = m.matches[0]
    assert (pair.proposal, pair.truth) == (0, 0)
    assert pair.iou == pytest.approx(_shifted_iou(2))
    assert m.precision == 1 / 4 and m.recall == 1 / 3
    assert m.f1 == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert m.mean_iou == pytest.approx(8 / 12)
    np.testing.assert_allclose(m.truth_iou, [8 / 12, 6 / 14, 0.0])


def test_confidence_order_decides_who_matches():
    truth = _frame([box(0, 0, 10, 10)])
    props = _frame([box(1, 0, 11, 10), box(3, 0, 13, 10)], conf=[0.2, 0.9])
    by_input = match_objects(props, truth)
    assert by_input.matches[0].proposal == 0
    by_conf = match_objects(props, truth, confidence_column="conf")
    assert by_conf.matches[0].proposal == 1
    assert by_conf.matches[0].iou == pytest.approx(_shifted_iou(3))
    # truth_iou keeps the best IoU it reached as a best candidate (proposal 1 only, 0 was
    # visited after truth 0 was used up)
    assert by_conf.truth_iou[0] == pytest.approx(_shifted_iou(3))
    # ties keep input order (stable)
    tied = match_objects(props.assign(conf=[0.5, 0.5]), truth, confidence_column="conf")
    assert tied.matches[0].proposal == 0


def test_best_iou_unmatched_truth_is_taken_and_ties_go_to_first_truth():
    truth = _frame([box(0, 0, 10, 10), box(2, 0, 12, 10)])
    prop = _frame([box(2, 0, 12, 10), box(1, 0, 11, 10)])
    m = match_objects(prop, truth)
    # proposal 0 equals truth 1 (IoU 1), proposal 1 is equidistant from both (IoU 9/11) and
    # takes truth 0, the only one left
    assert [(p.proposal, p.truth) for p in m.matches] == [(0, 1), (1, 0)]
    tie = match_objects(_frame([box(1, 0, 11, 10)]), truth)
    assert tie.matches[0].truth == 0


def test_threshold_is_strict():
    truth = _frame([box(0, 0, 2, 1)])
    prop = _frame([box(0, 0, 1, 1)])  # IoU exactly 1/2
    assert match_objects(prop, truth).tp == 0
    assert match_objects(prop, truth, iou_threshold=0.49).tp == 1


def test_min_area_truth_inclusive_proposal_exclusive():
    truth = _frame([box(0, 0, 4, 5), box(10, 0, 13, 5)])  # areas 20, 15
    prop = _frame([box(0, 0, 4, 5), box(10, 0, 13, 5)])
    m = match_objects(prop, truth, min_area_truth=20)  # truth area 20 is kept
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert math.isnan(m.truth_iou[1])
    m = match_objects(prop, truth, min_area_proposal=20)  # proposal area 20 is dropped
    assert (m.tp, m.fp, m.fn) == (0, 0, 2)
    m = match_objects(prop, truth, min_area_truth=20, min_area_proposal=19.9)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)


def test_empty_geometries_are_ignored_and_labels_kept():
    truth = gpd.GeoDataFrame(
        geometry=[box(0, 0, 10, 10), Polygon(), None], index=["a", "b", "c"], crs=32633
    )
    prop = gpd.GeoDataFrame(geometry=[Polygon(), box(0, 0, 10, 10)], index=[7, 9], crs=32633)
    m = match_objects(prop, truth)
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    assert m.matches[0][:2] == (9, "a")
    assert m.to_dict()["matches"] == [
        {"proposal": 9, "truth": "a", "iou": 1.0, "c_iou": 1.0, "polis": 0.0}
    ]


def test_invalid_polygons_are_repaired_with_a_warning(caplog):
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # two triangles, area 50
    truth = _frame([box(0, 0, 10, 10)])
    with caplog.at_level(logging.WARNING, logger="geoseg.evaluate.objects"):
        m = match_objects(_frame([bowtie]), truth, iou_threshold=0.4)
    assert "repaired 1 invalid" in caplog.text
    assert m.tp == 1 and m.matches[0].iou == pytest.approx(0.5)


def test_rejects_bad_input():
    truth = _frame([box(0, 0, 1, 1)])
    with pytest.raises(InputError, match="LineString"):
        match_objects(_frame([LineString([(0, 0), (1, 1)])]), truth)
    with pytest.raises(InputError, match="'score'"):
        match_objects(truth, truth, confidence_column="score")
    with pytest.raises(InputError):
        match_objects(truth, truth, iou_threshold=1.0)
    with pytest.raises(InputError):
        match_objects(truth, truth, min_area_truth=-1)
    with pytest.raises(InputError, match="'ImageId'"):
        match_objects_by_group(truth, truth)


def test_no_true_positive_scores_are_zero():
    m = match_objects(_frame([]), _frame([box(0, 0, 1, 1)]))
    assert (m.tp, m.fp, m.fn) == (0, 0, 1)
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    assert math.isnan(m.mean_iou) and m.to_dict()["mean_iou"] is None


def test_by_group_matches_within_groups_only():
    truth = _frame([box(0, 0, 10, 10), box(0, 0, 10, 10), box(50, 0, 60, 10)], img=["a", "b", "b"])
    props = _frame([box(0, 0, 10, 10), box(0, 0, 10, 10), box(0, 0, 10, 10)], img=["b", "b", "c"])
    g = match_objects_by_group(props, truth, group_column="img")
    assert list(g.groups) == ["a", "b", "c"]
    counts = {k: (v.tp, v.fp, v.fn) for k, v in g.groups.items()}
    assert counts == {"a": (0, 0, 1), "b": (1, 1, 1), "c": (0, 1, 0)}
    assert (g.total.tp, g.total.fp, g.total.fn) == (1, 2, 2)
    # per-truth IoU is reported in the truth frame's row order
    np.testing.assert_allclose(g.total.truth_iou, [0.0, 1.0, 0.0])
    d = g.to_dict()
    assert d["total"]["tp"] == 1 and d["groups"]["c"]["fp"] == 1


@pytest.mark.slow
def test_scales_to_100k_buildings():
    rng = np.random.default_rng(0)
    n = 100_000
    xy = rng.random((n, 2)) * 20_000
    truth = _frame(shapely.box(xy[:, 0], xy[:, 1], xy[:, 0] + 10, xy[:, 1] + 10))
    moved = xy + rng.normal(0, 1.5, (n, 2))
    props = _frame(shapely.box(moved[:, 0], moved[:, 1], moved[:, 0] + 10, moved[:, 1] + 10))
    m = match_objects(props, truth)
    assert m.tp + m.fp == n and m.tp + m.fn == n
    assert m.tp > 0.8 * n


# ----------------------------------------------------------------------- real references


@needs_real
def test_spacenet4_atlanta_reference():
    gt = gpd.read_file(ATLANTA / "gt.geojson")
    pred = gpd.read_file(ATLANTA / "pred.geojson")
    m = match_objects(pred, gt, confidence_column="conf")
    assert (m.tp, m.fp, m.fn) == (8, 20, 20)
    assert m.precision == m.recall == m.f1 == 0.2857142857142857


def _sn2(name):
    df = pd.read_csv(SN2 / name)
    return gpd.GeoDataFrame(df, geometry=gpd.GeoSeries.from_wkt(df["PolygonWKT_Pix"]))


@pytest.fixture(scope="module")
def sn2():
    truth = _sn2("SN2_sample_truth.csv")
    preds = _sn2("SN2_sample_preds.csv")
    return truth, match_objects_by_group(
        preds,
        truth,
        group_column="ImageId",
        confidence_column="Confidence",
        min_area_truth=20,
        min_area_proposal=20,
    )


@needs_real
def test_spacenet2_per_image_reference(sn2):
    _, result = sn2
    ref = pd.read_csv(SN2 / "SN2_test_results_full.csv")
    assert sorted(ref["imageID"]) == list(result.groups)
    for row in ref.itertuples():
        m = result.groups[row.imageID]
        assert (m.tp, m.fp, m.fn) == (row.TruePos, row.FalsePos, row.FalseNeg), row.imageID
        assert (m.precision, m.recall, m.f1) == (row.Precision, row.Recall, row.F1Score)


@needs_real
def test_spacenet2_per_aoi_reference(sn2):
    _, result = sn2
    ref = pd.read_csv(SN2 / "SN2_test_results.csv")
    aois = sorted({k.rsplit("_img", 1)[0] for k in result.groups})
    assert aois == ["AOI_2_Vegas", "AOI_5_Khartoum"]
    got = [
        ObjectMetrics.combine(v for k, v in result.groups.items() if k.startswith(aoi + "_img"))
        for aoi in aois
    ]
    # the reference rows are Vegas then Khartoum
    for m, row in zip(got, ref.itertuples(), strict=True):
        assert (m.tp, m.fp, m.fn) == (row.TruePos, row.FalsePos, row.FalseNeg)
        assert m.f1 == row.F1Score
        assert (m.precision, m.recall) == (row.Precision, row.Recall)


@needs_real
def test_spacenet2_iou_by_building(sn2):
    truth, result = sn2
    ref = pd.read_csv(SN2 / "SN2_sample_iou_by_building.csv")
    assert list(ref["ImageId"]) == list(truth["ImageId"])
    assert list(ref["BuildingId"]) == list(truth["BuildingId"])
    ours = result.total.truth_iou
    scored = ~np.isnan(ours)
    np.testing.assert_allclose(ours[scored], ref["iou_score"].to_numpy()[scored], rtol=0, atol=1e-9)
    # buildings dropped by the area rule (< 20 px², or empty) are 0 in solaris, NaN here
    assert (~scored).sum() == 3
    assert (ref["iou_score"].to_numpy()[~scored] == 0).all()
