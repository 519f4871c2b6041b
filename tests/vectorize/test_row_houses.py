"""Row houses through the CLI: split by the DSM, regularized with shared walls, against truth."""

from __future__ import annotations

import itertools
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.schema import POTSDAM
from geoseg.synth import synthesize
from geoseg.synth._rows import MIN_STEP_M


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, gpd.GeoDataFrame]:
    """One synthetic scene with terraces: its class raster, DSM and true footprints."""
    root = tmp_path_factory.mktemp("rows")
    res = synthesize(root / "synth", scenes=1, size=1600, seed=6, row_houses=True)
    paths = res.paths[res.scene_ids[0]]
    with rasterio.open(paths.labels) as ds:
        classes = POTSDAM.decode(ds.read())[0]
        profile = {k: v for k, v in ds.profile.items() if k != "photometric"}
        profile |= {"count": 1, "dtype": "uint8", "nodata": 255}
    classes_tif = root / "classes.tif"
    with rasterio.open(classes_tif, "w", **profile) as ds:
        ds.write(classes, 1)
    truth = gpd.read_file(res.truth, layer="buildings")
    return root, classes_tif, paths.dsm, truth


def _touching_pairs(truth: gpd.GeoDataFrame) -> list[tuple[int, int, float]]:
    geoms, heights = truth.geometry.to_numpy(), truth.height_m.to_numpy()
    return [
        (i, j, abs(float(heights[i] - heights[j])))
        for i, j in itertools.combinations(range(len(geoms)), 2)
        if geoms[i].intersection(geoms[j]).length > 0.5
    ]


def _owner(geom: shapely.Geometry, preds: np.ndarray) -> int:
    areas = shapely.area(shapely.intersection(preds, geom))
    return int(np.argmax(areas)) if areas.max() > 0 else -1


def _vectorize(runner: CliRunner, classes: Path, out: Path, *extra: str) -> np.ndarray:
    result = runner.invoke(
        cli, ["vectorize", str(classes), "-o", str(out), "--classes", "building", *extra]
    )
    assert result.exit_code == 0, result.output
    return gpd.read_file(out, layer="buildings").geometry.to_numpy()


def test_the_dsm_splits_touching_buildings_of_different_heights(rows: tuple) -> None:
    root, classes, dsm, truth = rows
    pairs = [(i, j) for i, j, dh in _touching_pairs(truth) if dh >= MIN_STEP_M]
    assert len(pairs) >= 3, "the scene must have terraces of different heights"
    runner = CliRunner()
    plain = _vectorize(runner, classes, root / "plain.gpkg")
    split = _vectorize(runner, classes, root / "split.gpkg", "--dsm", str(dsm))
    geoms = truth.geometry.to_numpy()
    merged = sum(_owner(geoms[i], plain) == _owner(geoms[j], plain) for i, j in pairs)
    assert merged == len(pairs)  # the class map alone merges every touching pair
    separated = sum(_owner(geoms[i], split) != _owner(geoms[j], split) for i, j in pairs)
    assert separated >= 0.95 * len(pairs)
    assert len(split) > len(plain)
    assert np.all(shapely.is_valid(split))
    # the parts still cover exactly the class map's buildings
    assert shapely.union_all(split).symmetric_difference(shapely.union_all(plain)).area < 1e-6


def test_regularized_row_houses_keep_one_common_wall(rows: tuple) -> None:
    root, classes, dsm, truth = rows
    runner = CliRunner()
    reg = _vectorize(runner, classes, root / "reg.gpkg", "--dsm", str(dsm), "--regularize")
    assert np.all(shapely.is_valid(reg))
    walls = 0
    for a, b in itertools.combinations(reg, 2):
        if a.distance(b) > 1e-6:
            continue
        shared = a.intersection(b)
        if shared.length < 1.0:  # touching at a corner
            continue
        walls += 1
        assert a.intersection(b).area < 0.01  # no overlap (m²)
        both = shapely.union(a, b)
        closed = both.buffer(0.25, join_style="mitre").buffer(-0.25, join_style="mitre")
        assert closed.area - both.area < 0.01  # no gap along the wall (m²)
    assert walls >= 3
    # right angles where the truth has them: every terrace house is a rectangle
    rect_truth = [g for g in truth.geometry if len(g.exterior.coords) == 5]
    checked = 0
    for t in rect_truth:
        k = _owner(t, reg)
        p = reg[k]
        if p.intersection(t).area / p.union(t).area < 0.8:
            continue
        d = np.diff(np.asarray(p.exterior.coords), axis=0)
        ang = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
        turn = np.abs((np.diff(np.r_[ang, ang[:1]]) + 90.0) % 180.0 - 90.0)
        assert np.all(np.abs(turn - 90.0) < 1.0), p.wkt
        checked += 1
    assert checked >= 0.8 * len(rect_truth)
