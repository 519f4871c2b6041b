from __future__ import annotations

import logging
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import (
    BandMismatchError,
    GridMismatchError,
    InputError,
    SchemaError,
)
from geoseg.evaluate import (
    boundary_mask,
    evaluate_rasters,
    evaluate_vectors,
)
from geoseg.schema import IGNORE, POTSDAM

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
ATLANTA = REAL / "solaris_spacenet4_atlanta"
needs_real = pytest.mark.skipif(
    not ATLANTA.is_dir(),
    reason=f"shared real data not found at {ATLANTA} (only present in the project workspace)",
)

H, W = 70, 90  # not a multiple of the block sizes used below
TRANSFORM = Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0)
UTM33 = CRS.from_epsg(32633)


def _write(path, array, *, transform=TRANSFORM, crs=UTM33, nodata=None):
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # ISPRS-style labels
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
    return path


def _labels(seed, h=H, w=W, cell=6, ignore_frac=0.03):
    """Blocky class map (so there are real boundaries) with some ignore pixels."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 6, (h // cell + 1, w // cell + 1)).astype(np.uint8)
    lab = np.kron(coarse, np.ones((cell, cell), np.uint8))[:h, :w].copy()
    lab[rng.random((h, w)) < ignore_frac] = IGNORE
    return lab


def _direct(pred, truth, valid, c=6):
    """Reference confusion matrix by np.add.at on the whole image."""
    keep = valid & (pred < c) & (truth < c)
    out = np.zeros((c, c), dtype=np.int64)
    np.add.at(out, (truth[keep].astype(int), pred[keep].astype(int)), 1)
    return out


@pytest.fixture
def pair(tmp_path):
    truth = _labels(1)
    rng = np.random.default_rng(2)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.3
    pred[flip] = rng.integers(0, 6, int(flip.sum()))
    pred[rng.random(truth.shape) < 0.02] = IGNORE
    return (
        _write(tmp_path / "pred.tif", pred),
        _write(tmp_path / "truth.tif", truth),
        pred,
        truth,
    )


def test_confusion_matrix_equals_direct_numpy(pair):
    pred_path, truth_path, pred, truth = pair
    m = evaluate_rasters(pred_path, truth_path, block_size=32)
    np.testing.assert_array_equal(m.confusion, _direct(pred, truth, np.ones(pred.shape, bool)))
    assert m.class_names == POTSDAM.classes


@pytest.mark.parametrize("eroded", [0, 1, 3])
@pytest.mark.parametrize("block_size", [7, 25, 64, 4096])
def test_blockwise_equals_whole_image(pair, eroded, block_size):
    pred_path, truth_path, pred, truth = pair
    valid = ~boundary_mask(truth, eroded)
    expected = _direct(pred, truth, valid)
    m = evaluate_rasters(pred_path, truth_path, eroded=eroded, block_size=block_size)
    np.testing.assert_array_equal(m.confusion, expected)
    if eroded:
        # erosion really removed pixels
        assert m.pixel_count < _direct(pred, truth, np.ones(pred.shape, bool)).sum()


def test_eroded_hand_made_edge(tmp_path):
    truth = np.zeros((8, 12), np.uint8)
    truth[:, 6:] = 1  # building right of column 5
    pred = np.zeros((8, 12), np.uint8)  # predicts impervious everywhere
    _write(tmp_path / "t.tif", truth)
    _write(tmp_path / "p.tif", pred)
    m = evaluate_rasters(tmp_path / "p.tif", tmp_path / "t.tif", eroded=2, block_size=5)
    # columns 4..7 are within 2 px of the edge: 8 columns x 8 rows remain
    assert m.pixel_count == 8 * 8
    assert m.confusion[0, 0] == 4 * 8 and m.confusion[1, 0] == 4 * 8


def test_colour_truth_and_single_unknown_colour_warning(pair, tmp_path, caplog):
    pred_path, _, pred, truth = pair
    rgb = POTSDAM.encode(truth)  # 255 -> black: not a schema colour
    rgb[:, 0, :5] = np.array([10, 20, 30])[:, None]  # five more unknown pixels
    _write(tmp_path / "label.tif", rgb, transform=None, crs=None)  # ungeoreferenced, like ISPRS
    truth_idx = truth.copy()
    truth_idx[0, :5] = IGNORE
    with caplog.at_level(logging.WARNING, logger="geoseg.evaluate"):
        m = evaluate_rasters(pred_path, tmp_path / "label.tif", eroded=2, block_size=16)
    valid = ~boundary_mask(truth_idx, 2)
    np.testing.assert_array_equal(m.confusion, _direct(pred, truth_idx, valid))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f" {int((truth_idx == IGNORE).sum())} truth pixels" in warnings[0].getMessage()


def test_single_band_truth_out_of_schema_values_ignored(pair, tmp_path, caplog):
    pred_path, _, pred, truth = pair
    odd = truth.copy()
    odd[:3, :3] = 9
    _write(tmp_path / "odd.tif", odd)
    with caplog.at_level(logging.WARNING, logger="geoseg.evaluate"):
        m = evaluate_rasters(pred_path, tmp_path / "odd.tif")
    np.testing.assert_array_equal(m.confusion, _direct(pred, odd, np.ones(odd.shape, bool)))
    assert any(" 9 truth pixels" in r.getMessage() for r in caplog.records)


def test_prediction_nodata_is_not_counted(tmp_path):
    truth = _labels(3, ignore_frac=0)
    pred = truth.copy()
    pred[:10] = 200
    _write(tmp_path / "p.tif", pred, nodata=200)
    _write(tmp_path / "t.tif", truth)
    m = evaluate_rasters(tmp_path / "p.tif", tmp_path / "t.tif")
    assert m.pixel_count == (H - 10) * W
    assert m.overall_accuracy == 1.0


def test_ignore_classes_and_schema_file(pair, tmp_path):
    pred_path, truth_path, *_ = pair
    m = evaluate_rasters(pred_path, truth_path, ignore_classes=["clutter"])
    assert m.ignore_classes == ("clutter",)
    with pytest.raises(SchemaError, match="sky"):
        evaluate_rasters(pred_path, truth_path, ignore_classes=["sky"])
    with pytest.raises(SchemaError):
        evaluate_rasters(pred_path, truth_path, schema=tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"transform": TRANSFORM @ Affine.translation(1, 0)}, "differ by up to 1 px"),
        ({"crs": CRS.from_epsg(32632)}, "CRS"),
    ],
)
def test_grid_mismatch_names_both_files(pair, tmp_path, kwargs, what):
    pred_path, _, _, truth = pair
    other = _write(tmp_path / "other.tif", truth, **kwargs)
    with pytest.raises(GridMismatchError, match=what) as info:
        evaluate_rasters(pred_path, other)
    msg = str(info.value)
    assert str(pred_path) in msg and str(other) in msg and "\n" not in msg


def test_grid_size_mismatch(pair, tmp_path):
    pred_path, _, _, truth = pair
    small = _write(tmp_path / "small.tif", truth[:-1])
    with pytest.raises(GridMismatchError, match=f"{W}x{H - 1}"):
        evaluate_rasters(pred_path, small)


def test_grid_within_tolerance_is_accepted(pair, tmp_path):
    pred_path, _, pred, truth = pair
    tiny = TRANSFORM @ Affine.translation(1e-9, 0)
    near = _write(tmp_path / "near.tif", truth, transform=tiny)
    m = evaluate_rasters(pred_path, near)
    assert m.pixel_count == _direct(pred, truth, np.ones(pred.shape, bool)).sum()


def test_unreadable_and_wrong_bands(pair, tmp_path):
    pred_path, truth_path, pred, _ = pair
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InputError, match=r"junk\.tif"):
        evaluate_rasters(junk, truth_path)
    with pytest.raises(InputError, match=r"nope\.tif"):
        evaluate_rasters(pred_path, tmp_path / "nope.tif")
    three = _write(tmp_path / "three.tif", np.stack([pred] * 3))
    with pytest.raises(BandMismatchError, match="3 bands"):
        evaluate_rasters(three, truth_path)
    two = _write(tmp_path / "two.tif", np.stack([pred] * 2))
    with pytest.raises(BandMismatchError, match="2 bands"):
        evaluate_rasters(pred_path, two)
    flt = _write(tmp_path / "float.tif", pred.astype(np.float32))
    with pytest.raises(InputError, match="float32"):
        evaluate_rasters(flt, truth_path)


# ----------------------------------------------------------------------- vectors


@needs_real
def test_evaluate_vectors_atlanta_reference():
    m = evaluate_vectors(ATLANTA / "pred.geojson", ATLANTA / "gt.geojson", confidence_column="conf")
    assert (m.tp, m.fp, m.fn) == (8, 20, 20)
    assert m.f1 == 0.2857142857142857


@needs_real
def test_evaluate_vectors_reprojects_truth_and_warns_on_missing_crs(tmp_path, caplog):
    gt = gpd.read_file(ATLANTA / "gt.geojson")
    gt.to_crs(4326).to_file(tmp_path / "gt4326.gpkg", layer="buildings")
    m = evaluate_vectors(ATLANTA / "pred.geojson", tmp_path / "gt4326.gpkg")
    assert (m.tp, m.fp, m.fn) == (8, 20, 20)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        gt.set_crs(None, allow_override=True).to_file(tmp_path / "nocrs.gpkg", layer="truth")
    with caplog.at_level(logging.WARNING, logger="geoseg.evaluate"):
        m = evaluate_vectors(ATLANTA / "pred.geojson", tmp_path / "nocrs.gpkg")
    assert (m.tp, m.fp, m.fn) == (8, 20, 20)
    assert any("no CRS" in r.getMessage() for r in caplog.records)


def test_evaluate_vectors_missing_layer_lists_layers(tmp_path):
    from shapely.geometry import box

    frame = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs=UTM33)
    path = tmp_path / "two.gpkg"
    frame.to_file(path, layer="roads")
    frame.to_file(path, layer="houses")
    with pytest.raises(InputError, match="layers: roads, houses") as info:
        evaluate_vectors(path, path, layer="buildings")
    assert "--layer" in str(info.value)
    with pytest.raises(InputError, match="none is 'buildings'"):
        evaluate_vectors(path, path)
    m = evaluate_vectors(path, path, layer="houses", truth_layer="roads")
    assert (m.tp, m.fp, m.fn) == (1, 0, 0)
    with pytest.raises(InputError, match=r"missing\.gpkg"):
        evaluate_vectors(tmp_path / "missing.gpkg", path, layer="houses")
