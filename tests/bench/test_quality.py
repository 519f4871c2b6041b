"""``geoseg bench quality`` (the training-quality benchmark) at the smallest settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--train-scenes", "2", "--val-scenes", "1", "--test-scenes", "1", "--scene-size", "128"]
TINY += ["--chip", "64", "--downsample", "2", "--crop", "32", "--model", "fcn_resnet18"]
TINY += ["--encoder", "", "--batch-size", "2"]


def test_bench_quality_plans_epochs_trains_and_scores(tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = ["bench", "quality", "--workdir", str(work), "--minutes", "0.5", *TINY]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "test mIoU" in result.output and "mean F1" in result.output
    report = json.loads((work / "bench_train.json").read_text())
    assert report["budget_s"] == 30.0 and report["device"] == "cpu"
    assert report["settings"]["train_chips"] == 4 and report["settings"]["val_chips"] == 4
    assert report["settings"]["test_chips"] == 4 and report["settings"]["val_scenes"]
    config = report["settings"]["config"]
    assert config["encoder"] is None and config["chip_size"] == 32 and config["downsample"] == 2
    assert len(report["history"]) >= 1 and 0.0 <= report["test"]["miou"] <= 1.0
    assert (work / "model.pt").exists()


def test_bench_quality_refuses_impossible_splits_and_sizes(tmp_path: Path) -> None:
    base = ["bench", "quality", "--workdir", str(tmp_path)]
    result = CliRunner().invoke(cli, [*base, "--chip", "256", "--scene-size", "128"])
    assert result.exit_code == 2 and "--chip" in result.output
    result = CliRunner().invoke(cli, [*base, "--train-scenes", "2", "--val-scenes", "2"])
    assert result.exit_code == 2 and "--val-scenes" in result.output
    result = CliRunner().invoke(cli, [*base, "--class-weights", "inverse"])
    assert result.exit_code == 2
    assert not list(tmp_path.iterdir())
