"""Hostile rasters given to ``tile``, ``predict``, ``vectorize`` and ``evaluate`` (issue 11).

Refused, as ONE line naming the file, a non-zero exit, no traceback and an unchanged tree:
files that are not rasters (zero bytes, text named .tif, a folder named .tif), a truncated
GeoTIFF, a GeoTIFF with a corrupt block (found by a worker process of ``vectorize``), images
without a CRS (PNG and JPEG exports have none: refused like any other), rotated or sheared
image grids (chips, footprints and blocks are axis-aligned windows), wrong band counts and
dtypes, a DSM that does not overlap the image, labels of another size.

Accepted, end to end: int16, uint16 and float64 satellite images; ±inf in a DSM (those pixels
invalid); label colours outside the schema (warned and counted); labels in a PNG without
georeferencing (the image's size: the image's grid); a rotated class raster (``vectorize``
writes polygons through the full transform, ``evaluate`` compares grids by their corners);
rasters without a CRS in ``vectorize`` and ``evaluate`` (one warning in geoseg's words, and no
third-party warning: the suite turns warnings into errors).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.schema import POTSDAM
from tests.conftest import POTSDAM_TF, write_raster
from tests.hostile.helpers import fails_cleanly, run, snapshot
from tests.predict.helpers import save_tiny_checkpoint
from tests.vectorize.helpers import corrupt_first_tile

H = W = 96
ROTATED = POTSDAM_TF @ Affine.rotation(20)
SHEARED = POTSDAM_TF @ Affine.shear(10, 0)


def _write_gdal(path: Path, data: np.ndarray, driver: str) -> Path:
    """A raster in a format without georeferencing (PNG, JPEG), as an export tool writes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver=driver,
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype,
        ) as ds:
            ds.write(data)
    return path


