"""Hostile class schemas through every door: tile, evaluate, vectorize and a job file.

Each bad schema is refused with one line naming the file and what is wrong, and nothing under
the test folder changes (the earlier outputs that ``--overwrite`` would replace included).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import write_raster
from tests.hostile.helpers import fails_cleanly

# name -> (file name, content or None for a folder, what the one line must say)
BAD = {
    "yaml": (
        "bad.yaml",
        "classes: [\n  {name: a, colour: [1, 2, 3]}\n  {name: b, colour: [3, 2, 1]}\n",
        "not valid YAML at line 3, column 3",
    ),
    "json": ("bad.json", '{"classes": [1, 2}', "not valid JSON at line 1, column 18"),
    "dup_colour": (
        "dup_colour.yaml",
        "classes: [{name: a, colour: [255, 0, 0]}, {name: b, colour: [255, 0, 0]}]",
        "classes 'a' and 'b' share the colour (255, 0, 0)",
    ),
    "dup_name": (
        "dup_name.yaml",
        "classes: [{name: a, colour: [1, 2, 3]}, {name: a, colour: [3, 2, 1]}]",
        "class 'a' is listed twice",
    ),
    "one_class": ("one.yaml", "classes: [{name: a, colour: [1, 2, 3]}]", "only one class ('a')"),
    "range": (
        "range.yaml",
        "classes: [{name: a, colour: [0, 0, 256]}, {name: b, colour: [-1, 0, 0]}]",
        "class 'a' colour (0, 0, 256) is outside 0..255",
    ),
    "empty": ("empty.yaml", "", "the schema is empty"),
    "folder": ("folder.yaml", None, "is a folder, not a schema file"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Potsdam scene, two class rasters, a checkpoint and every bad schema."""
    from geoseg.synth import synthesize
    from tests.pipeline.helpers import make_checkpoint

    root = tmp_path_factory.mktemp("schemas")
    synthesize(root / "data", scenes=1, size=64, seed=1)
    classes = (np.arange(32 * 32).reshape(32, 32) % 6).astype(np.uint8)
    write_raster(root / "pred.tif", classes, nodata=255)
    write_raster(root / "truth.tif", classes[::-1].copy(), nodata=255)
    make_checkpoint(root / "model.pt", tile_size=64)
    for name, text, _ in BAD.values():
        if text is None:
            (root / name).mkdir()
        else:
            (root / name).write_text(text)
    return root


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder holding earlier outputs that a failed command must leave alone."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "tiles.json").write_text('{"earlier": true}')
    (tmp_path / "v.gpkg").write_bytes(b"an earlier GeoPackage")
    (tmp_path / "m.json").write_text('{"miou": 0.5}')
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "manifest.json").write_text("{}")
    return tmp_path


CASES = sorted(BAD)


@pytest.mark.parametrize("bad", CASES)
def test_tile_refuses_bad_schema(world: Path, out: Path, bad: str) -> None:
    name, _, says = BAD[bad]
    schema = world / name
    fails_cleanly(
        "tile", world / "data", "-o", out / "store", "--overwrite", "--schema", schema,
        "--size", 32, "--overlap", 0,
        watch=out, code=2, names=(name, says),
    )  # fmt: skip


@pytest.mark.parametrize("bad", CASES)
def test_evaluate_refuses_bad_schema(world: Path, out: Path, bad: str) -> None:
    name, _, says = BAD[bad]
    f = fails_cleanly(
        "evaluate", world / "pred.tif", world / "truth.tif", "--json", out / "m.json",
        "--overwrite", "--schema", world / name,
        watch=out, code=2, names=(name, says),
    )  # fmt: skip
    assert "--schema" in f.message


@pytest.mark.parametrize("bad", CASES)
def test_vectorize_refuses_bad_schema(world: Path, out: Path, bad: str) -> None:
    name, _, says = BAD[bad]
    f = fails_cleanly(
        "vectorize", world / "pred.tif", "-o", out / "v.gpkg", "--overwrite",
        "--schema", world / name,
        watch=out, code=2, names=(name, says),
    )  # fmt: skip
    assert "--schema" in f.message


@pytest.mark.parametrize("bad", CASES)
def test_job_file_refuses_bad_schema(world: Path, out: Path, bad: str) -> None:
    name, _, says = BAD[bad]
    job = {
        "inputs": [{"potsdam": str(world / "data")}],
        "model": str(world / "model.pt"),
        "output": str(out / "job"),
        "schema": str(world / name),
        "steps": {"predict": {"tile_size": 64, "overlap": 8}},
    }
    path = out / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    f = fails_cleanly("run", path, watch=out, code=2, names=("job.yaml", "1 problem"))
    problems = [ln for ln in f.output.splitlines() if ln.startswith("  ")]
    assert len(problems) == 1, f.output
    assert problems[0].startswith(f"  schema: {world / name}:"), f.output
    assert says in problems[0], f.output
