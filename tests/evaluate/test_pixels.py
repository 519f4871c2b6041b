from __future__ import annotations

import json
import math

import numpy as np
import pytest

from geoseg.errors import InputError, SchemaError
from geoseg.evaluate.pixels import PixelMetrics, boundary_mask, confusion_matrix
from geoseg.schema import IGNORE


def _direct_confusion(pred, truth, c, valid=None):
    """Reference: one explicit pass over every pixel pair."""
    out = np.zeros((c, c), dtype=np.int64)
    v = np.ones(pred.shape, bool) if valid is None else valid
    for p, t, ok in zip(
        pred.ravel().tolist(), truth.ravel().tolist(), v.ravel().tolist(), strict=True
    ):
        if ok and 0 <= p < c and 0 <= t < c:
            out[t, p] += 1
    return out


# ----------------------------------------------------------------------- confusion_matrix


def test_confusion_matrix_matches_pixel_loop():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 8, (40, 30)).astype(np.uint8)  # 6, 7 are out of range for C=6
    truth = rng.integers(0, 6, (40, 30)).astype(np.uint8)
    truth[rng.random(truth.shape) < 0.1] = IGNORE
    pred[rng.random(pred.shape) < 0.1] = IGNORE
    valid = rng.random(pred.shape) > 0.2
    cm = confusion_matrix(pred, truth, num_classes=6, valid=valid)
    assert cm.dtype == np.int64
    assert cm.shape == (6, 6)
    np.testing.assert_array_equal(cm, _direct_confusion(pred, truth, 6, valid))
    # rows are truth: swapping the inputs transposes the matrix
    np.testing.assert_array_equal(confusion_matrix(truth, pred, num_classes=6, valid=valid), cm.T)


def test_confusion_matrix_signed_negative_values_excluded():
    pred = np.array([[0, -1, 2], [1, 1, 300]], dtype=np.int32)
    truth = np.array([[0, 1, 2], [-5, 1, 1]], dtype=np.int32)
    cm = confusion_matrix(pred, truth, num_classes=3)
    np.testing.assert_array_equal(cm, _direct_confusion(pred, truth, 3))
    assert cm.sum() == 3  # (0,0), (2,2), (1,1)


@pytest.mark.parametrize(
    ("pred", "truth", "kwargs"),
    [
        (np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), {"num_classes": 3}),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), {"num_classes": 0}),
        (np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8), {"num_classes": 255}),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), {"num_classes": 3}),
        (
            np.zeros((2, 2), np.uint8),
            np.zeros((2, 2), np.uint8),
            {"num_classes": 3, "valid": np.ones((3, 3), bool)},
        ),
    ],
)
def test_confusion_matrix_rejects_bad_input(pred, truth, kwargs):
    with pytest.raises(InputError):
        confusion_matrix(pred, truth, **kwargs)


# ----------------------------------------------------------------------- boundary_mask


