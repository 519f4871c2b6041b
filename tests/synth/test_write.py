from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Compression

from geoseg.schema import IGNORE, POTSDAM
from geoseg.synth import make_scene, scene_transform, synthesize
from tests.synth.helpers import BLD, CAR, IMP, burn


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
        burned = burn(list(mine.geometry), tf, shape)
        np.testing.assert_array_equal(burned, labels == BLD)
        road = burn(list(roads[roads["scene"] == sid].geometry), tf, shape)
        assert road.any()
        assert set(np.unique(labels[road])) <= {IMP, CAR}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    paths = [tmp_path / name for name in ("a", "b", "c")]
    for p, seed in zip(paths, (7, 7, 8), strict=True):
        synthesize(p, scenes=1, size=256, seed=seed)
    tifs = sorted(q.relative_to(paths[0]) for q in paths[0].rglob("*.tif"))
    assert len(tifs) == 4
    for rel in tifs:
        assert (paths[0] / rel).read_bytes() == (paths[1] / rel).read_bytes()
    assert (paths[0] / tifs[0]).read_bytes() != (paths[2] / tifs[0]).read_bytes()


def test_potsdam_reader_lists_the_scenes(folder: Path) -> None:
    from geoseg.raster import list_potsdam_ids

    assert list_potsdam_ids(folder) == ["2_10", "2_11"]
