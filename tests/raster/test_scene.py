"""Scenes: sources aligned onto the image grid, boundless reads, validity, band names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.warp import transform as warp_transform
from rasterio.windows import Window

from geoseg.errors import BandMismatchError, CRSMismatchError, GridMismatchError, InputError
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from tests.conftest import POTSDAM_TF, real_data, write_raster

H, W = 120, 160


def linear_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A DSM known everywhere: a plane in map coordinates (bilinear resampling is exact on it)."""
    return (40.0 + 0.5 * (x - 366000.0) - 0.25 * (5808000.0 - y)).astype(np.float32)


def pixel_centres(tf: Affine, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:h, 0:w]
    xs = tf.c + (cols + 0.5) * tf.a
    ys = tf.f + (rows + 0.5) * tf.e
    return xs, ys


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "img.tif", rng.integers(1, 255, (4, H, W), dtype=np.uint8))


def expected_dsm() -> np.ndarray:
    return linear_height(*pixel_centres(POTSDAM_TF, H, W))


def read_dsm(image: Path, dsm: Path) -> tuple[np.ndarray, np.ndarray]:
    with SceneSpec("s", image, dsm=dsm).open() as sc:
        blk = sc.read(Window(0, 0, W, H), bands=["dsm"])
    return blk.data[0], blk.valid


def test_equal_grid_reads_directly(image: Path, tmp_path: Path) -> None:
    dsm = write_raster(tmp_path / "dsm.tif", expected_dsm())
    data, valid = read_dsm(image, dsm)
    assert valid.all()
    np.testing.assert_array_equal(data, expected_dsm())


def test_dsm_one_pixel_narrower_is_aligned_not_stretched(image: Path, tmp_path: Path) -> None:
    # Potsdam 03_13: same origin and resolution, one column fewer.
    dsm = write_raster(tmp_path / "dsm.tif", expected_dsm()[:, : W - 1])
    data, valid = read_dsm(image, dsm)
    assert not valid[:, W - 1].any()
    assert valid[:, : W - 1].all()
    np.testing.assert_array_equal(data[:, : W - 1], expected_dsm()[:, : W - 1])


def test_dsm_with_whole_pixel_offset(image: Path, tmp_path: Path) -> None:
    # The DSM starts 3 px right of and 2 px below the image's origin and is larger.
    tf = POTSDAM_TF @ Affine.translation(3, 2)
    dsm = write_raster(
        tmp_path / "dsm.tif", linear_height(*pixel_centres(tf, H + 10, W + 10)), transform=tf
    )
    data, valid = read_dsm(image, dsm)
    assert not valid[:2].any() and not valid[:, :3].any()
    assert valid[2:, 3:].all()
    np.testing.assert_allclose(data[2:, 3:], expected_dsm()[2:, 3:], atol=1e-4)


