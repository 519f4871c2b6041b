"""``geoseg export``: the command, its one-line errors and its never-clobber rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from geoseg.checkpoint import Checkpoint, save_checkpoint
from geoseg.cli.main import cli
from geoseg.schema import POTSDAM

pytest.importorskip("onnxruntime", reason="geoseg[export] (onnxruntime) not installed")
pytest.importorskip("onnx", reason="geoseg[export] (onnx) not installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    ckpt = Checkpoint.untrained(
        "fcn_resnet18",
        bands=("red", "green", "blue"),
        mean=(100.0, 100.0, 100.0),
        std=(50.0, 50.0, 50.0),
        schema=POTSDAM,
        tile_size=32,
        gsd=0.3,
    )
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("ckpt") / "model.pt")


def invoke(*args: object):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def one_line_error(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("Error: ")
    return lines[0]


def test_export_writes_model_and_card(model, tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    res = invoke(model, "-o", out, "--overlap", 8)
    assert res.exit_code == 0, res.output
    assert "overlap 25%" in res.output and "max abs diff" in res.output
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["resolution_cm_per_px"] == pytest.approx(30.0)
    assert card["tile_size"] == 32 and card["overlap_px"] == 8
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.onnx"]


def test_existing_outputs_are_not_clobbered(model, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    res = invoke(model, "-o", out)
    assert res.exit_code == 1
    assert "already exists" in one_line_error(res) and "--overwrite" in res.output
    assert out.read_bytes() == b"keep me"
    # the card is an output too
    out.unlink()
    out.with_suffix(".json").write_text("{}")
    res = invoke(model, "-o", out)
    assert res.exit_code == 1 and "m.json" in one_line_error(res)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]  # no temporaries left
    res = invoke(model, "-o", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads(out.with_suffix(".json").read_text())["model"] == "m.onnx"


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: d / "missing.pt", "checkpoint not found"),
        (lambda d: (d / "notes.pt", (d / "notes.pt").write_text("hello"))[0], "not a geoseg"),
    ],
)
def test_bad_checkpoint_is_one_line(make, expect, tmp_path):
    res = invoke(make(tmp_path), "-o", tmp_path / "m.onnx")
    assert res.exit_code == 1
    assert expect in one_line_error(res)
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.json").exists()


def test_bad_output_name_and_options(model, tmp_path):
    res = invoke(model, "-o", tmp_path / "m.pt")
    assert res.exit_code == 1 and "must end in .onnx" in one_line_error(res)
    res = invoke(model, "-o", tmp_path / "m.onnx", "--tile-size", 64, "--overlap", 64)
    assert res.exit_code == 2 and "smaller than the tile size" in res.output
    res = invoke(model, "-o", tmp_path / "m.onnx", "--input-scale", 0)
    assert res.exit_code != 0 and "input" in res.output.lower()
    assert not any(tmp_path.iterdir())


def test_missing_onnx_packages_say_how_to_install(model, tmp_path, monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in {"onnx", "onnxruntime"} else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    res = invoke(model, "-o", tmp_path / "m.onnx")
    assert res.exit_code == 1
    assert "pip install 'geoseg[export]'" in one_line_error(res)
