"""A job that splits buildings with the scene's DSM and scores its vectors against true vectors."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import rasterio
import shapely

from geoseg.errors import ConfigError
from geoseg.pipeline import load_job, run_job
from tests.pipeline.helpers import job_dict, make_data, shared_checkpoint, write_job


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    root = tmp_path_factory.mktemp("vector-steps")
    ids = make_data(root / "data", scenes=2, size=512, seed=0)
    return root / "data", shared_checkpoint(tmp_path_factory), ids


def _truth_lines(data: Path, ids: list[str], out: Path) -> Path:
    """One straight 'road' across each scene (a centre-line truth file for all scenes)."""
    lines = []
    for sid in ids:
        r, c = sid.split("_")
        with rasterio.open(data / "4_Ortho_RGBIR" / f"top_potsdam_{r}_{c}_RGBIR.tif") as ds:
            b, crs = ds.bounds, ds.crs
        y = (b.bottom + b.top) / 2
        lines.append(shapely.LineString([(b.left, y), (b.right, y)]))
    gpd.GeoDataFrame(geometry=lines, crs=crs).to_file(out, layer="roads")
    return out


def test_a_job_splits_with_the_scene_dsm_and_scores_its_vectors(
    data: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    root, model, ids = data
    truth = root / "truth.gpkg"
    job = job_dict(root, model, "out")
    job["steps"]["vectorize"] = {
        "classes": ["building", "road"],
        "split_buildings": True,
        "regularize": True,
        "centerlines": True,
    }
    job["steps"]["evaluate"] = {
        "buildings": str(truth),
        "roads": str(_truth_lines(root, ids, tmp_path / "lines.gpkg")),
    }
    report = run_job(load_job(write_job(tmp_path / "job.yaml", job)))
    assert report.ok and report.failed == 0
    out = tmp_path / "out"
    all_truth = gpd.read_file(truth, layer="buildings")
    for sid in ids:
        meta = pyogrio.read_info(out / "vectors" / f"{sid}.gpkg", layer="buildings")
        options = json.loads(meta["layer_metadata"]["geoseg_vectorize"])
        r, c = sid.split("_")
        assert options["split_buildings"] is True
        assert Path(options["dsm"]).name == f"dsm_potsdam_{int(r):02d}_{int(c):02d}.tif"
        metrics = json.loads((out / "metrics" / f"{sid}.json").read_text())
        # the truth file covers both scenes: each scene is scored against its own part
        mine = all_truth[all_truth.scene == sid]
        assert metrics["buildings"]["tp"] + metrics["buildings"]["fn"] == len(mine) > 0
        assert 0.0 <= metrics["roads"]["apls"] <= 1.0
        assert {"miou", "buildings", "roads"} <= set(metrics)
        step = json.loads((out / "manifest.json").read_text())["scenes"][sid]["steps"]
        assert "building_f1" in step["evaluate"]["metrics"]
        assert set(step["evaluate"]["inputs"]) >= {"labels", "truth_buildings", "truth_roads"}
        assert "split_height" in step["vectorize"]["inputs"]


def test_vector_truth_needs_the_vectors_it_scores(
    data: tuple[Path, Path, list[str]], tmp_path: Path
) -> None:
    root, model, _ = data
    job = job_dict(root, model, "out")
    job["steps"]["vectorize"] = {"classes": ["road"]}
    job["steps"]["evaluate"] = {
        "buildings": str(root / "truth.gpkg"),
        "roads": str(root / "truth.gpkg"),
    }
    with pytest.raises(ConfigError) as err:
        load_job(write_job(tmp_path / "job.yaml", job))
    text = str(err.value)
    assert "steps.evaluate.buildings: needs steps.vectorize with classes including building" in text
    assert "steps.evaluate.roads: needs steps.vectorize.centerlines: true" in text
