from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning

from geoseg.cli.main import COMMANDS, cli
from geoseg.schema import IGNORE, POTSDAM

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real"
ATLANTA = REAL / "solaris_spacenet4_atlanta"
needs_real = pytest.mark.skipif(
    not ATLANTA.is_dir(),
    reason=f"shared real data not found at {ATLANTA} (only present in the project workspace)",
)
TF = Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0)


def _write(path, array, *, transform=TF, crs="EPSG:32633"):
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": array.dtype.name,
    }
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(array)
    return str(path)


def run(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    return res.exit_code, res.output


def assert_one_line_error(code, out, *needles):
    assert code == 1, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:"), out
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


@pytest.fixture
def rasters(tmp_path):
    rng = np.random.default_rng(7)
    truth = np.kron(rng.integers(0, 6, (8, 10)), np.ones((8, 8), int)).astype(np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.25
    pred[flip] = rng.integers(0, 6, int(flip.sum()))
    pred[:2] = IGNORE
    return {
        "pred": _write(tmp_path / "pred.tif", pred),
        "truth": _write(tmp_path / "truth.tif", truth),
        "label": _write(tmp_path / "label.tif", POTSDAM.encode(truth), crs=None),
        "tmp": tmp_path,
    }


def test_registered_and_help():
    assert COMMANDS["evaluate"] == "geoseg.cli.evaluate:evaluate"
    code, out = run("evaluate", "--help")
    assert code == 0
    assert "--vectors" in out and "--min-miou" in out and "$ geoseg evaluate" in out


def test_prints_table(rasters):
    code, out = run("evaluate", rasters["pred"], rasters["label"], "--ignore-class", "clutter")
    assert code == 0, out
    for name in (*POTSDAM.classes[:5], "clutter*", "OA", "mIoU", "mean F1"):
        assert name in out


def test_json_written_and_never_clobbered(rasters):
    out_json = rasters["tmp"] / "m.json"
    code, out = run(
        "evaluate", rasters["pred"], rasters["truth"], "--eroded", "2", "--json", out_json
    )
    assert code == 0, out
    report = json.loads(out_json.read_text())
    assert report["mode"] == "pixels" and report["eroded"] == 2
    assert report["schema"] == "potsdam"
    assert [c["name"] for c in report["classes"]] == list(POTSDAM.classes)
    assert 0 < report["miou"] < 1
    assert f"{100 * report['miou']:5.2f}" in out  # the table shows the same number
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--json", out_json)
    assert_one_line_error(code, out, "already exists", "--overwrite")
    code, out = run(
        "evaluate", rasters["pred"], rasters["truth"], "--json", out_json, "--overwrite"
    )
    assert code == 0
    assert json.loads(out_json.read_text())["eroded"] == 0


def test_min_miou_judges(rasters):
    out_json = rasters["tmp"] / "m.json"
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--json", out_json)
    miou = json.loads(out_json.read_text())["miou"]
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--min-miou", miou + 0.01)
    assert_one_line_error(code, out, "mIoU", "below the required minimum")
    code, out = run("evaluate", rasters["pred"], rasters["truth"], "--min-miou", miou - 0.01)
    assert code == 0, out


def test_grid_mismatch_is_a_one_line_error(rasters):
    shifted = _write(
        rasters["tmp"] / "shifted.tif",
        np.zeros((64, 80), np.uint8),
        transform=TF @ Affine.translation(3, 0),
    )
    code, out = run("evaluate", rasters["pred"], shifted)
    assert_one_line_error(code, out, "pred.tif", "shifted.tif", "same grid")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--ignore-class", "sky"], "'sky' is not a class"),
        (["--schema", "nope"], "no such schema"),
        (["--eroded", "-1"], "--eroded"),
        (["--min-miou", "2"], "--min-miou"),
        (["--vectors", "--eroded", "3"], "--eroded applies to raster mode"),
        (["--iou", "0.3"], "--iou applies to --vectors mode"),
    ],
)
def test_bad_options_exit_2(rasters, args, needle):
    code, out = run("evaluate", rasters["pred"], rasters["truth"], *args)
    assert code == 2, out
    assert needle in out


@needs_real
def test_vectors_atlanta_reference(tmp_path):
    out_json = tmp_path / "b.json"
    pred, gt = ATLANTA / "pred.geojson", ATLANTA / "gt.geojson"
    args = ("evaluate", "--vectors", pred, gt, "--confidence-column", "conf")
    code, out = run(*args, "--json", out_json)
    assert code == 0, out
    assert "F1" in out and "0.2857" in out
    report = json.loads(out_json.read_text())
    assert (report["tp"], report["fp"], report["fn"]) == (8, 20, 20)
    assert report["f1"] == 0.2857142857142857
    assert len(report["matches"]) == 8
    code, out = run(*args, "--min-f1", "0.3")
    assert_one_line_error(code, out, "building F1 0.2857", "0.3")


@needs_real
def test_vectors_missing_layer_lists_layers():
    code, out = run(
        "evaluate", "--vectors", ATLANTA / "pred.geojson", ATLANTA / "gt.geojson",
        "--truth-layer", "buildings",
    )  # fmt: skip
    assert_one_line_error(code, out, "no layer 'buildings'", "layers: gt", "--truth-layer")
