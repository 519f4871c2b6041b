"""``geoseg bench train`` through the real CLI (CliRunner) and its tile store cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_train_measures_steps_loader_and_epochs_on_cpu(tmp_path: Path) -> None:
    args = ["bench", "train", "--model", "fcn_resnet18", "--device", "cpu", "--batch-size", "2"]
    args += ["--chip-size", "64", "--scene-size", "128", "--scenes", "2", "--workers", "1"]
    args += ["--seconds", "0.2", "--cache", str(tmp_path)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "8 chips per epoch" in lines[0]  # 2 scenes x (128 / 64)^2 chips
    rates = {}
    for line in lines[1:4]:
        label, value = line.split(":", 1)
        rates[label.strip()] = float(value.split()[0])
    assert set(rates) == {"(a) training steps", "(b) data loader", "(c) train epoch"}
    assert all(v > 0 for v in rates.values())
    assert "% of step time waiting for data" in lines[3] and "e2e / min(a, b)" in lines[4]
    # The chips stay in the cache for the next run.
    assert len(list(tmp_path.glob("train_tiles_*"))) == 1


def test_bench_train_refuses_chips_larger_than_the_scenes() -> None:
    args = ["bench", "train", "--chip-size", "512", "--scene-size", "256", "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--chip-size" in result.output


def test_bench_train_store_cache_survives_an_interrupted_tiling(tmp_path: Path) -> None:
    from geoseg.bench import bench_store
    from geoseg.tiles import read_store

    store = bench_store(tmp_path, scenes=1, scene_size=128, chip=64)
    (store / "index.gpkg").unlink()  # as if killed before the index was written
    assert bench_store(tmp_path, scenes=1, scene_size=128, chip=64) == store
    assert len(read_store(store)[1]) == 4
