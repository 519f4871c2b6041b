"""Class-raster overviews made by geoseg: the 2 x 2 mode rule, GDAL's level count, the COG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rio_cogeo.cogeo import cog_validate

from geoseg.grid import GeoBox
from geoseg.raster import write_classes
from geoseg.raster.overviews import mode_2x2, overview_factors
from geoseg.schema import IGNORE, POTSDAM
from tests.conftest import POTSDAM_TF


def reference_mode(x: np.ndarray, nodata: int) -> np.ndarray:
    """The rule written out pixel by pixel: most votes among valid pixels, ties to the first
    in reading order, all nodata gives nodata."""
    h, w = x.shape
    out = np.empty((-(-h // 2), -(-w // 2)), dtype=np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            cell = [
                int(x[r, c])
                for r in (2 * i, 2 * i + 1)
                for c in (2 * j, 2 * j + 1)
                if r < h and c < w and x[r, c] != nodata
            ]
            out[i, j] = max(cell, key=lambda v: (cell.count(v), -cell.index(v))) if cell else nodata
    return out


@settings(max_examples=200, deadline=None)
@given(
    arrays(
        np.uint8,
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        elements=st.sampled_from([0, 1, 2, 5, IGNORE]),
    )
)
def test_mode_2x2_follows_the_rule_pixel_by_pixel(x: np.ndarray) -> None:
    assert np.array_equal(mode_2x2(x, IGNORE), reference_mode(x, IGNORE))


def test_mode_2x2_ties_nodata_and_odd_sides() -> None:
    x = np.array(
        [
            [3, 4, 7, 7, 9],
            [4, 3, 1, 7, 9],
            [IGNORE, IGNORE, IGNORE, 2, IGNORE],
            [IGNORE, IGNORE, 5, 2, IGNORE],
        ],
        dtype=np.uint8,
    )
    assert mode_2x2(x, IGNORE).tolist() == [[3, 7, 9], [IGNORE, 2, IGNORE]]


@pytest.mark.parametrize(
    "shape", [(64, 64), (65, 64), (64, 300), (1000, 70), (129, 513), (33, 2000)]
)
def test_overview_factors_are_those_gdals_cog_driver_makes(tmp_path: Path, shape) -> None:
    h, w = shape
    src = tmp_path / "src.tif"
    with rasterio.open(
        src,
        "w",
        driver="GTiff",
        width=w,
        height=h,
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=POTSDAM_TF,
    ) as ds:
        ds.write(np.zeros((1, h, w), dtype=np.uint8))
    cog = tmp_path / "cog.tif"
    rasterio.shutil.copy(src, cog, driver="COG", BLOCKSIZE="64")
    with rasterio.open(cog) as ds:
        gdal_levels = len(ds.overviews(1))
    factors = overview_factors(w, h, 64)
    assert len(factors) == gdal_levels
    assert factors == [2**k for k in range(1, gdal_levels + 1)]


def cascade(x: np.ndarray, levels: int) -> list[np.ndarray]:
    out = []
    for _ in range(levels):
        x = reference_mode(x, IGNORE)
        out.append(x)
    return out


def test_class_cog_overviews_are_the_mode_cascade_and_options_hand_them_to_gdal(
    tmp_path: Path,
) -> None:
    grid = GeoBox(150, 97, POTSDAM_TF, rasterio.crs.CRS.from_epsg(32633))
    rng = np.random.default_rng(3)
    cls = rng.choice(
        np.array([0, 1, 4, IGNORE], dtype=np.uint8), size=(97, 150), p=[0.6, 0.2, 0.1, 0.1]
    )
    blocks = [(rasterio.windows.Window(0, 0, 150, 97), cls)]
    ours = write_classes(
        tmp_path / "ours.tif",
        blocks,
        geobox=grid,
        schema=POTSDAM,
        creation_options=(("BLOCKSIZE", "32"),),
    )
    valid, errors, warnings = cog_validate(str(ours))
    assert valid and not errors and not warnings
    expected = cascade(cls, 3)  # 150 -> 75 -> 38 -> 19: fits in one 32-pixel tile
    with rasterio.open(ours) as ds:
        assert ds.overviews(1) == [2, 4, 8]
        assert ds.colormap(1)[1] == (*POTSDAM.colours[1], 255)
        assert ds.nodata == IGNORE
    for i, level in enumerate(expected):
        with rasterio.open(ours, overview_level=i) as ov:
            assert np.array_equal(ov.read(1), level)
    # --co OVERVIEW_RESAMPLING=NEAREST: GDAL makes them, and they are not our modes
    nearest = write_classes(
        tmp_path / "nearest.tif",
        blocks,
        geobox=grid,
        schema=POTSDAM,
        creation_options=(("BLOCKSIZE", "32"), ("OVERVIEW_RESAMPLING", "NEAREST")),
    )
    with rasterio.open(nearest, overview_level=0) as ov:
        assert not np.array_equal(ov.read(1), expected[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "nearest.qml",
        "nearest.tif",
        "nearest.tif.aux.xml",
        "ours.qml",
        "ours.tif",
        "ours.tif.aux.xml",
    ]
