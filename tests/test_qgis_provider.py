"""geoseg's QGIS Processing provider (``geoseg/qgis_plugin``): its option spec, its command
lines, and the predict and vectorize algorithms run by ``processing.run`` in a real QGIS.

The plugin runs in QGIS's Python (``/usr/bin/python3`` with ``python3-qgis``), so the
algorithms run in ``tests/qgis_provider_probe.py``, a subprocess, with ``GEOSEG_EXECUTABLE``
naming this environment's ``geoseg``; their outputs must equal the CLI's. Skipped, with the
reason, where that Python has no ``qgis``. The pure parts (``command.py``) run here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.cli.qgis_plugin import PLUGIN_DIR, SPEC_FILE, plugin_spec, spec_text
from geoseg.options import PredictOptions, VectorizeOptions, option_fields
from geoseg.qgis_plugin.command import (
    CanceledError,
    executable,
    load_spec,
    option_args,
    run_command,
)
from tests.conftest import write_raster
from tests.predict.helpers import save_tiny_checkpoint
from tests.test_qgis import ENV, QGIS_PYTHON, needs_qgis

PROBE = Path(__file__).parent / "qgis_provider_probe.py"


def test_options_json_is_what_geoseg_declares() -> None:
    """The committed spec is in step (else: geoseg qgis-plugin --spec > options.json)."""
    assert SPEC_FILE.read_text(encoding="utf-8") == spec_text()
    assert load_spec() == plugin_spec()


@pytest.mark.parametrize(
    ("command", "record"), [("predict", PredictOptions), ("vectorize", VectorizeOptions)]
)
def test_spec_defaults_are_the_records(command: str, record: type) -> None:
    spec = {e["name"]: e for e in load_spec()[command]}
    fields = {f.name: (f, s) for f, s, _ in option_fields(record) if s.cli}
    assert set(spec) == set(fields)
    for name, (f, s) in fields.items():
        if f.default_factory is not None and callable(f.default_factory):  # computed
            assert spec[name]["default"] in (None, [], f.default_factory()), name
        elif isinstance(f.default, tuple):
            assert spec[name]["default"] in (",".join(f.default), list(f.default)), name
        else:
            assert spec[name]["default"] == f.default, name
        assert spec[name]["help"] == s.help
    blend = spec.get("blend")
    if blend is not None:
        assert blend["choices"] == ["hann", "spline", "mean"]


def test_only_options_that_differ_from_the_default_reach_the_command_line() -> None:
    spec = load_spec()["predict"]
    values = {"tile_size": 64, "overlap": None, "tta": "none", "blend": "mean"}
    values |= {"probabilities": True, "compile": False, "creation_options": ["ZLEVEL=9"]}
    assert option_args(spec, values) == [
        "--tile-size", "64", "--probabilities", "--blend", "mean", "--co", "ZLEVEL=9",
    ]  # fmt: skip
    assert option_args(load_spec()["vectorize"], {"min_area": 2, "simplify": 0.0}) == [
        "--min-area",
        "2.0",
    ]


def test_the_executable_comes_from_the_setting_then_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GEOSEG_EXECUTABLE", "/opt/py -m geoseg.cli")
    assert executable("") == ["/opt/py", "-m", "geoseg.cli"]
    spaced = tmp_path / "my geoseg"
    spaced.touch()
    assert executable(str(spaced)) == [str(spaced)]
    monkeypatch.delenv("GEOSEG_EXECUTABLE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="GEOSEG_EXECUTABLE"):
        executable(None)


def test_progress_lines_and_cancellation() -> None:
    child = (
        "import sys, time, tqdm\n"
        "print('hello', flush=True)\n"
        "for _ in tqdm.tqdm(range(4), disable=None, mininterval=0):\n"
        "    time.sleep(0.05)\n"
        "time.sleep(60)\n"
    )
    lines: list[str] = []
    progress: list[float] = []
    seen = {"n": 0}

    def cancel() -> bool:
        seen["n"] += 1
        return 100.0 in progress

    start = time.monotonic()
    with pytest.raises(CanceledError):
        run_command(
            [sys.executable, "-c", child],
            on_line=lines.append,
            on_progress=progress.append,
            is_canceled=cancel,
        )
    assert time.monotonic() - start < 30  # ended, not waited for
    assert "hello" in lines
    if sys.platform != "win32":  # progress through a pseudo-terminal
        assert progress[-1] == 100.0 and progress[0] < 100.0


def test_install_copies_the_plugin(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["qgis-plugin", "--install", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "geoseg" / "metadata.txt").is_file()
    assert (tmp_path / "geoseg" / "options.json").read_text() == SPEC_FILE.read_text()
    again = CliRunner().invoke(cli, ["qgis-plugin", "--install", str(tmp_path)])
    assert again.exit_code == 1 and "--overwrite" in again.output


def _features(gpkg: Path) -> dict[str, Any]:
    """Each layer's columns, attribute rows and geometries (WKB); the styles table too."""
    out = {}
    for layer, _ in pyogrio.list_layers(gpkg):
        frame = gpd.read_file(gpkg, layer=layer)
        geoms = [g.wkb for g in frame.geometry] if "geometry" in frame.columns else []
        rows = frame.drop(columns=["geometry", "update_time"], errors="ignore")
        out[layer] = (list(frame.columns), rows.values.tolist(), geoms)
    return out


