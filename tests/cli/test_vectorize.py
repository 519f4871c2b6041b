from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner

from geoseg.cli.main import COMMANDS, cli
from tests.conftest import write_raster


@pytest.fixture
def classes_tif(tmp_path: Path) -> Path:
    a = np.full((80, 90), 2, np.uint8)
    a[10:30, 10:40] = 1
    a[50:60, :] = 0
    a[0:4, 0:4] = 255
    return write_raster(tmp_path / "classes.tif", a, nodata=255)


def test_registered_and_help() -> None:
    assert COMMANDS["vectorize"] == "geoseg.cli.vectorize:vectorize"
    res = CliRunner().invoke(cli, ["vectorize", "--help"])
    assert res.exit_code == 0
    assert "$ geoseg vectorize" in res.output and "--centerlines" in res.output


def test_vectorize_writes_layers(classes_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    args = ["vectorize", str(classes_tif), "-o", str(out), "--block-size", "32", "--workers", "1"]
    res = CliRunner().invoke(cli, [*args, "--min-area", "0.01", "--simplify", "0.05"])
    assert res.exit_code == 0, res.output
    assert "buildings: 1" in res.output and "roads: 1" in res.output
    assert set(pyogrio.list_layers(out)[:, 0]) >= {"buildings", "roads", "layer_styles"}
    # Existing output: a one-line error, exit 1, file untouched.
    before = out.read_bytes()
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert "already exists" in res.output and "--overwrite" in res.output
    assert out.read_bytes() == before
    res = CliRunner().invoke(cli, [*args, "--overwrite", "--classes", "road", "--centerlines"])
    assert res.exit_code == 0, res.output
    assert set(pyogrio.list_layers(out)[:, 0]) >= {"roads", "road_centerlines"}
    assert "buildings" not in set(pyogrio.list_layers(out)[:, 0])


def test_parquet_directory(classes_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "pq"
    res = CliRunner().invoke(
        cli,
        ["vectorize", str(classes_tif), "-o", str(out), "--format", "parquet", "--workers", "1"],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["buildings.parquet", "roads.parquet"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-area", "-1"], "--min-area"),
        (["--simplify", "abc"], "--simplify"),
        (["--classes", ","], "--classes"),
        (["--classes", "road,road"], "repeats"),
        (["--block-size", "2"], "--block-size"),
        (["--schema", "nope"], "--schema"),
        (["--format", "shp"], "--format"),
    ],
)
def test_bad_options_exit_2(
    classes_tif: Path, tmp_path: Path, extra: list[str], message: str
) -> None:
    res = CliRunner().invoke(
        cli, ["vectorize", str(classes_tif), "-o", str(tmp_path / "x.gpkg"), *extra]
    )
    assert res.exit_code == 2
    assert message in res.output
    assert not (tmp_path / "x.gpkg").exists()


def test_library_error_exit_1(classes_tif: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        cli,
        ["vectorize", str(classes_tif), "-o", str(tmp_path / "x.gpkg"), "--classes", "river"],
    )
    assert res.exit_code == 1
    assert "not in schema 'potsdam'" in res.output