def _truncated(path: Path, src: Path) -> Path:
    raw = src.read_bytes()
    path.write_bytes(raw[: len(raw) * 6 // 10])
    return path


@dataclass
class Files:
    """Every input, written once for the module."""

    root: Path
    img: Path
    ckpt: Path
    classes: Path

    def __getitem__(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(11)
    rgb = rng.integers(1, 256, (3, H, W)).astype(np.uint8)
    img = write_raster(root / "img.tif", rgb)
    # Not rasters.
    (root / "zero.tif").write_bytes(b"")
    (root / "text.tif").write_text("this is not a raster\n")
    (root / "folder.tif").mkdir()
    big = write_raster(
        root / "big.tif",
        rng.integers(1, 256, (3, 256, 256)).astype(np.uint8),
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    _truncated(root / "truncated.tif", big)
    _write_gdal(root / "export.png", rgb, "PNG")
    _write_gdal(root / "export.jpg", rgb, "JPEG")
    # Grids and bands.
    write_raster(root / "nocrs.tif", rgb, crs=None, transform=None)
    write_raster(root / "rotated.tif", rgb, transform=ROTATED)
    write_raster(root / "sheared.tif", rgb, transform=SHEARED)
    write_raster(root / "two_bands.tif", rgb[:2])
    write_raster(root / "int16.tif", rng.integers(-200, 3000, (3, H, W)).astype(np.int16))
    write_raster(root / "uint16.tif", rng.integers(0, 12000, (3, H, W)).astype(np.uint16))
    write_raster(root / "float64.tif", rng.random((3, H, W)))
    dsm = (30 + 5 * rng.random((H, W))).astype(np.float32)
    write_raster(root / "dsm3.tif", np.stack([dsm] * 3))
    far = Affine.translation(13.0, 52.0) @ Affine.scale(1e-5, -1e-5)  # Berlin, EPSG:4326
    write_raster(root / "dsm_far.tif", dsm, transform=far, crs="EPSG:4326")
    inf = dsm.copy()
    inf[0, :10] = np.inf
    inf[1, :10] = -np.inf
    write_raster(root / "dsm_inf.tif", inf)
    # Labels.
    truth = rng.integers(0, 6, (H, W)).astype(np.uint8)
    colours = POTSDAM.encode(truth)
    write_raster(root / "labels_small.tif", colours[:, : H - 8], crs=None, transform=None)
    write_raster(root / "labels_2band.tif", colours[:2])
    foreign = colours.copy()
    foreign[:, :5, :5] = 77  # a grey not in the Potsdam schema
    write_raster(root / "labels_foreign.tif", foreign)
    _write_gdal(root / "labels.png", colours, "PNG")
    # Class rasters.
    classes = write_raster(root / "classes.tif", truth, nodata=255)
    write_raster(root / "classes_other_size.tif", truth[:-4], nodata=255)
    write_raster(root / "classes_nocrs.tif", truth, crs=None, transform=None, nodata=255)
    write_raster(root / "classes_rotated.tif", truth, transform=ROTATED, nodata=255)
    write_raster(root / "classes_float.tif", truth.astype(np.float32))
    write_raster(root / "classes_rgb.tif", colours)
    _write_gdal(root / "classes.png", truth[None], "PNG")
    blocks = np.zeros((768, 768), np.uint8)
    blocks[100:600, 100:600] = 1
    write_raster(
        root / "big_classes.tif",
        blocks,
        nodata=255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    _truncated(root / "classes_truncated.tif", root / "big_classes.tif")
    corrupt = write_raster(
        root / "classes_corrupt.tif",
        blocks,
        nodata=255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    corrupt_first_tile(corrupt)
    corrupt_img = write_raster(
        root / "corrupt.tif",
        rng.integers(1, 256, (3, 512, 512)).astype(np.uint8),
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    corrupt_first_tile(corrupt_img)
    ckpt = save_tiny_checkpoint(root / "tiny.pt")
    return Files(root=root, img=img, ckpt=ckpt, classes=classes)


# -- tile ----------------------------------------------------------------------------------


def _tile(out: Path, *args: object) -> list[object]:
    return ["tile", *args, "-o", out / "tiles", "--size", 64]


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("zero.tif", "not a readable raster"),
        ("text.tif", "not a readable raster"),
        ("truncated.tif", "truncated or corrupt"),
        ("export.png", "has no CRS"),
        ("export.jpg", "has no CRS"),
        ("nocrs.tif", "has no CRS"),
        ("two_bands.tif", "found 2"),
    ],
)
def test_tile_refuses_an_unusable_image(
    files: Files, tmp_path: Path, image: str, says: str
) -> None:
    f = fails_cleanly(*_tile(tmp_path, "--image", files[image]), watch=tmp_path, code=1)
    assert str(files[image]) in f.message and says in f.message


@pytest.mark.parametrize(
    ("image", "terms"),
    [("rotated.tif", "(b=-0.017101, d=-0.017101)"), ("sheared.tif", "(b=0.00881635, d=0)")],
)
def test_tile_refuses_a_rotated_or_sheared_image_up_front(
    files: Files, tmp_path: Path, image: str, terms: str
) -> None:
    """Regression (issue 11, class 3): exit 0 and every footprint wrong (half the area)."""
    f = fails_cleanly(
        *_tile(tmp_path, "--image", files[image]), watch=tmp_path, code=1, names=str(files[image])
    )
    assert f"rotated or sheared geotransform {terms} is not supported" in f.message
    assert f"gdalwarp {files[image]} out.tif" in f.message


def test_tile_refuses_a_folder_named_tif(files: Files, tmp_path: Path) -> None:
    fails_cleanly(*_tile(tmp_path, files["folder.tif"]), watch=tmp_path, names="folder.tif")


@pytest.mark.parametrize(
    ("option", "name", "says"),
    [
        ("--dsm", "dsm3.tif", "must have 1 band, this file has 3"),
        ("--dsm", "dsm_far.tif", "does not overlap the image"),
        ("--dsm", "zero.tif", "not a readable raster"),
        ("--labels", "labels_small.tif", "differs from the image's 96x96"),
        ("--labels", "labels_2band.tif", "labels must be uint8 with 1 band"),
        ("--labels", "truncated.tif", "truncated or corrupt"),
    ],
)
def test_tile_refuses_an_unusable_dsm_or_label_file(
    files: Files, tmp_path: Path, option: str, name: str, says: str
) -> None:
    f = fails_cleanly(
        *_tile(tmp_path, "--image", files.img, option, files[name]),
        watch=tmp_path,
        code=1,
        names=str(files[name]),
    )
    assert says in f.message


@pytest.mark.parametrize("image", ["int16.tif", "uint16.tif", "float64.tif"])
def test_tile_takes_satellite_dtypes(files: Files, tmp_path: Path, image: str) -> None:
    rc, out, exc = run(*_tile(tmp_path, "--image", files[image]))
    assert (rc, exc) == (0, None), out
    chips = sorted((tmp_path / "tiles").rglob("*.tif"))
    assert len(chips) == 4
    with rasterio.open(files[image]) as src, rasterio.open(chips[0]) as chip:
        want = src.read(window=chip.window(*chip.bounds)).astype(np.float32)
        np.testing.assert_array_equal(chip.read()[:3], want)


def test_tile_marks_infinite_heights_invalid(files: Files, tmp_path: Path) -> None:
    rc, out, exc = run(*_tile(tmp_path, "--image", files.img, "--dsm", files["dsm_inf.tif"]))
    assert (rc, exc) == (0, None), out
    first = next((tmp_path / "tiles").rglob("*_r0_c0.tif"))
    with rasterio.open(first) as chip:
        data, mask = chip.read(), chip.read_masks(1)
    assert np.isfinite(data).all()
    assert (mask[:2, :10] == 0).all() and (mask[2:, :] == 255).all()


def test_tile_warns_and_counts_foreign_label_colours(
    files: Files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        rc, out, exc = run(
            *_tile(tmp_path, "--image", files.img, "--labels", files["labels_foreign.tif"])
        )
    assert (rc, exc) == (0, None), out
    assert any("25 label pixels had colours not in schema" in m for m in caplog.messages)


def test_tile_takes_png_labels_without_georeferencing(files: Files, tmp_path: Path) -> None:
    rc, out, exc = run(*_tile(tmp_path, "--image", files.img, "--labels", files["labels.png"]))
    assert (rc, exc) == (0, None), out


# -- predict -------------------------------------------------------------------------------


def _predict(files: Files, out: Path, image: Path) -> list[object]:
    return ["predict", "--image", image, "-m", files.ckpt, "-o", out / "maps", "--device", "cpu"]


@pytest.mark.parametrize(
    ("image", "says"),
    [
        ("zero.tif", "not a readable raster"),
        ("truncated.tif", "truncated or corrupt"),
        ("export.png", "has no CRS"),
        ("rotated.tif", "rotated or sheared geotransform"),
        ("sheared.tif", "rotated or sheared geotransform"),
    ],
)
def test_predict_refuses_an_unusable_image(
    files: Files, tmp_path: Path, image: str, says: str
) -> None:
    f = fails_cleanly(
        *_predict(files, tmp_path, files[image]), watch=tmp_path, code=1, names=str(files[image])
    )
    assert says in f.message


def test_predict_a_corrupt_block_is_one_line(files: Files, tmp_path: Path) -> None:
    """The read fails in a Dask task; its InputError comes back as itself.

    It came back as ``Exception: InputError('...``, cut: Dask could not pickle the GDAL error
    chained to it.
    """
    src = files["corrupt.tif"]
    f = fails_cleanly(*_predict(files, tmp_path, src), watch=tmp_path, code=1, names=str(src))
    assert "failed in block (0, 0): " in f.message and "InputError(" not in f.message
    assert "reading pixels failed (corrupt.tif, band 1: IReadBlock failed" in f.message


@pytest.mark.parametrize("image", ["int16.tif", "uint16.tif", "float64.tif"])
def test_predict_takes_satellite_dtypes(files: Files, tmp_path: Path, image: str) -> None:
    rc, out, exc = run(*_predict(files, tmp_path, files[image]))
    assert (rc, exc) == (0, None), out
    with rasterio.open(tmp_path / "maps" / f"{Path(image).stem}_classes.tif") as ds:
        assert ds.shape == (H, W) and ds.transform == POTSDAM_TF
        assert ds.read(1).max() < len(POTSDAM.classes)


# -- vectorize -----------------------------------------------------------------------------


def _vectorize(out: Path, src: Path, *args: object) -> list[object]:
    return ["vectorize", src, "-o", out / "out.gpkg", *args]


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("zero.tif", "not a readable raster"),
        ("text.tif", "not a readable raster"),
        ("classes_truncated.tif", "truncated or corrupt"),
        ("classes_float.tif", "expected a 1-band uint8 class raster"),
        ("classes_rgb.tif", "expected a 1-band uint8 class raster"),
    ],
)
def test_vectorize_refuses_an_unusable_class_raster(
    files: Files, tmp_path: Path, name: str, says: str
) -> None:
    f = fails_cleanly(*_vectorize(tmp_path, files[name]), watch=tmp_path, code=1)
    assert str(files[name]) in f.message and says in f.message


def test_vectorize_refuses_a_folder_named_tif(files: Files, tmp_path: Path) -> None:
    fails_cleanly(
        *_vectorize(tmp_path, files["folder.tif"]), watch=tmp_path, code=2, names="folder.tif"
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_vectorize_a_corrupt_block_is_one_line_and_leaves_nothing(
    files: Files, tmp_path: Path, workers: int
) -> None:
    """Regression (issue 11, class 5): a 68-line _RemoteTraceback from a worker process.

    The last block reads, so the file passes the up-front check; the first block fails in
    a worker (or in-process with --workers 1), half-way through the GeoPackage.
    """
    src = files["classes_corrupt.tif"]
    f = fails_cleanly(
        *_vectorize(tmp_path, src, "--block-size", 256, "--workers", workers),
        watch=tmp_path,
        code=1,
        names=str(src),
    )
    assert "reading pixels at column 0, row 0 failed" in f.message
    assert "truncated or corrupt" in f.message


@pytest.mark.parametrize("workers", [1, 2])
def test_vectorize_without_crs_says_so_once_in_its_own_words(
    files: Files,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    workers: int,
) -> None:
    """Regression (issue 11, class 7): rasterio's and pyogrio's warnings reached the user.

    Warnings are errors in this suite: any third-party warning fails the command here; worker
    processes print theirs on the standard error, which must stay empty.
    """
    src = files["classes_nocrs.tif"]
    with caplog.at_level(logging.WARNING):
        rc, out, exc = run(*_vectorize(tmp_path, src, "--workers", workers, "--block-size", 48))
    assert (rc, exc) == (0, None), out
    assert capfd.readouterr().err == ""
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in said] == ["geoseg.vectorize"], caplog.text
    msg = said[0].getMessage()
    assert msg.startswith(f"{src}: the raster has no CRS; polygons are written in pixel")
    assert "gdal_edit.py -a_srs EPSG:xxxx" in msg
    assert pyogrio.read_info(tmp_path / "out.gpkg", layer="buildings")["crs"] is None


def test_vectorize_takes_a_png_class_raster(files: Files, tmp_path: Path) -> None:
    rc, out, exc = run(*_vectorize(tmp_path, files["classes.png"]))
    assert (rc, exc) == (0, None), out


def test_vectorize_a_rotated_raster_gives_rotated_polygons(files: Files, tmp_path: Path) -> None:
    args = ("--classes", "building", "--min-building-area", "0")  # every pixel, however small
    rc, out, exc = run(*_vectorize(tmp_path, files["classes_rotated.tif"], *args))
    assert (rc, exc) == (0, None), out
    polys = pyogrio.read_dataframe(tmp_path / "out.gpkg", layer="buildings").geometry.values
    with rasterio.open(files["classes_rotated.tif"]) as ds:
        n_building = int((ds.read(1) == POTSDAM.index("building")).sum())
    px_area = abs(ROTATED.determinant)
    assert shapely.area(polys).sum() == pytest.approx(n_building * px_area, rel=1e-9)
    # Vertices are the transformed pixel corners: back in pixels they are integers.
    px = shapely.get_coordinates(shapely.transform(polys, lambda xy: _inverse(xy, ROTATED)))
    np.testing.assert_allclose(px, np.round(px), atol=1e-6)


def _inverse(xy: np.ndarray, t: Affine) -> np.ndarray:
    inv = ~t
    return np.stack(
        [inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c, inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f],
        axis=1,
    )


# -- evaluate ------------------------------------------------------------------------------


def _evaluate(out: Path, pred: Path, truth: Path) -> list[object]:
    return ["evaluate", pred, truth, "--json", out / "metrics.json"]


@pytest.mark.parametrize(
    ("pred", "truth", "culprit", "says"),
    [
        ("zero.tif", "classes.tif", "zero.tif", "not a readable raster"),
        ("text.tif", "classes.tif", "text.tif", "not a readable raster"),
        ("classes.tif", "classes_truncated.tif", "classes_truncated.tif", "truncated or corrupt"),
        ("classes_float.tif", "classes.tif", "classes_float.tif", "not an integer class raster"),
        ("classes.tif", "classes_other_size.tif", "classes_other_size.tif", "96x92 px"),
        ("classes_rotated.tif", "classes.tif", "classes_rotated.tif", "not on the same grid"),
    ],
)
def test_evaluate_refuses_unusable_rasters(
    files: Files, tmp_path: Path, pred: str, truth: str, culprit: str, says: str
) -> None:
    f = fails_cleanly(
        *_evaluate(tmp_path, files[pred], files[truth]),
        watch=tmp_path,
        code=1,
        names=str(files[culprit]),
    )
    assert says in f.message


def test_evaluate_a_corrupt_truth_block_names_the_truth_alone(files: Files, tmp_path: Path) -> None:
    big = files["big_classes.tif"]
    src = files["classes_corrupt.tif"]
    f = fails_cleanly(
        *_evaluate(tmp_path, big, src), "--block-size", 256, watch=tmp_path, code=1, names=str(src)
    )
    assert str(big) not in f.message and "truncated or corrupt" in f.message


def test_evaluate_rotated_rasters_on_one_grid(files: Files, tmp_path: Path) -> None:
    rot = files["classes_rotated.tif"]
    rc, out, exc = run(*_evaluate(tmp_path, rot, rot))
    assert (rc, exc) == (0, None), out
    assert "mIoU                   100.00" in out


def test_evaluate_without_georeferencing_says_so_once(
    files: Files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = files["classes_nocrs.tif"]
    before = snapshot(files.root)
    with caplog.at_level(logging.WARNING):
        rc, out, exc = run(*_evaluate(tmp_path, src, files.classes))
    assert (rc, exc) == (0, None), out
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in said] == ["geoseg.evaluate"], caplog.text
    assert said[0].getMessage().startswith(f"{src}: the prediction has no georeferencing")
    assert snapshot(files.root) == before  # nothing written beside the inputs (no .aux.xml)
