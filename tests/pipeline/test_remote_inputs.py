"""Job inputs beyond local files: ``image:`` entries that are URLs or STAC items."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.pipeline import JobConfigError, load_job
from tests.pipeline.helpers import shared_checkpoint, write_job
from tests.raster.test_stac import WV_BANDS, write_item


def test_image_entries_take_urls_and_stac_items(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOSEG_STAC_CACHE", str(tmp_path / "cache"))
    item = write_item(tmp_path / "item")
    job = {
        "inputs": [
            {"image": "https://example.invalid/cogs/a.tif", "dsm": "s3://bucket/a_dsm.tif"},
            {"image": str(item)},
        ],
        "model": str(shared_checkpoint(tmp_path_factory)),
        "output": str(tmp_path / "run"),
        "steps": {"predict": {}},
    }
    loaded = load_job(write_job(tmp_path / "j.yaml", job))
    remote, stac = loaded.scenes
    assert remote.id == "a" and remote.image == "/vsicurl/https://example.invalid/cogs/a.tif"
    assert remote.dsm == "/vsis3/bucket/a_dsm.tif"
    assert stac.id == "wv_scene" and stac.image_bands == WV_BANDS


def test_a_missing_local_image_is_still_a_problem(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    job = {
        "inputs": [{"image": "nope.tif"}],
        "model": str(shared_checkpoint(tmp_path_factory)),
        "output": str(tmp_path / "run"),
        "steps": {"predict": {}},
    }
    with pytest.raises(JobConfigError, match="nope.tif"):
        load_job(write_job(tmp_path / "j.yaml", job))
