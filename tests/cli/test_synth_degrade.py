"""``geoseg synth --degrade`` and ``--style``: other-looking images over the same ground."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli

LABEL = Path("5_Labels_all") / "top_potsdam_2_10_label.tif"
IMAGE = Path("4_Ortho_RGBIR") / "top_potsdam_2_10_RGBIR.tif"
DSM = Path("1_DSM") / "dsm_potsdam_02_10.tif"


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def synth(out: Path, *extra: str) -> None:
    args = ["synth", str(out), "--scenes", "1", "--size", "128", "--seed", "5", *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output


def test_degrade_and_style_keep_labels_and_dsm(tmp_path: Path) -> None:
    synth(tmp_path / "clean")
    synth(tmp_path / "hazy", "--degrade", "1.5")
    synth(tmp_path / "other", "--style", "1")
    for name in ("hazy", "other"):
        np.testing.assert_array_equal(
            read(tmp_path / name / LABEL), read(tmp_path / "clean" / LABEL)
        )
        np.testing.assert_array_equal(read(tmp_path / name / DSM), read(tmp_path / "clean" / DSM))
        assert not np.array_equal(read(tmp_path / name / IMAGE), read(tmp_path / "clean" / IMAGE))
    manifest = json.loads((tmp_path / "hazy" / "synth.json").read_text())
    assert manifest["degrade"] == 1.5 and manifest["style"] == 0
    assert json.loads((tmp_path / "other" / "synth.json").read_text())["style"] == 1


@pytest.mark.parametrize(
    ("option", "value"), [("--degrade", "-1"), ("--degrade", "2.5"), ("--style", "3")]
)
def test_bad_values_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    res = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--size", "64", option, value])
    assert res.exit_code == 2 and option in res.output
    assert not (tmp_path / "s").exists()


def test_the_cli_limits_mirror_the_library() -> None:
    from geoseg.cli import synth as cli_synth
    from geoseg.synth import _degrade, _style

    res = CliRunner().invoke(cli, ["synth", "--help"], terminal_width=200)
    assert "--degrade STRENGTH" in res.output and "--style" in res.output
    assert cli_synth._STYLES == len(_style.STYLES)
    assert cli_synth._MAX_DEGRADE == _degrade.MAX_DEGRADE
