from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.pipeline import LOCK_NAME
from tests.conftest import write_raster
from tests.pipeline.helpers import job_dict, make_data, shared_checkpoint, write_job


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli-run")
    make_data(root / "data", scenes=2, size=64)
    return root / "data", shared_checkpoint(tmp_path_factory)


def test_three_mistakes_exit_2_listing_all_and_nothing_runs(
    tmp_path: Path, assets: tuple[Path, Path]
) -> None:
    data, model = assets
    job = job_dict(data, model, "out")
    job["steps"]["predict"]["overlap"] = -4
    job["steps"]["vectorize"]["regularise"] = True
    job["inputs"].append({"image": "missing.tif"})
    path = write_job(tmp_path / "job.yaml", job)
    res = CliRunner().invoke(cli, ["run", str(path)])
    assert res.exit_code == 2, res.output
    assert "3 problems; nothing was run" in res.output
    assert "steps.predict.overlap: -4 must be >= 0" in res.output
    assert "steps.vectorize.regularise: unknown key; did you mean 'regularize'?" in res.output
    assert f"inputs[1].image: {tmp_path / 'missing.tif'} does not exist" in res.output
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, assets: tuple[Path, Path]
) -> None:
    data, model = assets
    path = write_job(tmp_path / "job.yaml", job_dict(data, model, "out"))
    res = CliRunner().invoke(cli, ["run", str(path), "--dry-run", "--workers", "3"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "2 scene(s) x 4 step(s), 8 to run, 0 up to date" in lines[0]
    assert lines[2].split() == ["2_10", "predict", "run", "new"]
    assert len(lines) == 2 + 8
    assert not (tmp_path / "out").exists()


def test_a_locked_output_exits_1_with_one_line(tmp_path: Path, assets: tuple[Path, Path]) -> None:
    data, model = assets
    path = write_job(tmp_path / "job.yaml", job_dict(data, model, "out"))
    (tmp_path / "out").mkdir()
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": "2026-01-01T00:00:00+00:00",
        "create_time": psutil.Process().create_time(),
        "boot_time": psutil.boot_time(),
        "token": "t",
    }
    (tmp_path / "out" / LOCK_NAME).write_text(json.dumps(holder))
    res = CliRunner().invoke(cli, ["run", str(path)])
    assert res.exit_code == 1
    (line,) = res.output.strip().splitlines()
    assert line.startswith("Error: ") and f"pid {os.getpid()}" in line
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [LOCK_NAME]


def test_a_failed_scene_exits_1_and_names_it(tmp_path: Path, assets: tuple[Path, Path]) -> None:
    _, model = assets
    rgb = write_raster(tmp_path / "rgb.tif", np.full((3, 64, 64), 90, np.uint8))
    job = job_dict(tmp_path, model, "out")
    job["inputs"] = [{"image": str(rgb)}]
    del job["steps"]["evaluate"]
    path = write_job(tmp_path / "job.yaml", job)
    res = CliRunner().invoke(cli, ["run", str(path)])
    assert res.exit_code == 1, res.output
    assert "rgb predict failed" in res.output
    assert "Error: 1 scene(s) failed, 0 check(s) failed: rgb (predict:" in res.output
    assert (tmp_path / "out" / "manifest.json").exists()


def test_bad_options_exit_2(tmp_path: Path) -> None:
    path = write_job(tmp_path / "job.yaml", "{}")
    res = CliRunner().invoke(cli, ["run", str(path), "--workers", "0"])
    assert res.exit_code == 2 and "--workers" in res.output
    res = CliRunner().invoke(cli, ["run", str(path), "--scheduler", "10.0.0.5:8786"])
    assert res.exit_code == 2 and "tcp://HOST:PORT" in res.output