def test_dsm_other_resolution_is_resampled(image: Path, tmp_path: Path) -> None:
    # 10 cm DSM covering the image with a margin; bilinear of a plane is the plane.
    tf = Affine(0.1, 0, 366000.0 - 1.0, 0, -0.1, 5808000.0 + 1.0)
    dsm = write_raster(
        tmp_path / "dsm.tif",
        linear_height(*pixel_centres(tf, H // 2 + 20, W // 2 + 20)),
        transform=tf,
    )
    data, valid = read_dsm(image, dsm)
    assert valid.all()
    np.testing.assert_allclose(data, expected_dsm(), atol=1e-3)


def test_dsm_in_another_crs_is_reprojected(image: Path, tmp_path: Path) -> None:
    # A geographic DSM (EPSG:4326) whose values are the plane in UTM 33N coordinates.
    left, bottom, right, top = (
        366000.0 - 5,
        5808000.0 - H * 0.05 - 5,
        366000.0 + W * 0.05 + 5,
        5808000.0 + 5,
    )
    xs, ys = warp_transform("EPSG:32633", "EPSG:4326", [left, right], [bottom, top])
    res = 2e-7
    tf = Affine(res, 0, xs[0], 0, -res, ys[1])
    h, w = int((ys[1] - ys[0]) / res), int((xs[1] - xs[0]) / res)
    lon, lat = pixel_centres(tf, h, w)
    ux, uy = warp_transform("EPSG:4326", "EPSG:32633", lon.ravel(), lat.ravel())
    vals = linear_height(np.asarray(ux), np.asarray(uy)).reshape(h, w)
    dsm = write_raster(tmp_path / "dsm4326.tif", vals, transform=tf, crs="EPSG:4326")
    data, valid = read_dsm(image, dsm)
    assert valid.all()
    np.testing.assert_allclose(data, expected_dsm(), atol=0.02)


def test_dsm_not_overlapping_is_an_error(image: Path, tmp_path: Path) -> None:
    tf = POTSDAM_TF @ Affine.translation(10_000, 0)
    dsm = write_raster(tmp_path / "far.tif", expected_dsm(), transform=tf)
    with pytest.raises(GridMismatchError, match=r"far\.tif.*does not overlap"):
        SceneSpec("s", image, dsm=dsm).open()


def test_rotated_dsm_is_warped_onto_the_image_grid(image: Path, tmp_path: Path) -> None:
    """A rotated source is resampled like any other grid (only the image must be north-up)."""
    cx, cy = 366000.0 + W * 0.05 / 2, 5808000.0 - H * 0.05 / 2
    n = 400  # 20 m square turned 25 degrees about the image's centre: covers it
    tf = (
        Affine.translation(cx, cy)
        @ Affine.rotation(25)
        @ Affine.scale(0.05, -0.05)
        @ Affine.translation(-n / 2, -n / 2)
    )
    rows, cols = np.mgrid[0:n, 0:n] + 0.5
    xs = tf.a * cols + tf.b * rows + tf.c
    ys = tf.d * cols + tf.e * rows + tf.f
    dsm = write_raster(tmp_path / "dsm.tif", linear_height(xs, ys), transform=tf)
    data, valid = read_dsm(image, dsm)
    assert valid.all()
    # GDAL's bilinear warp of a turned grid is within 0.1 px here (0.005 m of height).
    np.testing.assert_allclose(data, expected_dsm(), atol=5e-3)


@pytest.mark.parametrize(
    ("transform", "terms"),
    [
        (POTSDAM_TF @ Affine.rotation(30), "(b=-0.025, d=-0.025)"),
        (POTSDAM_TF @ Affine.shear(0, 20), "(b=0, d=-0.0181985)"),
    ],
)
def test_rotated_or_sheared_image_is_refused(tmp_path: Path, transform: Affine, terms: str) -> None:
    """Chips, footprints and blocks are axis-aligned windows: wrong on such a grid (class 3)."""
    img = write_raster(tmp_path / "turned.tif", np.ones((3, 8, 8), np.uint8), transform=transform)
    with pytest.raises(InputError) as info:
        SceneSpec("s", img).open()
    assert str(info.value) == (
        f"{img}: rotated or sheared geotransform {terms} is not supported; warp it to a "
        f"north-up grid first, e.g. gdalwarp {img} out.tif"
    )


def test_a_negligible_rotation_term_is_north_up(tmp_path: Path) -> None:
    tf = Affine(0.05, 1e-15, 366000.0, -1e-15, -0.05, 5808000.0)  # rounding of a tool
    img = write_raster(tmp_path / "img.tif", np.ones((3, 8, 8), np.uint8), transform=tf)
    with SceneSpec("s", img).open() as sc:
        assert sc.read(Window(0, 0, 8, 8)).valid.all()


def test_image_without_crs_is_an_error(tmp_path: Path) -> None:
    img = write_raster(
        tmp_path / "nocrs.tif", np.ones((3, 8, 8), np.uint8), crs=None, transform=None
    )
    with pytest.raises(CRSMismatchError, match=r"nocrs\.tif.*no CRS"):
        SceneSpec("s", img).open()


def test_boundless_read_fills_and_marks_invalid(image: Path) -> None:
    with SceneSpec("s", image).open() as sc:
        blk = sc.read(Window(W - 10, H - 5, 20, 20))
        direct = sc.read(Window(W - 10, H - 5, 10, 5))
    assert blk.data.shape == (4, 20, 20)
    assert blk.valid[:5, :10].all() and not blk.valid[5:].any() and not blk.valid[:, 10:].any()
    assert (blk.data[:, ~blk.valid] == 0).all()
    np.testing.assert_array_equal(blk.data[:, :5, :10], direct.data)


def test_ir_tagged_alpha_is_read_as_data(tmp_path: Path) -> None:
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30, 0)])
    data[3, :4] = 200
    p = write_raster(tmp_path / "rgbir.tif", data, photometric="RGB")
    with rasterio.open(p, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with SceneSpec("s", p).open() as sc:
        assert sc.band_names == ("red", "green", "blue", "nir")
        blk = sc.read(Window(0, 0, 8, 8))
    assert blk.valid.all(), "IR of 0 must not mask pixels like an alpha band would"
    np.testing.assert_array_equal(blk.data[3], data[3])


def test_nodata_and_nan_make_pixels_invalid(tmp_path: Path) -> None:
    img = np.full((3, 10, 10), 50, np.uint8)
    img[:, 0, :] = 0  # nodata collar
    img[0, 5, 5] = 0  # one band 0 only: still valid (GDAL: nodata when all bands are)
    ip = write_raster(tmp_path / "img.tif", img, nodata=0)
    dsm = np.full((10, 10), 30.0, np.float32)
    dsm[9, 9] = np.nan
    dsm[8, 8] = -9999
    dp = write_raster(tmp_path / "dsm.tif", dsm, nodata=-9999)
    with SceneSpec("s", ip, dsm=dp).open() as sc:
        v = sc.read(Window(0, 0, 10, 10)).valid
        v_img = sc.read(Window(0, 0, 10, 10), bands=["red"]).valid
    assert not v[0].any() and v[5, 5]
    assert not v[9, 9] and not v[8, 8]
    assert v_img[9, 9] and v_img[8, 8], "validity only depends on the requested bands"


def test_infinite_image_values_are_invalid(tmp_path: Path) -> None:
    img = np.full((3, 6, 6), 0.5, np.float32)
    img[1, 2, 3] = np.inf
    img[0, 4, 4] = -np.inf
    img[2, 1, 1] = np.nan
    ip = write_raster(tmp_path / "img.tif", img)
    with SceneSpec("s", ip).open() as sc:
        blk = sc.read(Window(0, 0, 6, 6))
    bad = np.zeros((6, 6), bool)
    bad[2, 3] = bad[4, 4] = bad[1, 1] = True
    np.testing.assert_array_equal(blk.valid, ~bad)
    assert np.isfinite(blk.data).all() and (blk.data[:, bad] == 0).all()


def test_labels_colour_decoding_and_unknown_colours(image: Path, tmp_path: Path) -> None:
    idx = np.random.default_rng(1).integers(0, 6, (H, W)).astype(np.uint8)
    rgb = POTSDAM.encode(idx)
    rgb[:, :3, :] = 0  # black boundary pixels: not a class
    lp = write_raster(tmp_path / "lab.tif", rgb, crs=None, transform=None)
    with SceneSpec("s", image, labels=lp).open() as sc:
        lab, unknown = sc.read_labels(Window(0, 0, W, H))
    assert unknown == 3 * W
    assert (lab[:3] == 255).all()
    np.testing.assert_array_equal(lab[3:], idx[3:])


def test_ungeoreferenced_labels_of_other_size_are_an_error(image: Path, tmp_path: Path) -> None:
    lp = write_raster(
        tmp_path / "lab.tif", np.zeros((3, H, W - 1), np.uint8), crs=None, transform=None
    )
    with pytest.raises(GridMismatchError, match=r"lab\.tif.*no georeferencing.*size"):
        SceneSpec("s", image, labels=lp).open()


def test_band_names_from_option_and_mismatch(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "multi.tif", np.ones((5, 8, 8), np.float32))
    with pytest.raises(BandMismatchError, match="expected 3 .* or 4"):
        SceneSpec("s", p).open()
    with SceneSpec("s", p, image_bands=("red", "green", "blue", "nir", "dsm")).open() as sc:
        assert sc.band_names == ("red", "green", "blue", "nir", "dsm", "ndsm")
        with pytest.raises(BandMismatchError, match="lacks band"):
            sc.read(Window(0, 0, 2, 2), bands=["swir"])
    with pytest.raises(BandMismatchError, match="4 band names given"):
        SceneSpec("s", p, image_bands=("red", "green", "blue", "nir")).open()


def test_not_a_raster_and_truncated(tmp_path: Path, image: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_text("not a tiff")
    with pytest.raises(InputError, match=r"junk\.tif: not a readable raster"):
        SceneSpec("s", junk).open()
    big = write_raster(
        tmp_path / "big.tif",
        np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8),
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    cut = tmp_path / "cut.tif"
    cut.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    with pytest.raises(InputError, match=r"cut\.tif.*(truncated|not a readable)"):
        SceneSpec("s", cut).open()


def test_real_landsat_collar_is_invalid() -> None:
    path = real_data("rasterio_landsat7_rgb", "RGB.byte.tif")
    with SceneSpec("l", path).open() as sc, rasterio.open(path) as ds:
        blk = sc.read(Window(0, 0, ds.width, ds.height))
        np.testing.assert_array_equal(blk.valid, ds.dataset_mask() > 0)
