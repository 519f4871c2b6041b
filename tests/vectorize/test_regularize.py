"""geoseg.vectorize._regularize: rectilinear outlines and territories."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine

from geoseg.vectorize._regularize import (
    MAX_GROWTH_PX,
    clip_to_territory,
    regularize_building,
    regularize_polygon,
)
from geoseg.vectorize._regularize import iou as regularized_iou
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


def _verts(g: shapely.Geometry) -> np.ndarray:
    return shapely.get_coordinates(g)


@pytest.mark.parametrize("angle", [0, 17])
def test_regularize_building_fits_and_stays_on_its_pixels(angle: float) -> None:
    truth = shapely.affinity.translate(
        shapely.affinity.rotate(shapely.box(0, 0, 70, 35), angle, origin="centroid"), 45, 60
    )
    stair = _staircase(truth)
    out, rectilinear = regularize_building(stair, shapely.box(0, 0, 160, 160))
    assert rectilinear and out.is_valid and len(out.exterior.coords) - 1 == 4
    assert regularized_iou(out, truth) >= regularized_iou(stair, truth)
    assert shapely.distance(stair, shapely.points(_verts(out))).max() <= MAX_GROWTH_PX + 1e-9
    if angle == 0:  # axis-aligned pixels give axis-aligned walls
        d = np.diff(_verts(out), axis=0)
        assert np.all((np.abs(d[:, 0]) < 1e-9) | (np.abs(d[:, 1]) < 1e-9))


def test_a_building_cut_by_the_raster_edge_keeps_its_straight_edge() -> None:
    # a building tilted 8 degrees, cut by the raster's left and top edges
    truth = shapely.affinity.rotate(shapely.box(-20, -15, 50, 30), 8, origin=(15, 7))
    extent = shapely.box(0, 0, 160, 160)
    stair = _staircase(truth)
    out, _ = regularize_building(stair, extent)
    xy = _verts(out)
    assert xy.min() >= 0.0  # never outside the raster
    on_left = out.intersection(shapely.LineString([(0, 0), (0, 160)]))
    on_top = out.intersection(shapely.LineString([(0, 0), (160, 0)]))
    assert on_left.length >= 0.9 * stair.intersection(shapely.LineString([(0, 0), (0, 160)])).length
    assert on_top.length >= 0.9 * stair.intersection(shapely.LineString([(0, 0), (160, 0)])).length


def test_a_candidate_that_fits_worse_than_the_raw_outline_is_rejected() -> None:
    # a round silo: no rectilinear outline fits it better than its simplified pixels
    stair = _staircase(shapely.Point(80, 80).buffer(30, quad_segs=32))
    out, rectilinear = regularize_building(stair, shapely.box(0, 0, 160, 160))
    assert not rectilinear
    assert (
        regularized_iou(out, stair) >= regularized_iou(shapely.simplify(stair, 1.5), stair) - 1e-9
    )


def _coarse_blob(truth: shapely.Polygon, k: int = 4, size: int = 400) -> shapely.Polygon:
    """What a model at k times the grid's pixel size gives: k-pixel steps, rounded corners."""
    from scipy import ndimage

    coarse = rasterio.features.rasterize(
        [(truth, 1)], out_shape=(size // k, size // k), transform=Affine.scale(k)
    ).astype(np.float32)
    fine = np.kron(coarse, np.ones((k, k), np.float32))  # nearest upsampling to the grid
    rounded = ndimage.gaussian_filter(fine, sigma=2.0 * k) > 0.5  # a model's soft corners
    return max(
        (p for v, p in raster_pieces(rounded.astype(np.uint8)) if v == 1), key=lambda p: p.area
    )


def test_a_coarse_detail_map_gets_its_right_angles_back() -> None:
    truth = shapely.affinity.rotate(shapely.box(80, 110, 320, 290), 9, origin="centroid")
    blob = _coarse_blob(truth)
    extent = shapely.box(0, 0, 400, 400)
    # at the grid's own detail the outline stays on the rounded pixels (a mitred 1 px band)
    strict, _ = regularize_building(blob, extent)
    assert shapely.distance(blob, shapely.points(_verts(strict))).max() <= 1.5
    # told the map's detail is 4 px, the walls are straight and meet at right angles
    coarse, rectilinear = regularize_building(blob, extent, detail=4.0)
    assert rectilinear and len(coarse.exterior.coords) - 1 == 4
    assert np.allclose(_angles(coarse), 90.0, atol=1e-6)
    assert regularized_iou(coarse, truth) > regularized_iou(strict, truth)
    assert regularized_iou(coarse, truth) > 0.97


def test_vectorize_reads_the_detail_of_a_prediction(tmp_path) -> None:
    from geoseg.vectorize import VectorizeOptions, vectorize_raster
    from tests.conftest import write_raster

    truth = shapely.affinity.rotate(shapely.box(80, 110, 320, 290), 9, origin="centroid")
    mask = rasterio.features.rasterize([(_coarse_blob(truth), 1)], out_shape=(400, 400))
    classes = np.where(mask == 1, 1, 2).astype(np.uint8)  # building on low vegetation
    tf = Affine(0.05, 0, 500000, 0, -0.05, 5800000)  # 5 cm
    corners = {}
    for name, tags in (("plain", {}), ("tagged", {"GEOSEG_MODEL_GSD": "0.2"})):
        src = write_raster(tmp_path / f"{name}.tif", classes, transform=tf, nodata=255)
        with rasterio.open(src, "r+") as ds:
            ds.update_tags(**tags)
        out = tmp_path / f"{name}.gpkg"
        opts = VectorizeOptions(classes=("building",), regularize=True, min_building_area=0)
        vectorize_raster(src, out, options=opts)
        (geom,) = __import__("geopandas").read_file(out, layer="buildings").geometry
        corners[name] = len(geom.exterior.coords) - 1
    assert corners["tagged"] == 4 < corners["plain"]
