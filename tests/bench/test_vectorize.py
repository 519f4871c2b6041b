"""``geoseg bench vectorize``: geoseg's vectorize against the naive way, in the same run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.bench import bench_vectorize, synthetic_class_map
from geoseg.cli.main import cli
from geoseg.errors import InputError


def test_synthetic_class_map_is_deterministic_and_block_independent(tmp_path: Path) -> None:
    a = synthetic_class_map(tmp_path / "a.tif", 300, seed=3, block=300)
    b = synthetic_class_map(tmp_path / "b.tif", 300, seed=3, block=300)
    with rasterio.open(a) as da, rasterio.open(b) as db:
        x, y = da.read(1), db.read(1)
        assert da.nodata == 255 and da.crs.to_epsg() == 32633
    np.testing.assert_array_equal(x, y)
    assert set(np.unique(x)) <= set(range(6)) and (x == 1).any() and (x == 0).any()


def test_bench_vectorize_reports_both_approaches(tmp_path: Path) -> None:
    report = bench_vectorize(size=256, block_size=128, workers=1, cache=tmp_path)
    assert report.size == 256 and report.megapixels == pytest.approx(0.065536)
    for r in (report.geoseg, report.naive):
        assert r.seconds > 0 and r.mpx_s > 0 and r.peak_rss_mb > 0
        assert set(r.layers) == {"buildings", "roads"}
    # Both vectorize the same map: the same number of building and road polygons.
    assert report.geoseg.layers == report.naive.layers
    assert report.naive.peak_worker_rss_mb is None
    assert (tmp_path / "classes_256_s0.tif").exists() and not list(tmp_path.glob("*.gpkg"))


def test_bench_vectorize_cli_tiny(tmp_path: Path) -> None:
    args = ["bench", "vectorize", "--size", "256", "--workers", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("class map 256x256 px")
    assert lines[1].startswith("geoseg") and lines[2].startswith("naive")
    assert "Mpx/s" in lines[1] and "peak RSS" in lines[2] and "geoseg / naive" in lines[3]


def test_bench_vectorize_refuses_a_tiny_map() -> None:
    with pytest.raises(InputError, match="at least 64"):
        bench_vectorize(size=32)
    result = CliRunner().invoke(cli, ["bench", "vectorize", "--size", "32"])
    assert result.exit_code == 2 and "--size" in result.output