def _two_halves(h=6, w=10, left=0, right=1):
    a = np.full((h, w), left, dtype=np.uint8)
    a[:, w // 2 :] = right
    return a


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_boundary_mask_straight_edge_masks_radius_columns_each_side(radius):
    truth = _two_halves()  # edge between columns 4 and 5
    mask = boundary_mask(truth, radius)
    expected = np.zeros_like(mask)
    expected[:, 5 - radius : 5 + radius] = True
    np.testing.assert_array_equal(mask, expected)


def test_boundary_mask_radius_zero_masks_nothing():
    assert not boundary_mask(_two_halves(), 0).any()


def test_boundary_mask_single_pixel_disc():
    truth = np.zeros((9, 9), dtype=np.uint8)
    truth[4, 4] = 3
    # Boundary pixels: the centre and its 4 neighbours (their 4-neighbour differs).
    plus = np.zeros((9, 9), bool)
    plus[4, 3:6] = True
    plus[3:6, 4] = True
    np.testing.assert_array_equal(boundary_mask(truth, 1), plus)
    # radius 2: centres within 1.5 px of a boundary pixel: the plus grown by a 3x3 square.
    r2 = np.zeros((9, 9), bool)
    r2[2:7, 3:6] = True
    r2[3:6, 2:7] = True
    np.testing.assert_array_equal(boundary_mask(truth, 2), r2)
    # radius 3: within 2.5 px; offsets with dy^2 + dx^2 <= 6 around the plus.
    yy, xx = np.mgrid[0:9, 0:9]
    r3 = np.zeros((9, 9), bool)
    for by, bx in np.argwhere(plus):
        r3 |= (yy - by) ** 2 + (xx - bx) ** 2 <= 6
    np.testing.assert_array_equal(boundary_mask(truth, 3), r3)
    # by hand: the 7x7 square minus the 12 cells with offsets (2,3), (3,2), (3,3) (x4 signs)
    assert r3.sum() == 49 - 12


def test_boundary_mask_ignore_neighbours_do_not_create_boundaries():
    truth = _two_halves(left=2, right=IGNORE)
    assert not boundary_mask(truth, 3).any()
    # a real edge next to an ignore band is still a boundary
    truth[:, 0:2] = 1
    mask = boundary_mask(truth, 1)
    expected = np.zeros_like(mask)
    expected[:, 1:3] = True
    np.testing.assert_array_equal(mask, expected)


def test_boundary_mask_diagonal_neighbours_do_not_count():
    truth = np.zeros((4, 4), dtype=np.uint8)
    truth[:2, :2] = 1
    truth[2:, 2:] = 1
    mask = boundary_mask(truth, 1)
    # every pixel has a 4-neighbour of the other class except the two diagonal corners
    expected = np.ones((4, 4), bool)
    expected[0, 0] = expected[3, 3] = False
    expected[0, 3] = expected[3, 0] = False
    np.testing.assert_array_equal(mask, expected)


def test_boundary_mask_rejects_bad_input():
    with pytest.raises(InputError):
        boundary_mask(np.zeros((2, 2, 2), np.uint8), 1)
    with pytest.raises(InputError):
        boundary_mask(np.zeros((2, 2), np.uint8), -1)


# ----------------------------------------------------------------------- PixelMetrics

CM = np.array(
    [
        [5, 1, 0, 0],  # truth a
        [2, 3, 0, 1],  # truth b
        [0, 0, 0, 0],  # truth c: absent from truth and prediction
        [0, 0, 0, 0],  # truth d: absent from truth, predicted once
    ]
)
NAMES = ("a", "b", "c", "d")


def test_pixel_metrics_hand_computed():
    m = PixelMetrics.from_confusion(CM, NAMES)
    assert m.pixel_count == 12
    assert m.overall_accuracy == pytest.approx(8 / 12)
    np.testing.assert_allclose(m.precision, [5 / 7, 3 / 4, np.nan, 0.0])
    np.testing.assert_allclose(m.recall, [5 / 6, 3 / 6, np.nan, np.nan])
    np.testing.assert_allclose(m.iou, [5 / 8, 3 / 7, np.nan, 0.0])
    np.testing.assert_allclose(m.f1, [10 / 13, 6 / 10, np.nan, 0.0])
    assert m.miou == pytest.approx((5 / 8 + 3 / 7 + 0.0) / 3)
    assert m.mean_f1 == pytest.approx((10 / 13 + 6 / 10 + 0.0) / 3)


def test_pixel_metrics_ignore_classes_leave_the_means_not_oa():
    m = PixelMetrics.from_confusion(CM, NAMES, ignore_classes=["d"])
    assert m.miou == pytest.approx((5 / 8 + 3 / 7) / 2)
    assert m.mean_f1 == pytest.approx((10 / 13 + 6 / 10) / 2)
    assert m.overall_accuracy == pytest.approx(8 / 12)
    with pytest.raises(SchemaError, match="'zzz'"):
        PixelMetrics.from_confusion(CM, NAMES, ignore_classes=["zzz"])


def test_pixel_metrics_to_dict_nulls_and_json():
    m = PixelMetrics.from_confusion(CM, NAMES, ignore_classes=["d"])
    d = m.to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN never reaches JSON
    back = json.loads(text)
    c = back["classes"][2]
    assert c["name"] == "c"
    assert c["iou"] is None and c["f1"] is None and c["precision"] is None
    assert back["classes"][3]["recall"] is None
    assert back["classes"][3]["in_means"] is False
    assert back["confusion_matrix"] == CM.tolist()
    assert back["miou"] == pytest.approx(m.miou)


def test_pixel_metrics_empty_matrix_is_undefined_not_zero():
    m = PixelMetrics.from_confusion(np.zeros((2, 2), int), ("x", "y"))
    assert math.isnan(m.overall_accuracy) and math.isnan(m.miou)
    assert m.to_dict()["miou"] is None
    assert "mIoU" in m.format_table()


def test_pixel_metrics_format_table_lists_classes_and_means():
    m = PixelMetrics.from_confusion(CM, NAMES, ignore_classes=["d"])
    table = m.format_table()
    for name in ("a", "b", "c", "d*", "OA", "mIoU", "mean F1"):
        assert name in table
    assert f"{100 * m.miou:5.2f}" in table
    assert "not in the means" in table


def test_pixel_metrics_is_immutable_and_validates_shape():
    m = PixelMetrics.from_confusion(CM, NAMES)
    with pytest.raises(ValueError):
        m.confusion[0, 0] = 1
    with pytest.raises(InputError):
        PixelMetrics.from_confusion(CM, NAMES[:3])
    with pytest.raises(InputError):
        PixelMetrics.from_confusion(-CM, NAMES)
