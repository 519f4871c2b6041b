from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Compression
from rasterio.features import rasterize
from scipy.ndimage import distance_transform_edt

from geoseg.errors import InputError, OutputExistsError
from geoseg.schema import IGNORE, POTSDAM
from geoseg.synth import (
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    SynthScene,
    _layout,
    _shadow,
    make_scene,
    scene_id,
    scene_transform,
    synthesize,
)

IMP, BLD, VEG, TREE, CAR, CLUT = range(6)


@pytest.fixture(scope="module")
def scene() -> SynthScene:
    return make_scene(size=1000, seed=0, transform=scene_transform(0, 1000))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "potsdam"
    synthesize(out, scenes=2, size=600, seed=5)
    return out


def _burn(polygons: list, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    if not polygons:
        return np.zeros(shape, dtype=bool)
    return rasterize(
        [(p, 1) for p in polygons], out_shape=shape, transform=transform, dtype="uint8"
    ).astype(bool)


# -- naming and grid -------------------------------------------------------------------------


def test_scene_ids_follow_potsdam_rows_and_columns() -> None:
    assert [scene_id(i) for i in (0, 1, 9, 10, 23)] == ["2_10", "2_11", "2_19", "3_10", "4_13"]


def test_scenes_lie_edge_to_edge() -> None:
    size = 2000
    t0, t1, t10 = (scene_transform(i, size) for i in (0, 1, 10))
    assert (t0.c, t0.f) == (366000.0, 5808000.0)
    assert (t0.a, t0.e) == (0.05, -0.05)
    # right edge of 2_10 is the left edge of 2_11; bottom of 2_10 is the top of 3_10
    assert t0 @ (size, 0) == pytest.approx((t1.c, t1.f))
    assert t0 @ (0, size) == pytest.approx((t10.c, t10.f))


# -- in-memory scenes ------------------------------------------------------------------------


def test_scene_arrays_have_the_documented_shapes(scene: SynthScene) -> None:
    assert scene.image.shape == (4, 1000, 1000) and scene.image.dtype == np.uint8
    assert scene.dsm.shape == scene.ndsm.shape == (1000, 1000)
    assert scene.dsm.dtype == scene.ndsm.dtype == np.float32
    assert scene.labels.dtype == scene.labels_no_boundary.dtype == np.uint8
    assert set(np.unique(scene.labels)) <= set(range(6))
    assert scene.geobox.shape == (1000, 1000)
    assert scene.crs.to_epsg() == 32633


def test_same_seed_same_scene_other_seed_or_index_differs(scene: SynthScene) -> None:
    again = make_scene(size=1000, seed=0, transform=scene_transform(0, 1000))
    np.testing.assert_array_equal(again.image, scene.image)
    np.testing.assert_array_equal(again.dsm, scene.dsm)
    np.testing.assert_array_equal(again.labels, scene.labels)
    assert [b.polygon.wkb for b in again.buildings] == [b.polygon.wkb for b in scene.buildings]
    other_seed = make_scene(size=1000, seed=1, transform=scene_transform(0, 1000))
    other_index = make_scene(size=1000, seed=0, transform=scene_transform(0, 1000), index=1)
    for other in (other_seed, other_index):
        assert np.mean(other.labels != scene.labels) > 0.1
        assert not np.array_equal(other.image, scene.image)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_six_classes_in_a_1000_px_scene(seed: int) -> None:
    s = make_scene(size=1000, seed=seed, transform=scene_transform(0, 1000))
    counts = np.bincount(s.labels.ravel(), minlength=6)
    assert np.all(counts[:6] > 0), dict(zip(POTSDAM.classes, counts.tolist(), strict=True))
    assert counts.sum() == s.labels.size


def test_building_polygons_rasterize_to_exactly_the_building_pixels(scene: SynthScene) -> None:
    assert scene.buildings
    burned = _burn([b.polygon for b in scene.buildings], scene.transform, scene.labels.shape)
    np.testing.assert_array_equal(burned, scene.labels == BLD)
    for b in scene.buildings:
        assert b.polygon.is_valid and b.polygon.geom_type == "Polygon"
        assert 4.0 <= b.height_m <= 25.0
    polys = [b.polygon for b in scene.buildings]
    for i, p in enumerate(polys):  # buildings never overlap each other or a road
        assert not any(p.intersects(q) for q in polys[i + 1 :])
        assert not any(p.intersects(r.polygon) for r in scene.roads)


def test_road_polygons_are_impervious_or_cars(scene: SynthScene) -> None:
    assert scene.roads
    road = _burn([r.polygon for r in scene.roads], scene.transform, scene.labels.shape)
    values = scene.labels[road]
    assert set(np.unique(values)) <= {IMP, CAR}
    assert np.mean(values == IMP) > 0.8
    for r in scene.roads:
        assert 6.0 <= r.width_m <= 14.0
        # a clipped straight road: its area is about width x length inside the scene
        assert r.polygon.area > r.width_m * 10


def test_heights_per_class(scene: SynthScene) -> None:
    nd, lab = scene.ndsm, scene.labels
    ground = scene.dsm - nd
    assert ground.min() >= 30.0 and ground.max() <= 45.0
    assert np.all(nd[lab == IMP] == 0.0)
    veg = nd[lab == VEG]
    assert veg.min() >= 0.0 and veg.max() <= 0.5 and veg.std() > 0.01
    assert np.all((nd[lab == CAR] > 1.2) & (nd[lab == CAR] < 1.8))
    clutter = nd[lab == CLUT]
    assert clutter.min() >= 0.0 and clutter.max() <= 2.0
    trees = nd[lab == TREE]
    assert trees.min() >= 0.55 * 5.0 - 1e-3 and trees.max() <= 20.0


def test_building_dsm_stands_above_the_surrounding_ground(scene: SynthScene) -> None:
    shape = scene.labels.shape
    checked = 0
    for b in scene.buildings:
        inside = _burn([b.polygon], scene.transform, shape)
        ring = _burn(
            [b.polygon.buffer(3.0).difference(b.polygon.buffer(1.0))], scene.transform, shape
        )
        ring &= np.isin(scene.labels, [IMP, VEG])
        if ring.sum() < 50:
            continue
        rise = np.median(scene.dsm[inside]) - np.median(scene.dsm[ring])
        assert rise > 3.0, (b.height_m, rise)
        checked += 1
        top = float(scene.ndsm[inside].max())
        if b.roof == "gabled":
            assert top == pytest.approx(b.height_m, abs=0.05)
        else:  # flat roofs, possibly with small structures on top
            assert np.median(scene.ndsm[inside]) == pytest.approx(b.height_m, abs=0.01)
    assert checked > 0


def test_no_boundary_labels_ignore_pixels_within_3_px_of_another_class(scene: SynthScene) -> None:
    lab, nb = scene.labels, scene.labels_no_boundary
    expected = np.zeros(lab.shape, dtype=bool)
    for c in np.unique(lab):
        # distance from each pixel of class c to the nearest pixel of another class
        expected |= (lab == c) & (distance_transform_edt(lab == c) <= 3.0)
    np.testing.assert_array_equal(nb == IGNORE, expected)
    np.testing.assert_array_equal(nb[~expected], lab[~expected])


def test_shadow_falls_away_from_the_sun_with_length_proportional_to_height() -> None:
    res = 0.05
    nd = np.zeros((800, 800), dtype=np.float32)
    nd[380:420, 380:420] = 10.0  # a 2 m x 2 m tower, 10 m tall
    strength = _shadow(nd, res)
    az = math.radians(SUN_AZIMUTH_DEG)
    away = np.array([math.cos(az), -math.sin(az)])  # (row, col) step away from the sun
    length = 10.0 / math.tan(math.radians(SUN_ELEVATION_DEG)) / res  # in pixels
    centre = np.array([400.0, 400.0])
    mid = np.round(centre + away * (20 + 0.5 * length)).astype(int)
    beyond = np.round(centre + away * (20 + length + 30)).astype(int)
    towards = np.round(centre - away * (20 + 0.5 * length)).astype(int)
    assert strength[tuple(mid)] > 0.9
    assert strength[tuple(beyond)] < 0.1
    assert strength[tuple(towards)] < 0.1


def test_shadows_darken_the_image(scene: SynthScene) -> None:
    strength = _shadow(scene.ndsm, 0.05)
    grass = scene.labels == VEG
    lit = scene.image[1][grass & (strength < 0.05)].mean()
    dark = scene.image[1][grass & (strength > 0.95)].mean()
    assert dark < 0.7 * lit


def test_vegetation_is_bright_in_infrared(scene: SynthScene) -> None:
    img = scene.image.astype(float)
    ir, red = img[3], img[0]
    for cls in (VEG, TREE):
        assert ir[scene.labels == cls].mean() > 1.4 * red[scene.labels == cls].mean()
    assert ir[scene.labels == IMP].mean() < red[scene.labels == IMP].mean()


def test_bad_arguments_raise_input_error(tmp_path: Path) -> None:
    tf = scene_transform(0, 256)
    with pytest.raises(InputError, match="size"):
        make_scene(size=10, seed=0, transform=tf)
    with pytest.raises(InputError, match="seed"):
        make_scene(size=256, seed=-1, transform=tf)
    with pytest.raises(InputError, match="north-up"):
        make_scene(size=256, seed=0, transform=Affine(0.05, 0, 0, 0, 0.05, 0))
    with pytest.raises(InputError, match="scenes"):
        synthesize(tmp_path / "x", scenes=0, size=256, seed=0)
    assert not (tmp_path / "x").exists()


def test_other_pixel_sizes_scale_the_objects() -> None:
    coarse = make_scene(size=200, seed=0, transform=Affine(0.25, 0, 0, 0, -0.25, 50))
    fine = make_scene(size=1000, seed=0, transform=Affine(0.05, 0, 0, 0, -0.05, 50))
    # the same 50 m x 50 m layout at two resolutions
    assert coarse.buildings
    assert [round(b.polygon.area, 6) for b in coarse.buildings] == [
        round(b.polygon.area, 6) for b in fine.buildings
    ]
    assert coarse.labels.shape == (200, 200)
    frac_coarse = np.bincount(coarse.labels.ravel(), minlength=6) / coarse.labels.size
    frac_fine = np.bincount(fine.labels.ravel(), minlength=6) / fine.labels.size
    np.testing.assert_allclose(frac_coarse, frac_fine, atol=0.02)


def test_a_potsdam_sized_layout_is_varied() -> None:
    lay = _layout(np.random.default_rng((0, 0)), 300.0)  # the geometry of a 6000 px tile
    assert len(lay.roads) >= 2 and len(lay.buildings) >= 20
    assert {b.roof for b in lay.buildings} == {"flat", "gabled"}
    shapes = set()
    aligned = 0
    for b in lay.buildings:
        rect = b.poly.minimum_rotated_rectangle
        xy = np.asarray(rect.exterior.coords)
        sides = np.hypot(*np.diff(xy[:3], axis=0).T)
        assert 8.0 - 1e-6 <= sides.min() and sides.max() <= 40.0 + 1e-6
        assert 4.0 <= b.height <= 25.0
        if b.poly.interiors:
            shapes.add("courtyard")
        elif b.poly.area < 0.95 * rect.area:
            shapes.add("L or U")
        else:
            shapes.add("rectangle")
        edge = np.arctan2(*(xy[1] - xy[0])[::-1])
        road = min(lay.roads, key=lambda r: r.centre.distance(b.poly)).angle
        off = (edge - road) % (math.pi / 2)
        aligned += min(off, math.pi / 2 - off) < math.radians(5)
    assert shapes == {"courtyard", "L or U", "rectangle"}
    assert aligned >= 0.6 * len(lay.buildings)


# -- the written folder ----------------------------------------------------------------------


def test_folder_has_the_potsdam_layout(folder: Path) -> None:
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == [
        "1_DSM/dsm_potsdam_02_10.tif",
        "1_DSM/dsm_potsdam_02_11.tif",
        "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif",
        "4_Ortho_RGBIR/top_potsdam_2_11_RGBIR.tif",
        "5_Labels_all/top_potsdam_2_10_label.tif",
        "5_Labels_all/top_potsdam_2_11_label.tif",
        "5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif",
        "5_Labels_all_noBoundary/top_potsdam_2_11_label_noBoundary.tif",
        "synth.json",
        "truth.gpkg",
    ]
    manifest = json.loads((folder / "synth.json").read_text())
    assert manifest["seed"] == 5 and manifest["size"] == 600
    assert manifest["scene_ids"] == ["2_10", "2_11"]


def test_file_properties(folder: Path) -> None:
    for i, sid in enumerate(["2_10", "2_11"]):
        r, c = sid.split("_")
        tf = scene_transform(i, 600)
        with rasterio.open(folder / "4_Ortho_RGBIR" / f"top_potsdam_{sid}_RGBIR.tif") as ds:
            assert (ds.count, ds.dtypes, ds.width, ds.height) == (4, ("uint8",) * 4, 600, 600)
            assert ds.colorinterp == (
                ColorInterp.red,
                ColorInterp.green,
                ColorInterp.blue,
                ColorInterp.alpha,
            )
            assert ds.compression == Compression.packbits
            assert ds.block_shapes == [(608, 608)] * 4
            assert ds.crs.to_epsg() == 32633 and ds.transform == tf
            assert ds.nodata is None
        with rasterio.open(folder / "1_DSM" / f"dsm_potsdam_{int(r):02d}_{int(c):02d}.tif") as ds:
            assert (ds.count, ds.dtypes) == (1, ("float32",))
            assert ds.compression in (Compression.deflate, Compression.lzw)
            assert ds.block_shapes == [(608, 608)]
            assert ds.crs.to_epsg() == 32633 and ds.transform == tf
            dsm = ds.read(1)
            assert 30.0 <= dsm.min() and dsm.max() <= 45.0 + 26.0
        for sub, suffix in (
            ("5_Labels_all", "label"),
            ("5_Labels_all_noBoundary", "label_noBoundary"),
        ):
            with rasterio.open(folder / sub / f"top_potsdam_{sid}_{suffix}.tif") as ds:
                assert (ds.count, ds.dtypes) == (3, ("uint8",) * 3)
                assert ds.crs.to_epsg() == 32633 and ds.transform == tf


def test_files_hold_the_in_memory_scene(folder: Path) -> None:
    s = make_scene(size=600, seed=5, transform=scene_transform(1, 600), index=1)
    with rasterio.open(folder / "4_Ortho_RGBIR" / "top_potsdam_2_11_RGBIR.tif") as ds:
        np.testing.assert_array_equal(ds.read(), s.image)
    with rasterio.open(folder / "1_DSM" / "dsm_potsdam_02_11.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), s.dsm)
    with rasterio.open(folder / "5_Labels_all" / "top_potsdam_2_11_label.tif") as ds:
        labels, unknown = POTSDAM.decode(ds.read())
    assert unknown == 0
    np.testing.assert_array_equal(labels, s.labels)
    with rasterio.open(
        folder / "5_Labels_all_noBoundary" / "top_potsdam_2_11_label_noBoundary.tif"
    ) as ds:
        rgb = ds.read()
    eroded, unknown = POTSDAM.decode(rgb)
    np.testing.assert_array_equal(eroded, s.labels_no_boundary)
    assert unknown == np.count_nonzero(s.labels_no_boundary == IGNORE) > 0
    assert np.all(rgb[:, eroded == IGNORE] == 0)  # black, as the ISPRS eroded labels


def test_truth_gpkg_matches_the_label_files(folder: Path) -> None:
    buildings = gpd.read_file(folder / "truth.gpkg", layer="buildings")
    roads = gpd.read_file(folder / "truth.gpkg", layer="roads")
    assert buildings.crs.to_epsg() == roads.crs.to_epsg() == 32633
    assert {"scene", "height_m"} <= set(buildings.columns)
    assert {"scene", "width_m"} <= set(roads.columns)
    assert set(buildings.geom_type) == set(roads.geom_type) == {"Polygon"}
    for sid in ["2_10", "2_11"]:
        with rasterio.open(folder / "5_Labels_all" / f"top_potsdam_{sid}_label.tif") as ds:
            labels, _ = POTSDAM.decode(ds.read())
            tf, shape = ds.transform, (ds.height, ds.width)
        mine = buildings[buildings["scene"] == sid]
        assert len(mine) > 0
        burned = _burn(list(mine.geometry), tf, shape)
        np.testing.assert_array_equal(burned, labels == BLD)
        road = _burn(list(roads[roads["scene"] == sid].geometry), tf, shape)
        assert road.any()
        assert set(np.unique(labels[road])) <= {IMP, CAR}


def test_neighbouring_scenes_share_continuous_ground(folder: Path) -> None:
    a = make_scene(size=600, seed=5, transform=scene_transform(0, 600), index=0)
    b = make_scene(size=600, seed=5, transform=scene_transform(1, 600), index=1)
    ground_a = a.dsm - a.ndsm
    ground_b = b.dsm - b.ndsm
    step = np.abs(ground_a[:, -1] - ground_b[:, 0])
    inner = np.abs(ground_a[:, -1] - ground_a[:, -2])
    assert step.max() < 0.01 and step.max() < 5 * inner.max() + 1e-3


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("a", "b", "c")]
    for p, seed in zip(paths, (7, 7, 8), strict=True):
        synthesize(p, scenes=1, size=256, seed=seed)
    tifs = sorted(q.relative_to(paths[0]) for q in paths[0].rglob("*.tif"))
    assert len(tifs) == 4
    for rel in tifs:
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()
    assert (paths[0] / tifs[0]).read_bytes() != (paths[2] / tifs[0]).read_bytes()


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        synthesize(out, scenes=1, size=128, seed=0)
    assert (out / "keep.txt").read_text() == "mine"
    result = synthesize(out, scenes=1, size=128, seed=0, overwrite=True)
    assert result.root == out and result.scene_ids == ("2_10",)
    assert not (out / "keep.txt").exists()
    assert result.paths["2_10"].image.exists() and result.truth.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_potsdam_reader_lists_the_scenes(folder: Path) -> None:
    from geoseg.scene import list_potsdam_ids

    assert list_potsdam_ids(folder) == ["2_10", "2_11"]
