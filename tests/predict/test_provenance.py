"""Outputs: COGs with GEOSEG_* tags and a JSON sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import rasterio
from rio_cogeo.cogeo import cog_validate

from geoseg.predict import output_paths, predict_scenes
from geoseg.schema import POTSDAM
from tests.predict.helpers import (
    opts,
    random_scene,
    three_conv_model,
)


def test_outputs_are_cogs_with_provenance_and_a_sidecar(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 140, 120)
    model = three_conv_model()
    (rep,) = predict_scenes(
        [spec], model, tmp_path / "out", options=opts(probabilities=True, block_size=64)
    )
    assert rep.probabilities is not None
    for p in (rep.classes, rep.probabilities):
        ok, errors, _ = cog_validate(str(p))
        assert ok and not errors
    with rasterio.open(rep.classes) as ds:
        tags = ds.tags()
        assert tags["GEOSEG_MODEL_SHA256"] == model.sha256
        assert json.loads(tags["GEOSEG_SCHEMA"]) == POTSDAM.to_dict()
        assert json.loads(tags["GEOSEG_OPTIONS"])["tile_size"] == 64
        assert tags["GEOSEG_VERSION"]
        assert ds.colormap(1)[1] == (0, 0, 255, 255)
    assert "building" in Path(str(rep.classes) + ".aux.xml").read_text()
    with rasterio.open(rep.probabilities) as ds:
        assert ds.descriptions == POTSDAM.classes
    side = json.loads(rep.sidecar.read_text())
    assert side["model"]["sha256"] == model.sha256
    # the QGIS styles beside the rasters, named in the sidecar
    assert side["outputs"]["class_style"] == rep.classes.with_suffix(".qml").name
    assert side["outputs"]["probabilities_style"] == rep.probabilities.with_suffix(".qml").name
    assert 'type="paletted"' in rep.classes.with_suffix(".qml").read_text()
    assert 'type="singlebandpseudocolor"' in rep.probabilities.with_suffix(".qml").read_text()
    assert side["tiles"]["planned"] == side["tiles"]["computed"] == rep.tiles
    assert side["blocks"]["total"] == rep.blocks > 1
    assert side["options"]["block_size"] == 64
    assert set(side["timings"]) >= {"read_s", "model_wait_s", "device_cpu_s", "wall_s"}
    # what the options resolved to, where the blocks ran
    assert side["resolved"]["devices"] == ["cpu"]
    assert side["resolved"]["precision"] == ["fp32"]
    assert side["resolved"]["batch_size"] == [4]
    assert side["resolved"]["compile"] is False
    seams = side["seam_score"]
    assert seams["border_pairs"] > 0 and seams["interior_pairs"] > 0
    assert not output_paths(tmp_path / "out", spec.id)["work"].exists()