@needs_qgis
def test_processing_run_equals_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = write_raster(tmp_path / "top.tif", rng.integers(1, 256, (3, 80, 100)).astype(np.uint8))
    model = save_tiny_checkpoint(tmp_path / "m.pt")
    opts = ["--tile-size", "64", "--overlap", "16", "--device", "cpu", "--probabilities"]
    opts += ["--block-size", "64"]
    cli_maps, cli_gpkg = tmp_path / "cli_maps", tmp_path / "cli.gpkg"
    res = CliRunner().invoke(
        cli, ["predict", "--image", str(image), "-m", str(model), "-o", str(cli_maps), *opts]
    )
    assert res.exit_code == 0, res.output
    vec_opts = ["--min-area", "1.0", "--simplify", "0.1"]
    res = CliRunner().invoke(
        cli, ["vectorize", str(cli_maps / "top_classes.tif"), "-o", str(cli_gpkg), *vec_opts]
    )
    assert res.exit_code == 0, res.output

    qgis_maps, qgis_gpkg = tmp_path / "qgis_maps", tmp_path / "qgis.gpkg"
    predict = {"IMAGE": str(image), "MODEL": str(model), "OUTPUT": str(qgis_maps)}
    predict |= {"TILE_SIZE": 64, "OVERLAP": 16, "DEVICE": "cpu", "PROBABILITIES": True}
    predict |= {"BLOCK_SIZE": 64}
    vectorize = {"INPUT": str(qgis_maps / "top_classes.tif"), "OUTPUT": str(qgis_gpkg)}
    vectorize |= {"MIN_AREA": 1.0, "SIMPLIFY": 0.1}
    (tmp_path / "p.json").write_text(json.dumps(predict))
    (tmp_path / "v.json").write_text(json.dumps(vectorize))
    geoseg = str(Path(sys.executable).with_name("geoseg"))
    runs = [
        "geoseg:predict",
        str(tmp_path / "p.json"),
        "geoseg:vectorize",
        str(tmp_path / "v.json"),
    ]
    done = subprocess.run(
        [QGIS_PYTHON, str(PROBE), str(PLUGIN_DIR.parent), *runs],
        env={**ENV, "GEOSEG_EXECUTABLE": geoseg},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["algorithms"] == ["geoseg:predict", "geoseg:run", "geoseg:vectorize"]
    p_run, v_run = report["runs"]
    assert p_run["result"]["CLASSES"] == str(qgis_maps / "top_classes.tif")
    assert p_run["result"]["PROBABILITIES"] == str(qgis_maps / "top_probs.tif")
    assert p_run["progress"] and p_run["progress"][-1] == 100.0
    # the logged command line is the CLI's, to copy
    assert p_run["commands"] == [p_run["result"]["COMMAND"]]
    assert shlex.split(p_run["commands"][0]) == [
        geoseg, "predict", "--image", str(image), "-m", str(model), "-o", str(qgis_maps), *opts
    ]  # fmt: skip
    assert shlex.split(v_run["result"]["COMMAND"]) == [
        geoseg, "vectorize", str(qgis_maps / "top_classes.tif"), "-o", str(qgis_gpkg), *vec_opts
    ]  # fmt: skip

    for name in ("top_classes.tif", "top_probs.tif"):
        with rasterio.open(cli_maps / name) as a, rasterio.open(qgis_maps / name) as b:
            assert a.profile == b.profile
            np.testing.assert_array_equal(a.read(), b.read())
    assert (qgis_maps / "top_classes.qml").is_file()
    got, want = _features(qgis_gpkg), _features(cli_gpkg)
    assert set(want) >= {"buildings", "roads"}
    assert got == want
