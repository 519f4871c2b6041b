"""``geoseg bench predict`` and ``geoseg bench memory`` (CliRunner) and their library."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.bench import measure_predict_memory
from geoseg.cli.main import COMMANDS, cli


def test_bench_commands_are_registered_and_help_works() -> None:
    assert COMMANDS["bench"] == "geoseg.cli.bench:bench"
    runner = CliRunner()
    for sub in ("predict", "memory", "train", "quality", "vectorize"):
        result = runner.invoke(cli, ["bench", sub, "--help"])
        assert result.exit_code == 0, result.output
        assert f"$ geoseg bench {sub}" in result.output
    result = runner.invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    for sub in ("predict", "memory", "train", "quality", "vectorize"):
        assert sub in result.output


def test_bench_predict_tiny_on_cpu(tmp_path: Path) -> None:
    args = ["bench", "predict", "--size", "200", "--model", "tiny", "--device", "cpu"]
    args += ["--tile-size", "64", "--overlap", "16", "--cache", str(tmp_path), "--seconds", "0.2"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "(a) model only" in result.output and "e2e / min(a, b)" in result.output
    assert "peak RSS" in result.output


def test_bench_predict_overlap_defaults_to_a_quarter_of_the_tile(tmp_path: Path) -> None:
    args = ["bench", "predict", "--size", "128", "--model", "tiny", "--device", "cpu"]
    args += ["--tile-size", "96", "--cache", str(tmp_path), "--seconds", "0", "--workers", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "tile 96/24," in result.output.splitlines()[0]


def test_bench_predict_refuses_an_overlap_as_large_as_the_tile() -> None:
    args = ["bench", "predict", "--model", "tiny", "--tile-size", "64", "--overlap", "64"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "--overlap" in result.output


def test_measure_predict_memory_in_a_child_process(tmp_path: Path) -> None:
    report = measure_predict_memory(96, cache=tmp_path, tile_size=64, block_size=64, workers=1)
    assert report.size == 96 and report.peak_rss_mb > 0 and report.tiles > 0
    assert report.blocks >= 1 and not list(tmp_path.glob("mem_out_*"))


def test_bench_predict_reports_the_host_cost_beside_the_read_floor(tmp_path: Path) -> None:
    from geoseg.bench import bench_predict

    rep = bench_predict(
        size=256, model="tiny", device="cpu", tile_size=64, block_size=128, cache=tmp_path,
        min_model_seconds=0.05,
    )  # fmt: skip
    host = rep.host
    assert host.floor_ms_per_mpx > 0 and host.total_ms_per_mpx > 0
    # on the CPU the device work is measured apart and the host is the rest
    assert 0 < host.device_ms_per_mpx < host.total_ms_per_mpx
    assert host.runs == 3 and host.host_range[0] <= host.host_ms_per_mpx <= host.host_range[1]
    assert host.ratio == pytest.approx(host.host_ms_per_mpx / host.floor_ms_per_mpx)
    # a seamless blend of a 1x1 model: tile borders are not special
    assert rep.seams["border_pairs"] and rep.seams["ratio"] is not None
    lines = "\n".join(rep.summary())
    assert "(d) host cost" in lines and "read floor" in lines and "seam score" in lines
