"""A job whose model has a contact output records the contact raster of every scene."""

from __future__ import annotations

from pathlib import Path

from geoseg.pipeline import load_job, run_job
from tests.pipeline.helpers import make_checkpoint, make_data, manifest, sha, write_job


def test_predict_records_the_contact_raster(tmp_path: Path) -> None:
    ids = make_data(tmp_path / "data", scenes=1, size=128, seed=3)
    model = make_checkpoint(tmp_path / "contact.pt", tile_size=64, extra_outputs=("contact",))
    job = {
        "inputs": [{"potsdam": str(tmp_path / "data")}],
        "model": str(model),
        "output": str(tmp_path / "out"),
        "workers": 1,
        "steps": {"predict": {"tile_size": 64, "overlap": 16}},
    }
    report = run_job(load_job(write_job(tmp_path / "job.yaml", job)))
    assert report.ok
    out = tmp_path / "out"
    rec = manifest(out)["scenes"][ids[0]]["steps"]["predict"]
    outputs = {o["name"]: o for o in rec["outputs"]}
    assert outputs["contact"]["path"] == f"maps/{ids[0]}_contact.tif"
    assert sha(out / outputs["contact"]["path"]) == outputs["contact"]["sha256"]
    again = run_job(load_job(tmp_path / "job.yaml"))  # up to date, contact included
    assert again.ran == 0
    (out / outputs["contact"]["path"]).unlink()  # a missing contact raster: predict again
    third = run_job(load_job(tmp_path / "job.yaml"))
    assert third.ran >= 1 and (out / outputs["contact"]["path"]).is_file()
