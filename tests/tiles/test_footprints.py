"""Building footprints -> the contact target of a tile store (``geoseg tile --footprints``)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from geoseg.errors import InputError, OutputExistsError
from geoseg.options import TileOptions
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from geoseg.tiles import read_chip, read_chip_targets, read_store, tile_scenes
from geoseg.tiles._footprints import contact_band
from tests.conftest import write_raster

TF = Affine(0.1, 0, 366000.0, 0, -0.1, 5808000.0)  # 10 cm pixels
CRS = "EPSG:32633"
H, W = 120, 160
# (row0, row1, col0, col1) in pixels: A and B share the wall at column 60, C stands alone
BUILDINGS = {"A": (30, 80, 20, 60), "B": (30, 80, 60, 100), "C": (90, 115, 120, 150)}
WIDTH = 0.5  # metres: 5 pixels


def box(r0: int, r1: int, c0: int, c1: int) -> shapely.Geometry:
    x0, y0 = TF @ (c0, r1)
    x1, y1 = TF @ (c1, r0)
    return shapely.box(x0, y0, x1, y1)


def footprints(path: Path, *, crs: str | None = CRS, layer: str = "buildings") -> Path:
    gdf = gpd.GeoDataFrame(
        {"name": list(BUILDINGS)},
        geometry=[box(*b) for b in BUILDINGS.values()],
        crs=CRS,
    )
    if crs is not None and crs != CRS:
        gdf = gdf.to_crs(crs)
    elif crs is None:
        gdf = gdf.set_crs(None, allow_override=True)
    driver = "GeoJSON" if path.suffix == ".geojson" else "GPKG"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        gdf.to_file(path, layer=layer, driver=driver, engine="pyogrio")
    return path


def scene(tmp_path: Path, *, nodata_rows: slice | None = None, crs: str | None = CRS) -> SceneSpec:
    rng = np.random.default_rng(0)
    lab = np.zeros((H, W), np.uint8)
    for r0, r1, c0, c1 in BUILDINGS.values():
        lab[r0:r1, c0:c1] = 1
    img = rng.integers(1, 255, (3, H, W), dtype=np.uint8)
    if nodata_rows is not None:
        img[:, nodata_rows] = 0
    ip = write_raster(tmp_path / "img.tif", img, transform=TF, crs=crs, nodata=0)
    lp = write_raster(tmp_path / "lab.tif", POTSDAM.encode(lab), transform=TF, crs=crs)
    return SceneSpec("s", ip, labels=lp)


def whole_scene_contact(store: Path) -> np.ndarray:
    """The contact band of a store of one chip covering the whole scene."""
    _, index = read_store(store)
    assert len(index) == 1
    chip = read_chip_targets(store / index.iloc[0].path)
    assert chip.contact is not None
    return chip.contact[:H, :W]


def test_contact_band_lies_where_two_footprints_meet_and_nowhere_else(tmp_path: Path) -> None:
    spec = scene(tmp_path, nodata_rows=slice(0, 10))
    fp = footprints(tmp_path / "fp.gpkg")
    store = tmp_path / "store"
    opts = TileOptions(size=256, overlap=0, min_valid=0.1, footprints=fp, contact_width=WIDTH)
    rep = tile_scenes([spec], store, options=opts)
    contact = whole_scene_contact(store)
    assert set(np.unique(contact)) == {0, 1, 255}
    assert (contact[:10] == 255).all() and (contact[10:] != 255).all()  # nodata is ignored
    # expected: pixel centres within WIDTH of both A and B (off the buffer's rounded corners)
    rows, cols = np.mgrid[0:H, 0:W]
    x, y = TF @ (cols + 0.5, rows + 0.5)
    pts = shapely.points(x, y)
    da = shapely.distance(pts, box(*BUILDINGS["A"]))
    db = shapely.distance(pts, box(*BUILDINGS["B"]))
    sure = (da <= WIDTH - 0.02) & (db <= WIDTH - 0.02)
    never = (da > WIDTH + 0.02) | (db > WIDTH + 0.02)
    body = contact[10:] == 1
    assert body[sure[10:]].all()
    assert not body[never[10:]].any()
    # the band straddles the shared wall: 5 px on each side, along the wall's rows
    band_cols = np.nonzero(contact[50] == 1)[0]
    assert band_cols.tolist() == list(range(55, 65))
    assert not contact[85:, 110:].any()  # C touches no one
    assert int((contact == 1).sum()) > 400
    # recorded: tiles.json, the index column, the chip's band and tags
    meta, index = read_store(store)
    assert meta["contact"]["width_m"] == WIDTH and meta["contact"]["layer"] == "buildings"
    assert index["contact"].tolist() == [int((contact == 1).sum())]
    assert rep.contact_missing == 0
    data, lab, names = read_chip(store / index.iloc[0].path)  # plain readers: image bands only
    assert names == ["red", "green", "blue"] and data.shape[0] == 3 and lab is not None


def test_reprojected_footprints_give_the_same_band(tmp_path: Path) -> None:
    spec = scene(tmp_path)
    bands = []
    for name, fp in (
        ("utm", footprints(tmp_path / "fp.gpkg")),
        ("wgs84", footprints(tmp_path / "fp.geojson", crs="EPSG:4326")),
    ):
        opts = TileOptions(size=256, overlap=0, min_valid=0.1, footprints=fp, contact_width=WIDTH)
        tile_scenes([spec], tmp_path / name, options=opts)
        bands.append(whole_scene_contact(tmp_path / name))
    assert (bands[0] == 1).sum() > 400
    assert np.count_nonzero(bands[0] != bands[1]) <= 2  # vertices moved by ~1e-7 m


def test_contact_is_at_least_one_pixel_each_side_of_a_wall() -> None:
    a, b = box(*BUILDINGS["A"]), box(*BUILDINGS["B"])
    radius = 0.1  # one pixel: the floor of a width smaller than a pixel
    band = contact_band(np.array([a.buffer(radius), b.buffer(radius)]), TF, (H, W))
    assert np.nonzero(band[50])[0].tolist() == [59, 60]
    # a multipolygon is one building: its own parts are never contact with each other
    d = box(30, 80, 62, 100)  # 2 px from A
    apart = contact_band(np.array([a.buffer(0.2), d.buffer(0.2)]), TF, (H, W))
    assert np.nonzero(apart[50])[0].tolist() == [60, 61]  # the gap
    multi = shapely.union(a, d)
    assert multi.geom_type == "MultiPolygon"
    assert not contact_band(np.array([multi.buffer(0.2)]), TF, (H, W)).any()


def test_rerun_skips_complete_chips_and_a_store_without_contact_gains_it(tmp_path: Path) -> None:
    spec = scene(tmp_path)
    fp = footprints(tmp_path / "fp.gpkg")
    store = tmp_path / "store"
    plain = TileOptions(size=64, overlap=0, min_valid=0.1)
    first = tile_scenes([spec], store, options=plain)
    assert "contact" not in json.loads((store / "tiles.json").read_text())
    with_fp = TileOptions(size=64, overlap=0, min_valid=0.1, footprints=fp, contact_width=WIDTH)
    upgraded = tile_scenes([spec], store, options=with_fp)  # every chip is cut again
    assert upgraded.written == first.written and upgraded.skipped_existing == 0
    meta, index = read_store(store)
    assert meta["contact"]["width_m"] == WIDTH and (index["contact"] >= 0).all()
    assert index["contact"].sum() > 400
    again = tile_scenes([spec], store, options=with_fp)
    assert again.written == 0 and again.skipped_existing == first.written
    with pytest.raises(OutputExistsError, match="contact target.*--footprints"):
        tile_scenes([spec], store, options=plain)
    wider = TileOptions(size=64, overlap=0, min_valid=0.1, footprints=fp, contact_width=1.0)
    with pytest.raises(OutputExistsError, match="other options"):
        tile_scenes([spec], store, options=wider)


def test_layer_choice(tmp_path: Path) -> None:
    spec = scene(tmp_path)
    fp = footprints(tmp_path / "two.gpkg", layer="houses")
    footprints(fp, layer="sheds")
    opts = {"size": 256, "overlap": 0, "min_valid": 0.1, "contact_width": WIDTH}
    with pytest.raises(InputError, match="2 layers.*houses, sheds.*--footprints-layer"):
        tile_scenes([spec], tmp_path / "a", options=TileOptions(**opts, footprints=fp))
    with pytest.raises(InputError, match="no layer 'roofs'.*houses, sheds"):
        tile_scenes(
            [spec],
            tmp_path / "a",
            options=TileOptions(**opts, footprints=fp, footprints_layer="roofs"),
        )
    assert not (tmp_path / "a").exists()
    tile_scenes(
        [spec], tmp_path / "b", options=TileOptions(**opts, footprints=fp, footprints_layer="sheds")
    )
    assert read_store(tmp_path / "b")[0]["contact"]["layer"] == "sheds"
    one = footprints(tmp_path / "one.gpkg", layer="whatever")  # the only layer is taken
    tile_scenes([spec], tmp_path / "c", options=TileOptions(**opts, footprints=one))
    assert (whole_scene_contact(tmp_path / "c") == 1).sum() > 400


def _points(path: Path) -> Path:
    gpd.GeoDataFrame(geometry=[shapely.Point(366005, 5807995)], crs=CRS).to_file(
        path, layer="buildings", driver="GPKG", engine="pyogrio"
    )
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.gpkg", "footprints file not found"),
        (lambda d: _points(d / "points.gpkg"), "no polygon among its 1 feature"),
        (lambda d: footprints(d / "nocrs.gpkg", crs=None), "have no CRS"),
        (
            lambda d: (d / "junk.gpkg").write_text("not a geopackage") and d / "junk.gpkg",
            "cannot read footprints",
        ),
        (
            lambda d: (d / "junk.parquet").write_bytes(b"PAR1 nonsense") and d / "junk.parquet",
            "cannot read footprints",
        ),
    ],
)
def test_bad_footprints_fail_in_one_line_before_any_output(
    tmp_path: Path, make: object, message: str
) -> None:
    spec = scene(tmp_path)
    fp = make(tmp_path)  # type: ignore[operator]
    store = tmp_path / "store"
    with pytest.raises(InputError, match=message) as info:
        tile_scenes([spec], store, options=TileOptions(size=64, footprints=fp))
    assert "\n" not in str(info.value) and str(fp) in str(info.value)
    assert not store.exists()


def test_a_scene_without_crs_cannot_take_footprints(tmp_path: Path) -> None:
    spec = scene(tmp_path, crs=None)
    store = tmp_path / "store"
    with pytest.raises(InputError, match="no CRS"):
        tile_scenes(
            [spec], store, options=TileOptions(size=64, footprints=footprints(tmp_path / "f.gpkg"))
        )
    assert not store.exists()


def test_footprints_outside_every_scene_warn_and_give_no_contact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    spec = scene(tmp_path)
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(10, 0, 20, 10)], crs=CRS
    ).to_file(far, layer="buildings", engine="pyogrio")
    opts = TileOptions(size=256, overlap=0, min_valid=0.1, footprints=far)
    with caplog.at_level(logging.WARNING, logger="geoseg.tiles"):
        tile_scenes([spec], tmp_path / "store", options=opts)
    assert any("no footprint lies in any scene" in r.getMessage() for r in caplog.records)
    assert not (whole_scene_contact(tmp_path / "store") == 1).any()
