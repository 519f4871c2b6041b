"""COG writers: validity, colour table, class names (PAM), overviews, masks, never clobber."""

from __future__ import annotations

import ctypes
import glob
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from geoseg.errors import OutputExistsError
from geoseg.grid import GeoBox
from geoseg.raster import class_pam_xml, write_classes, write_probabilities
from geoseg.schema import IGNORE, POTSDAM
from tests.conftest import POTSDAM_TF

GRID = GeoBox(1100, 1030, POTSDAM_TF, rasterio.crs.CRS.from_epsg(32633))


def blocks_of(arr: np.ndarray, step: int = 400):
    h, w = arr.shape[-2:]
    for r in range(0, h, step):
        for c in range(0, w, step):
            win = Window(c, r, min(step, w - c), min(step, h - r))
            yield win, arr[..., r : r + win.height, c : c + win.width]


def mode_pattern() -> np.ndarray:
    """Each 2x2 cell holds three 2s and one 5 (rotating position): the mode is always 2,
    nearest sampling would sometimes give 5, averaging would give 3."""
    cls = np.full((GRID.height, GRID.width), 2, dtype=np.uint8)
    rr, cc = np.mgrid[0 : GRID.height : 2, 0 : GRID.width : 2]
    k = (rr // 2 + cc // 2) % 4
    cls[rr + k // 2, cc + k % 2] = 5
    return cls


def gdal_category_names(path: Path) -> list[str] | None:
    """Category names as GDAL itself reads them (rasterio has no API), or None without libgdal."""
    libs = glob.glob(os.path.join(os.path.dirname(rasterio.__file__) + ".libs", "libgdal*.so*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterNoDataValue.restype = ctypes.c_double
    lib.GDALGetRasterNoDataValue.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    ds = lib.GDALOpen(str(path).encode(), 0)
    assert ds
    band = lib.GDALGetRasterBand(ds, 1)
    lib.GDALGetRasterNoDataValue(band, None)  # as QGIS does on open (loads the PAM sidecar)
    arr = lib.GDALGetRasterCategoryNames(band)
    names = []
    if ctypes.cast(arr, ctypes.c_void_p).value:
        i = 0
        while arr[i]:
            names.append(arr[i].decode())
            i += 1
    lib.GDALClose(ds)
    return names


def test_class_cog_is_valid_with_colours_names_mode_overviews_and_tags(tmp_path: Path) -> None:
    cls = mode_pattern()
    cls[:10, :] = IGNORE
    out = write_classes(
        tmp_path / "a_classes.tif",
        blocks_of(cls),
        geobox=GRID,
        schema=POTSDAM,
        tags={"GEOSEG_MODEL_SHA256": "abc"},
    )
    valid, errors, warnings = cog_validate(str(out))
    assert valid and not errors and not warnings
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.crs, ds.transform) == (
            GRID.width,
            GRID.height,
            GRID.crs,
            GRID.transform,
        )
        assert ds.dtypes[0] == "uint8" and ds.nodata == IGNORE
        assert ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) == [2, 4]
        assert np.array_equal(ds.read(1), cls)
        cmap = ds.colormap(1)
        for i, colour in enumerate(POTSDAM.colours):
            assert cmap[i] == (*colour, 255)
        assert cmap[IGNORE][3] == 0
        assert ds.tags()["GEOSEG_MODEL_SHA256"] == "abc"
        assert ds.descriptions == ("class",)
    with rasterio.open(out, overview_level=0) as ov:
        o = ov.read(1)
    assert np.all(o[5:, :] == 2)  # MODE: never the 5 nearest would pick, never an average
    aux = Path(str(out) + ".aux.xml")
    root = ET.parse(aux).getroot()
    assert [c.text for c in root.iter("Category")] == list(POTSDAM.classes)
    rows = root.findall(".//GDALRasterAttributeTable/Row")
    assert [r.findall("F")[1].text for r in rows] == list(POTSDAM.classes)
    names = gdal_category_names(out)
    if names is not None:
        assert names == list(POTSDAM.classes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a_classes.qml",
        "a_classes.tif",
        "a_classes.tif.aux.xml",
    ]


def test_probability_cog_has_band_names_and_a_mask(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    probs = rng.integers(0, 256, (6, GRID.height, GRID.width), dtype=np.uint8)
    valid = np.ones((GRID.height, GRID.width), dtype=bool)
    valid[100:200, 300:700] = False
    probs[:, ~valid] = 0
    out = write_probabilities(
        tmp_path / "a_probs.tif",
        ((w, p, v) for (w, p), (_, v) in zip(blocks_of(probs), blocks_of(valid), strict=True)),
        geobox=GRID,
        schema=POTSDAM,
    )
    ok, errors, _ = cog_validate(str(out))
    assert ok and not errors
    with rasterio.open(out) as ds:
        assert ds.descriptions == POTSDAM.classes
        assert np.array_equal(ds.read(), probs)
        assert np.array_equal(ds.dataset_mask() > 0, valid)
        assert ds.nodata is None


def test_uncovered_pixels_are_nodata(tmp_path: Path) -> None:
    part = np.zeros((400, 400), dtype=np.uint8)
    out = write_classes(
        tmp_path / "c.tif", [(Window(0, 0, 400, 400), part)], geobox=GRID, schema=POTSDAM
    )
    with rasterio.open(out) as ds:
        a = ds.read(1)
    assert np.all(a[:400, :400] == 0) and np.all(a[400:, :] == IGNORE)


def test_never_clobbers_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    cls = np.zeros((GRID.height, GRID.width), dtype=np.uint8)
    path = tmp_path / "x.tif"
    write_classes(path, blocks_of(cls), geobox=GRID, schema=POTSDAM)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="x.tif"):
        write_classes(path, blocks_of(cls + 1), geobox=GRID, schema=POTSDAM)
    assert path.read_bytes() == before

    def broken():
        yield from list(blocks_of(cls))[:2]
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_classes(path, broken(), geobox=GRID, schema=POTSDAM, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.qml", "x.tif", "x.tif.aux.xml"]
    write_classes(path, blocks_of(cls + 1), geobox=GRID, schema=POTSDAM, overwrite=True)
    with rasterio.open(path) as ds:
        assert np.all(ds.read(1) == 1)


def test_pam_xml_lists_every_class() -> None:
    root = ET.fromstring(class_pam_xml(POTSDAM))
    band = root.find("PAMRasterBand")
    assert band is not None and band.get("band") == "1"
    usages = [int(f.findtext("Usage") or -1) for f in root.iter("FieldDefn")]
    assert usages == [5, 2, 6, 7, 8]  # GFU_MinMax, GFU_Name, GFU_Red, GFU_Green, GFU_Blue
