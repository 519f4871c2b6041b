from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli


def test_synth_writes_a_potsdam_folder(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    res = CliRunner().invoke(
        cli, ["synth", str(out), "--scenes", "2", "--size", "128", "--seed", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "2_10, 2_11" in res.output
    with rasterio.open(out / "4_Ortho_RGBIR" / "top_potsdam_2_11_RGBIR.tif") as ds:
        assert (ds.count, ds.width, ds.height) == (4, 128, 128)
    assert (out / "1_DSM" / "dsm_potsdam_02_11.tif").exists()
    assert (out / "truth.gpkg").exists()


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    args = ["synth", str(out), "--scenes", "1", "--size", "64"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "already exists" in lines[0] and "--overwrite" in lines[0]
    assert (out / "mine.txt").read_text() == "keep"
    res = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert not (out / "mine.txt").exists()
    assert (out / "5_Labels_all" / "top_potsdam_2_10_label.tif").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--size", "10"),
        ("--size", "100000"),
        ("--size", "big"),
        ("--scenes", "0"),
        ("--seed", "-1"),
    ],
)
def test_bad_values_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    out = tmp_path / "synth"
    res = CliRunner().invoke(cli, ["synth", str(out), option, value])
    assert res.exit_code == 2
    assert option in res.output
    assert not out.exists()


def test_help_shows_examples() -> None:
    res = CliRunner().invoke(cli, ["synth", "--help"])
    assert res.exit_code == 0
    assert "$ geoseg synth" in res.output
    for opt in ("--scenes", "--size", "--seed", "--overwrite"):
        assert opt in res.output
