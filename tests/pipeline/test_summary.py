from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.errors import InputError
from geoseg.pipeline import LandcoverSummary, landcover_summary, write_landcover_csv
from geoseg.schema import POTSDAM
from tests.conftest import write_raster


def _classes(seed: int, shape: tuple[int, int] = (37, 53)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, shape).astype(np.uint8)
    a[rng.random(shape) < 0.1] = 255
    return a


def test_projected_areas_are_pixel_counts_times_pixel_area(tmp_path: Path) -> None:
    a = _classes(0)
    a[0, :5] = 9  # outside the schema: neither valid nor nodata
    tf = Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0)
    p = write_raster(tmp_path / "c.tif", a, transform=tf, nodata=255)
    s = landcover_summary(p)
    counts = np.bincount(a[a < 6], minlength=6)
    assert s.classes == POTSDAM.classes
    assert s.pixels == tuple(int(c) for c in counts)
    assert s.area_m2 == pytest.approx(tuple(counts * 0.0025))
    assert s.valid_pixels == int(counts.sum())
    assert s.nodata_pixels == int((a == 255).sum()) and s.unknown_pixels == 5
    assert s.valid_area_m2 == pytest.approx(counts.sum() * 0.0025)
    assert s.percent == pytest.approx(tuple(counts / counts.sum() * 100))
    assert sum(s.percent) == pytest.approx(100.0)


def test_result_does_not_depend_on_block_size(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "c.tif", _classes(1))
    ref = landcover_summary(p, block_size=1000)
    for bs in (1, 7, 36):
        assert landcover_summary(p, block_size=bs) == ref


def test_nodata_value_other_than_255_is_not_valid(tmp_path: Path) -> None:
    a = _classes(2)
    a[a == 3] = 4  # class 3 absent ...
    a[:3] = 3  # ... except as the declared nodata
    p = write_raster(tmp_path / "c.tif", a, nodata=3)
    s = landcover_summary(p)
    assert s.pixels[3] == 0
    assert s.nodata_pixels == int(((a == 3) | (a == 255)).sum())


def test_geographic_areas_match_the_geodesic_area(tmp_path: Path) -> None:
    from pyproj import Geod

    a = np.zeros((40, 30), np.uint8)
    a[:20] = 1
    west, north, res = 13.0, 52.5, 0.001
    tf = Affine(res, 0, west, 0, -res, north)
    p = write_raster(tmp_path / "c.tif", a, transform=tf, crs="EPSG:4326")
    s = landcover_summary(p)
    geod = Geod(ellps="WGS84")

    def band_area(lat_top: float, lat_bottom: float) -> float:
        east = west + 30 * res
        lons = [west, east, east, west]
        lats = [lat_top, lat_top, lat_bottom, lat_bottom]
        return abs(geod.polygon_area_perimeter(lons, lats)[0])

    assert s.area_m2 is not None
    assert s.area_m2[1] == pytest.approx(band_area(north, north - 20 * res), rel=5e-3)
    assert s.area_m2[0] == pytest.approx(band_area(north - 20 * res, north - 40 * res), rel=5e-3)
    assert s.area_m2[1] < s.area_m2[0]  # class 1 holds the rows nearer the pole


def test_schema_comes_from_the_raster_tag(tmp_path: Path) -> None:
    schema = {"name": "two", "classes": [{"name": "a", "colour": [1, 2, 3]}, {"name": "b",
              "colour": [4, 5, 6]}]}  # fmt: skip
    a = np.array([[0, 1, 1, 2]], np.uint8)
    p = write_raster(tmp_path / "c.tif", a)
    import rasterio

    with rasterio.open(p, "r+") as ds:
        ds.update_tags(GEOSEG_SCHEMA=json.dumps(schema))
    s = landcover_summary(p)
    assert s.classes == ("a", "b") and s.pixels == (1, 2) and s.unknown_pixels == 1


def test_bad_rasters_are_input_errors(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "f.tif", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="1-band integer"):
        landcover_summary(p)
    (tmp_path / "x.tif").write_text("not a raster")
    with pytest.raises(InputError, match="not a readable raster"):
        landcover_summary(tmp_path / "x.tif")


def test_csv_has_one_row_per_scene_and_class(tmp_path: Path) -> None:
    s1 = landcover_summary(write_raster(tmp_path / "a.tif", _classes(3)))
    s2 = landcover_summary(write_raster(tmp_path / "b.tif", _classes(4)))
    assert LandcoverSummary.from_dict(json.loads(json.dumps(s1.to_dict()))) == s1
    out = write_landcover_csv([("a", s1), ("b", s2)], tmp_path / "lc.csv")
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == 12
    assert [r["scene"] for r in rows] == ["a"] * 6 + ["b"] * 6
    assert [int(r["pixels"]) for r in rows[:6]] == list(s1.pixels)
    assert sum(float(r["area_m2"]) for r in rows[6:]) == pytest.approx(s2.valid_area_m2, 1e-6)
    assert sum(float(r["percent_of_valid"]) for r in rows[:6]) == pytest.approx(100, 1e-3)
