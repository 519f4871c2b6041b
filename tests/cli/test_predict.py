"""``geoseg predict`` and ``geoseg bench`` through the real CLI (CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import COMMANDS, cli
from tests.conftest import write_raster
from tests.predict.helpers import save_tiny_checkpoint


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return write_raster(tmp_path / "top.tif", rng.integers(1, 256, (3, 80, 100)).astype(np.uint8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt")


def test_commands_are_registered_and_help_works() -> None:
    assert COMMANDS["predict"] == "geoseg.cli.predict:predict"
    assert COMMANDS["bench"] == "geoseg.cli.bench:bench"
    runner = CliRunner()
    for args in (["predict", "--help"], ["bench", "--help"], ["bench", "predict", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "$ geoseg" in result.output


def test_predict_writes_the_outputs(tmp_path: Path, scene: Path, checkpoint: Path) -> None:
    out = tmp_path / "maps"
    args = ["predict", str(scene), "-m", str(checkpoint), "-o", str(out), "--tile-size", "64"]
    args += ["--overlap", "16", "--device", "cpu", "--probabilities", "--block-size", "64"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "top_classes.tif" in result.output
    with rasterio.open(out / "top_classes.tif") as ds:
        assert ds.shape == (80, 100) and ds.nodata == 255
    assert (out / "top_probs.tif").exists() and (out / "top_classes.tif.aux.xml").exists()
    side = json.loads((out / "top.json").read_text())
    assert side["options"]["overlap"] == 16 and side["options"]["probabilities"] is True

    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1
    assert "already exists" in again.output and "--overwrite" in again.output
    assert len(again.output.strip().splitlines()) == 1


def test_bad_options_are_usage_errors(tmp_path: Path, scene: Path, checkpoint: Path) -> None:
    base = ["predict", str(scene), "-m", str(checkpoint), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*base, "--tile-size", "64", "--overlap", "64"])
    assert result.exit_code == 2 and "--overlap" in result.output
    result = CliRunner().invoke(cli, [*base, "--tta", "rot"])
    assert result.exit_code == 2


def test_missing_band_is_a_one_line_error(tmp_path: Path, scene: Path, checkpoint: Path) -> None:
    args = ["predict", str(scene), "-m", str(checkpoint), "-o", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*args, "--band-names", "red,green,nir"])
    assert result.exit_code == 1
    assert "blue" in result.output and "lacks band" in result.output
