"""The GEOSEG_* tags: prediction provenance, chip records, and the one schema reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError, SchemaError
from geoseg.pipeline import landcover_summary
from geoseg.raster import SCHEMA_TAG, ChipTags, provenance_tags, schema_from_tags
from geoseg.schema import POTSDAM, ClassSchema
from geoseg.vectorize import VectorizeOptions, vectorize_raster
from tests.conftest import write_raster

TWO = ClassSchema("two", ("a", "b"), ((1, 2, 3), (4, 5, 6)))


def tagged(path: Path, value: str | None) -> Path:
    """A 1-band uint8 class raster with ``GEOSEG_SCHEMA`` set to ``value`` (None: no tag)."""
    a = np.zeros((16, 16), np.uint8)
    a[4:12, 4:12] = 1
    p = write_raster(path, a, nodata=255)
    if value is not None:
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(**{SCHEMA_TAG: value})
    return p


def test_provenance_tags_names_and_values() -> None:
    tags = provenance_tags(
        version="1.2.3",
        model_sha256="ab" * 32,
        model="unet",
        bands=("red", "green", "ndsm"),
        scene="2_10",
        options={"tta": "none", "overlap": 16},
        schema=POTSDAM,
    )
    assert list(tags) == [
        "GEOSEG_VERSION",
        "GEOSEG_MODEL_SHA256",
        "GEOSEG_MODEL",
        "GEOSEG_BANDS",
        "GEOSEG_SCENE",
        "GEOSEG_OPTIONS",
        "GEOSEG_SCHEMA",
    ]
    assert tags["GEOSEG_BANDS"] == "red,green,ndsm"
    assert tags["GEOSEG_OPTIONS"] == '{"overlap": 16, "tta": "none"}'
    assert tags["GEOSEG_SCHEMA"] == json.dumps(POTSDAM.to_dict())
    assert schema_from_tags(tags, "potsdam", path="x.tif") == POTSDAM


def test_the_model_gsd_tag_records_a_prediction_s_detail() -> None:
    from geoseg.raster.tags import model_gsd_from_tags

    common = {
        "version": "1",
        "model_sha256": "ab" * 32,
        "model": "unet",
        "bands": ("red",),
        "scene": "s",
        "options": {},
        "schema": POTSDAM,
    }
    tags = provenance_tags(**common, model_gsd=0.2)
    assert tags["GEOSEG_MODEL_GSD"] == "0.2" and model_gsd_from_tags(tags) == 0.2
    assert "GEOSEG_MODEL_GSD" not in provenance_tags(**common)
    assert model_gsd_from_tags({}) is None
    for bad in ("x", "0", "-1", "nan", "inf"):
        assert model_gsd_from_tags({"GEOSEG_MODEL_GSD": bad}) is None


def test_chip_tags_round_trip_through_a_geotiff(tmp_path: Path) -> None:
    chip = ChipTags(
        scene="2_10",
        window=(128, 256, 64, 64),
        bands=("red", "ndsm", "label"),
        valid_fraction=0.953125,
        histogram=(10, 0, 3),
        ignored=7,
    )
    tags = chip.to_tags()
    assert tags == {
        "GEOSEG_SCENE": "2_10",
        "GEOSEG_WINDOW": "[128, 256, 64, 64]",
        "GEOSEG_BANDS": '["red", "ndsm", "label"]',
        "GEOSEG_VALID": "0.953125",
        "GEOSEG_HISTOGRAM": "[10, 0, 3]",
        "GEOSEG_IGNORED": "7",
    }
    p = write_raster(tmp_path / "c.tif", np.zeros((4, 4), np.float32))
    with rasterio.open(p, "r+") as ds:
        ds.update_tags(**tags)
    with rasterio.open(p) as ds:
        assert ChipTags.from_tags(ds.tags()) == chip
    del tags["GEOSEG_IGNORED"], tags["GEOSEG_BANDS"]  # chips of older stores
    old = ChipTags.from_tags(tags)
    assert old.ignored == 0 and old.bands == ()


def test_schema_tag_absent_gives_the_fallback(tmp_path: Path) -> None:
    with rasterio.open(tagged(tmp_path / "n.tif", None)) as ds:
        assert schema_from_tags(ds, "potsdam") == POTSDAM
        assert schema_from_tags(ds, TWO) == TWO
    with rasterio.open(tagged(tmp_path / "t.tif", json.dumps(TWO.to_dict()))) as ds:
        assert schema_from_tags(ds, "potsdam") == TWO


@pytest.mark.parametrize(
    ("value", "what"),
    [("{not json", "not valid JSON"), ('{"classes": 3}', "expected a mapping")],
)
def test_bad_schema_tag_names_the_file_and_the_fix(tmp_path: Path, value: str, what: str) -> None:
    p = tagged(tmp_path / "bad.tif", value)
    with rasterio.open(p) as ds, pytest.raises(SchemaError) as err:
        schema_from_tags(ds, "potsdam", path=p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:GEOSEG_SCHEMA: ") and what in msg
    assert "re-run `geoseg predict`" in msg and "--schema" in msg


@pytest.mark.parametrize("value", ["{not json", '{"classes": [{"name": 1}]}'])
def test_bad_schema_tag_raises_the_same_in_vectorize_and_the_summary(
    tmp_path: Path, value: str
) -> None:
    p = tagged(tmp_path / "bad.tif", value)
    with pytest.raises(InputError) as in_vectorize:
        vectorize_raster(p, tmp_path / "out.gpkg", options=VectorizeOptions())
    with pytest.raises(InputError) as in_summary:
        landcover_summary(p)
    assert type(in_vectorize.value) is type(in_summary.value) is SchemaError
    assert str(in_vectorize.value) == str(in_summary.value)
    assert str(p) in str(in_summary.value)
    assert not (tmp_path / "out.gpkg").exists()
