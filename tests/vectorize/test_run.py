"""geoseg.vectorize end to end (vectorize_raster): exact block merge, attributes, cleaning,
outputs."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
import shapely.affinity
from affine import Affine

from geoseg.errors import ConfigError, GridMismatchError, InputError, OutputExistsError
from geoseg.schema import POTSDAM
from geoseg.vectorize import VectorizeOptions, vectorize_raster
from tests.conftest import POTSDAM_TF, real_data, write_raster

BUILDING, ROAD, LOWVEG, TREE = 1, 0, 2, 3
PX = 0.05  # POTSDAM_TF pixel size (m)


def _read(path: Path, layer: str) -> np.ndarray:
    return pyogrio.read_dataframe(path, layer=layer).geometry.values


def _to_px(geoms: np.ndarray, tf: Affine = POTSDAM_TF) -> np.ndarray:
    inv = ~tf
    return shapely.transform(
        geoms,
        lambda xy: np.stack(
            [
                inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f,
            ],
            axis=1,
        ),
    )


def _scene(seed: int = 0, shape: tuple[int, int] = (1030, 1100)) -> np.ndarray:
    """Ground parcels, rectangles and speckle, plus hand-placed block-corner cases."""
    rng = np.random.default_rng(seed)
    h, w = shape
    a = np.full(shape, LOWVEG, np.uint8)
    for _ in range(120):
        r, c = rng.integers(0, h - 10), rng.integers(0, w - 10)
        hh, ww = rng.integers(4, 120, 2)
        a[r : r + hh, c : c + ww] = rng.choice([ROAD, BUILDING, TREE, 4, 5])
    noise = rng.random(shape) < 0.004
    a[noise] = rng.integers(0, 6, int(noise.sum()))
    # A building spanning the four blocks around (256, 256), with a hole on the corner.
    a[200:320, 190:330] = BUILDING
    a[250:262, 250:262] = TREE
    # Diagonal touches exactly at block corners (256-blocks and 1000-blocks).
    a[505:515, 505:515] = TREE
    a[511, 511] = BUILDING
    a[512, 512] = BUILDING  # only a corner in common with (511, 511): two polygons
    a[767, 767] = BUILDING
    a[768, 768] = BUILDING
    a[767, 768] = ROAD
    a[768, 767] = ROAD  # checkerboard on a block corner
    a[995:1005, 995:1005] = BUILDING
    a[999, 1000] = TREE
    a[1000, 999] = TREE  # a building pinched at the 1000-block corner
    # A road snaking over many blocks.
    a[600:612, 0:1100] = ROAD
    a[0:1030, 700:712] = ROAD
    a[5:15, 5:15] = 255  # nodata
    return a


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    a = _scene()
    path = tmp_path_factory.mktemp("scene") / "classes.tif"
    write_raster(path, a, nodata=255, tiled=True, blockxsize=256, blockysize=256)
    return path, a


def _run(src: Path, out: Path, **kw: object) -> dict[str, int]:
    # these tests check the polygons against the pixels: every building, however small
    kw.setdefault("min_building_area", 0.0)
    rep = vectorize_raster(src, out, options=VectorizeOptions(**kw))  # type: ignore[arg-type]
    return rep.layers


def _reference(a: np.ndarray, cls: int) -> np.ndarray:
    """Whole-raster 4-connected polygonization: the oracle the blocks must reproduce."""
    mask = a == cls
    geoms = [
        shapely.geometry.shape(g)
        for g, _ in rasterio.features.shapes(a, mask=mask, connectivity=4, transform=POTSDAM_TF)
    ]
    return np.asarray(geoms, dtype=object)


def _same(x: np.ndarray, y: np.ndarray) -> tuple[int, int, float]:
    ux, uy = shapely.union_all(x), shapely.union_all(y)
    return len(x), len(y), shapely.symmetric_difference(ux, uy).area


@pytest.mark.parametrize("simplify", [0.0, 0.1])
def test_block_size_independence(
    scene_tif: tuple[Path, np.ndarray], tmp_path: Path, simplify: float
) -> None:
    src, a = scene_tif
    results = {}
    for bs in (256, 1000, 4096):  # 4096: the whole raster in one block
        out = tmp_path / f"b{bs}.gpkg"
        _run(src, out, block_size=bs, simplify=simplify)
        results[bs] = {layer: _read(out, layer) for layer in ("buildings", "roads")}
    for layer in ("buildings", "roads"):
        whole = results[4096][layer]
        assert shapely.is_valid(whole).all()
        for bs in (256, 1000):
            part = results[bs][layer]
            n1, n2, sym = _same(whole, part)
            assert n1 == n2 and n1 > 10
            assert sym < 1e-9
            # Identical geometries, not merely the same union.
            assert set(shapely.to_wkb(shapely.normalize(whole))) == set(
                shapely.to_wkb(shapely.normalize(part))
            )
        if simplify == 0:
            ref = _reference(a, BUILDING if layer == "buildings" else ROAD)
            n1, n2, sym = _same(ref, whole)
            assert n1 == n2
            assert sym < 1e-9


def test_corner_cases_counted_like_4_connectivity(tmp_path: Path) -> None:
    a = np.full((8, 8), LOWVEG, np.uint8)
    a[3, 3] = a[4, 4] = BUILDING  # corner touch across the block corner (4, 4)
    a[0, 3] = a[0, 4] = a[1, 4] = BUILDING  # an edge across the vertical border
    a[6:8, 2:6] = BUILDING  # across the vertical border, one polygon
    src = write_raster(tmp_path / "c.tif", a)
    for bs in (16, 4):
        out = tmp_path / f"c{bs}.gpkg"
        _run(src, out, block_size=bs, classes=("building",))
        g = _read(out, "buildings")
        assert len(g) == 4
        assert sorted(np.round(shapely.area(g) / PX**2).astype(int)) == [1, 1, 3, 8]


def test_building_across_four_blocks_with_hole(tmp_path: Path) -> None:
    a = np.full((64, 64), LOWVEG, np.uint8)
    a[10:50, 12:52] = BUILDING
    a[28:36, 28:36] = TREE  # the hole sits on the block corner (32, 32)
    src = write_raster(tmp_path / "b.tif", a)
    out = tmp_path / "b.gpkg"
    rep = vectorize_raster(src, out, options=VectorizeOptions(block_size=32))
    assert rep.blocks == 4
    g = _to_px(_read(out, "buildings"))
    assert len(g) == 1
    poly = g[0]
    assert len(poly.interiors) == 1
    assert poly.area == pytest.approx(40 * 40 - 64)
    assert shapely.equals(poly, shapely.box(12, 10, 52, 50).difference(shapely.box(28, 28, 36, 36)))
    assert len(poly.exterior.coords) == 5  # no leftover vertices on the block borders


def test_nodata_never_polygon_and_attributes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.choice(np.array([ROAD, BUILDING, 255], np.uint8), size=(90, 110), p=[0.4, 0.3, 0.3])
    probs = rng.integers(0, 256, size=(6, 90, 110), dtype=np.uint8)
    src = write_raster(tmp_path / "n.tif", a, nodata=255)
    psrc = write_raster(tmp_path / "p.tif", probs)
    out = tmp_path / "n.gpkg"
    _run(src, out, block_size=32, probabilities=psrc)
    nod = shapely.union_all(
        [
            shapely.geometry.shape(g)
            for g, _ in rasterio.features.shapes(
                a, mask=a == 255, connectivity=4, transform=POTSDAM_TF
            )
        ]
    )
    for layer, cls in (("buildings", BUILDING), ("roads", ROAD)):
        df = pyogrio.read_dataframe(out, layer=layer)
        assert df.crs.to_epsg() == 32633
        assert shapely.intersection(shapely.union_all(df.geometry.values), nod).area < 1e-9
        assert (df["class"] == POTSDAM.classes[cls]).all()
        np.testing.assert_allclose(df.area_m2, df.geometry.area, rtol=1e-7)
        np.testing.assert_allclose(df.perimeter_m, df.geometry.length, rtol=1e-9)
        # Exact area and mean probability, pixel by pixel, for every polygon.
        lab = rasterio.features.rasterize(
            [(g, i + 1) for i, g in enumerate(df.geometry)],
            out_shape=a.shape,
            transform=POTSDAM_TF,
            dtype="int32",
        )
        counts = np.bincount(lab.ravel(), minlength=len(df) + 1)[1:]
        sums = np.bincount(lab.ravel(), weights=probs[cls].ravel(), minlength=len(df) + 1)[1:]
        np.testing.assert_allclose(df.area_m2, counts * PX**2, rtol=1e-9)
        np.testing.assert_allclose(df.mean_prob, sums / counts / 255, rtol=1e-9)
        assert ((df.mean_prob >= 0) & (df.mean_prob <= 1)).all()


def test_min_area_and_hole_filling(tmp_path: Path) -> None:
    a = np.full((60, 60), LOWVEG, np.uint8)
    a[5:45, 5:45] = BUILDING
    a[10:12, 10:12] = TREE  # 4 px hole: filled with hole_area 0.02 m² (8 px)
    a[20:30, 20:30] = TREE  # 100 px hole: kept
    a[50, 50] = BUILDING  # 1 px building: dropped with min_area 0.01 m² (4 px)
    src = write_raster(tmp_path / "h.tif", a)
    out = tmp_path / "h.gpkg"
    _run(src, out, block_size=32, hole_area=0.02, min_area=0.01)
    g = _to_px(_read(out, "buildings"))
    assert len(g) == 1
    assert len(g[0].interiors) == 1
    assert g[0].area == pytest.approx(40 * 40 - 100)


def test_simplify_keeps_shared_borders(tmp_path: Path) -> None:
    # A jagged building/road border: after simplification both sides still share it.
    rng = np.random.default_rng(5)
    a = np.full((120, 140), LOWVEG, np.uint8)
    a[:, 70:] = ROAD
    for r in range(10, 110):
        a[r, 30 : 70 + int(rng.integers(-3, 4))] = BUILDING
    src = write_raster(tmp_path / "s.tif", a)
    for bs in (32, 256):
        out = tmp_path / f"s{bs}.gpkg"
        _run(src, out, block_size=bs, simplify=0.15)  # 3 px
        b, r = _to_px(_read(out, "buildings")), _to_px(_read(out, "roads"))
        assert len(b) == 1 and len(r) == 1
        assert shapely.is_valid(b).all() and shapely.is_valid(r).all()
        orig_b = shapely.box(30, 10, 70, 110)
        # Fewer vertices than the staircase, but the shared border is still one line.
        stair = next(
            shapely.geometry.shape(g)
            for g, _ in rasterio.features.shapes(a, mask=a == BUILDING, connectivity=4)
        )
        assert len(b[0].exterior.coords) < 0.6 * len(stair.exterior.coords)
        shared = shapely.intersection(b[0].boundary, r[0].boundary)
        assert shared.length > 95
        assert shapely.intersection(b[0], r[0]).area < 1e-9  # no overlap
        # No gap: building and road still cover what they covered before.
        before = shapely.union_all(
            [
                shapely.geometry.shape(g)
                for g, _ in rasterio.features.shapes(
                    a, mask=(a == BUILDING) | (a == ROAD), connectivity=4
                )
            ]
        )
        assert shapely.symmetric_difference(shapely.union(b[0], r[0]), before).area < 60
        assert abs(b[0].area - orig_b.area) < 200


def test_regularize_rotated_buildings_no_overlap(tmp_path: Path) -> None:
    first = shapely.affinity.rotate(shapely.box(10, 25, 70, 60), 25, origin="centroid")
    second = shapely.affinity.rotate(shapely.box(70, 20, 108, 60), 25, origin="centroid")
    dx = 0.0
    while shapely.affinity.translate(second, dx).distance(first) < 2.0:  # 2 px apart
        dx += 0.25
    truth = [first, shapely.affinity.translate(second, dx)]
    a = np.full((100, 150), LOWVEG, np.uint8)
    burn = rasterio.features.rasterize(
        [(g, 1) for g in truth], out_shape=a.shape, transform=Affine.identity(), all_touched=False
    )
    a[burn == 1] = BUILDING
    src = write_raster(tmp_path / "r.tif", a)
    out = tmp_path / "r.gpkg"
    _run(src, out, block_size=64, regularize=True, classes=("building",))
    g = _to_px(_read(out, "buildings"))
    assert len(g) == 2
    assert shapely.is_valid(g).all()
    assert shapely.intersection(g[0], g[1]).area < 1e-6
    for poly in g:
        t = min(truth, key=lambda x: x.distance(poly.centroid))
        assert shapely.hausdorff_distance(poly, t) < 1.5


def test_overwrite_and_errors(scene_tif: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    src, _ = scene_tif
    out = tmp_path / "o.gpkg"
    out.write_text("x")
    with pytest.raises(OutputExistsError):
        _run(src, out)
    assert out.read_text() == "x"
    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="1-band uint8"):
        _run(rgb, tmp_path / "x.gpkg")
    small = write_raster(tmp_path / "p.tif", np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(GridMismatchError):
        _run(src, tmp_path / "x.gpkg", probabilities=small)
    with pytest.raises(ConfigError, match="not in schema"):
        _run(src, tmp_path / "x.gpkg", classes=("river",))
    with pytest.raises(ConfigError):
        VectorizeOptions(min_area=-1)
    assert not (tmp_path / "x.gpkg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.gpkg", "p.tif", "rgb.tif"]


def test_schema_tag_and_styles(tmp_path: Path) -> None:
    schema = {
        "name": "custom",
        "classes": [
            {"name": "water", "colour": [0, 0, 200]},
            {"name": "road", "colour": [200, 100, 0]},
            {"name": "building", "colour": [250, 10, 10]},
        ],
    }
    a = np.zeros((40, 40), np.uint8)
    a[5:15, 5:15] = 2
    a[20:25, :] = 1
    src = write_raster(tmp_path / "t.tif", a)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(GEOSEG_SCHEMA=json.dumps(schema))
    out = tmp_path / "t.gpkg"
    layers = _run(src, out)
    assert layers == {"buildings": 1, "roads": 1}
    assert set(pyogrio.list_layers(out)[:, 0]) >= {"buildings", "roads"}
    assert pyogrio.read_dataframe(out, layer="roads")["class"][0] == "road"
    con = sqlite3.connect(out)
    try:
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, useAsDefault, styleQML, styleSLD "
            "FROM layer_styles ORDER BY f_table_name"
        ).fetchall()
        kinds = dict(con.execute("SELECT table_name, data_type FROM gpkg_contents").fetchall())
    finally:
        con.close()
    assert [r[0] for r in rows] == ["buildings", "roads"]
    assert all(r[1] == "geom" and r[2] == 1 for r in rows)
    assert "250,10,10,180" in rows[0][3] and "#fa0a0a" in rows[0][4]
    assert kinds["layer_styles"] == "attributes"
    info = pyogrio.read_info(out, layer="buildings")
    assert info["geometry_type"] == "Polygon" and info["features"] == 1
    if shutil.which("ogrinfo"):
        res = subprocess.run(["ogrinfo", "-so", str(out), "buildings"], capture_output=True)
        assert res.returncode == 0


def test_parquet_output(scene_tif: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    import geopandas as gpd

    src, _ = scene_tif
    out = tmp_path / "pq"
    rep = _run(src, out, format="parquet", block_size=512, centerlines=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "buildings.parquet",
        "road_centerlines.parquet",
        "roads.parquet",
    ]
    gpkg = tmp_path / "same.gpkg"
    _run(src, gpkg, block_size=512)
    for layer in ("buildings", "roads"):
        df = gpd.read_parquet(out / f"{layer}.parquet")
        assert df.crs.to_epsg() == 32633
        assert len(df) == rep[layer]
        ref = _read(gpkg, layer)
        assert _same(ref, df.geometry.values)[2] < 1e-9


def test_centerlines_follow_the_road_axes(tmp_path: Path) -> None:
    a = np.full((200, 220), LOWVEG, np.uint8)
    a[90:111, 10:210] = ROAD  # horizontal road, axis y = 100.5
    a[10:190, 60:81] = ROAD  # vertical road, axis x = 70.5
    src = write_raster(tmp_path / "cl.tif", a)
    out = tmp_path / "cl.gpkg"
    _run(src, out, block_size=64, classes=("road",), centerlines=True)
    df = pyogrio.read_dataframe(out, layer="road_centerlines")
    assert len(df) >= 3
    np.testing.assert_allclose(df.length_m, df.geometry.length, rtol=1e-9)
    lines = _to_px(df.geometry.values)
    axes = shapely.MultiLineString([[(10, 100.5), (210, 100.5)], [(70.5, 10), (70.5, 190)]])
    # Every centre-line point lies near a true axis and the axes are covered.
    assert shapely.hausdorff_distance(shapely.union_all(lines), axes) < 15
    assert abs(shapely.union_all(lines).length - axes.length) < 0.15 * axes.length
    assert shapely.distance(shapely.union_all(lines), axes) < 1.0


def test_workers_give_the_same_result(scene_tif: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    src, _ = scene_tif
    _run(src, tmp_path / "w1.gpkg", block_size=512, workers=1)
    _run(src, tmp_path / "w2.gpkg", block_size=512, workers=2)
    for layer in ("buildings", "roads"):
        x, y = _read(tmp_path / "w1.gpkg", layer), _read(tmp_path / "w2.gpkg", layer)
        assert set(shapely.to_wkb(x)) == set(shapely.to_wkb(y))


def _match(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, list[float]]:
    """Greedy one-to-one matching by IoU (> 0.5): (tp, fp, fn, IoU of each match)."""
    tree = shapely.STRtree(truth)
    used: set[int] = set()
    ious: list[float] = []
    for p in pred:
        best, best_iou = -1, 0.0
        for j in tree.query(p, predicate="intersects"):
            if j in used:
                continue
            inter = shapely.intersection(p, truth[j]).area
            iou = inter / shapely.union(p, truth[j]).area
            if iou > best_iou:
                best, best_iou = int(j), iou
        if best >= 0 and best_iou > 0.5:
            used.add(best)
            ious.append(best_iou)
    tp = len(ious)
    return tp, len(pred) - tp, len(truth) - tp, ious


def test_real_spacenet_footprints(tmp_path: Path) -> None:
    folder = real_data("solaris_spacenet4_atlanta")
    import geopandas as gpd

    with rasterio.open(folder / "sample_geotiff.tif") as ds:
        tf, crs, shape = ds.transform, ds.crs, ds.shape
    truth = gpd.read_file(folder / "geotiff_labels.geojson").to_crs(crs)
    mask = rasterio.features.rasterize(
        [(g, 1) for g in truth.geometry], out_shape=shape, transform=tf, all_touched=False
    )
    classes = np.where(mask == 1, BUILDING, LOWVEG).astype(np.uint8)
    src = write_raster(tmp_path / "atl.tif", classes, transform=tf, crs=crs.to_wkt(), nodata=255)
    out = tmp_path / "atl.gpkg"
    vectorize_raster(src, out, options=VectorizeOptions(block_size=256, classes=("building",)))
    df = pyogrio.read_dataframe(out, layer="buildings")
    assert df.crs == crs
    assert shapely.is_valid(df.geometry.values).all()
    # every building pixel but one: a 1-pixel fragment (0.25 m², a rasterization artefact)
    # is under the default minimum building area of 1 m²
    assert df.area_m2.sum() == pytest.approx((int(mask.sum()) - 1) * 0.25)
    assert df.area_m2.min() >= 1.0
    tp, fp, fn, ious = _match(df.geometry.values, truth.geometry.values)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 == 1.0  # the fragment was the only false positive
    assert float(np.mean(ious)) >= 0.95
    # The README's expectation: 43 polygons over 40 px² from the same mask.
    assert int((df.area_m2 > 40 * 0.25).sum()) == 43


def test_real_spacenet_footprints_regularized_through_the_cli(tmp_path: Path) -> None:
    """Issue 13: regularized outlines stay in the raster and on their pixels, and fit the
    true footprints at least as well as the plain outlines, with far fewer vertices."""
    import geopandas as gpd
    from click.testing import CliRunner

    from geoseg.cli.main import cli
    from geoseg.evaluate.objects import match_objects

    folder = real_data("solaris_spacenet4_atlanta")
    with rasterio.open(folder / "sample_geotiff.tif") as ds:
        tf, crs, shape = ds.transform, ds.crs, ds.shape
    truth = gpd.read_file(folder / "geotiff_labels.geojson").to_crs(crs)
    mask = rasterio.features.rasterize(
        [(g, 1) for g in truth.geometry], out_shape=shape, transform=tf
    ).astype(np.uint8)
    classes = np.where(mask == 1, BUILDING, LOWVEG).astype(np.uint8)
    src = write_raster(tmp_path / "atl.tif", classes, transform=tf, crs=crs.to_wkt(), nodata=255)
    own = shapely.union_all(
        [
            shapely.geometry.shape(g)
            for g, _ in rasterio.features.shapes(mask, mask=mask == 1, transform=tf)
        ]
    )
    extent = shapely.box(tf.c, tf.f + tf.e * shape[0], tf.c + tf.a * shape[1], tf.f)
    stats = {}
    for flag in ([], ["--regularize"]):
        out = tmp_path / f"atl{len(flag)}.gpkg"
        args = ["vectorize", str(src), "-o", str(out), "--classes", "building", *flag]
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 0, res.output
        geoms = pyogrio.read_dataframe(out, layer="buildings").geometry.values
        assert shapely.is_valid(geoms).all()
        pts = shapely.points(np.concatenate([shapely.get_coordinates(g) for g in geoms]))
        assert shapely.covers(extent, pts).all()  # no vertex outside the raster
        assert (shapely.distance(own, pts) / abs(tf.a)).max() <= 1.5  # on its own pixels
        tp, fp, fn, ious = _match(geoms, truth.geometry.values)
        q = match_objects(
            gpd.GeoDataFrame(geometry=geoms, crs=crs), truth.reset_index(drop=True)
        ).shapes.to_dict()
        stats[bool(flag)] = (2 * tp / (2 * tp + fp + fn), float(np.mean(ious)), q)
    (f1_plain, iou_plain, q_plain), (f1_reg, iou_reg, q_reg) = stats[False], stats[True]
    assert iou_plain >= 0.95 and iou_reg >= iou_plain
    assert f1_reg >= f1_plain
    assert q_reg["c_iou"] > 2 * q_plain["c_iou"] and q_reg["n_ratio"] < 1.5 < q_plain["n_ratio"]
