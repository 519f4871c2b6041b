"""Absurd option values for every command: exit 2, one line naming the option and the value.

The options are refused while the command line is parsed, before any input is read or any
output or work folder exists; the inputs here are tiny stand-ins (a model file of junk bytes,
an empty tile store) because a value refused at parse time never reaches them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_raster
from tests.hostile.helpers import fails_cleanly


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in inputs: a scene folder, a class raster, a polygon layer, a store, a model."""
    import geopandas as gpd
    from shapely.geometry import box

    root = tmp_path_factory.mktemp("options")
    scene = root / "data" / "4_Ortho_RGBIR"
    scene.mkdir(parents=True)
    write_raster(scene / "top_potsdam_2_10_RGBIR.tif", np.zeros((4, 32, 32), np.uint8))
    classes = (np.arange(32 * 32).reshape(32, 32) % 6).astype(np.uint8)
    write_raster(root / "pred.tif", classes, nodata=255)
    write_raster(root / "truth.tif", classes, nodata=255)
    frame = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1), box(2, 2, 3, 3)], crs="EPSG:32633")
    frame.to_file(root / "v.gpkg", layer="buildings")
    (root / "store").mkdir()
    (root / "model.pt").write_bytes(b"not a checkpoint")
    (root / "job.yaml").write_text("not: checked\n")
    return root


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An output folder with an earlier output in it."""
    (tmp_path / "earlier.txt").write_text("earlier")
    return tmp_path


def _args(command: str, world: Path, out: Path) -> list[object]:
    return {
        "tile": ["tile", world / "data", "-o", out / "store"],
        "train": ["train", world / "store", "-o", out / "m.pt"],
        "predict": ["predict", world / "data", "-m", world / "model.pt", "-o", out / "maps"],
        "vectorize": ["vectorize", world / "pred.tif", "-o", out / "v.gpkg"],
        "evaluate": ["evaluate", world / "pred.tif", world / "truth.tif"],
        "evaluate-vectors": ["evaluate", world / "v.gpkg", world / "v.gpkg", "--vectors"],
        "synth": ["synth", out / "synth"],
        "run": ["run", world / "job.yaml"],
    }[command]


# (command, extra arguments, the option the line must name, and the value it must show)
CASES = [
    ("tile", ["--size", "0"], "--size", "0 must be >= 16"),
    ("tile", ["--size", "-5"], "--size", "-5"),
    ("tile", ["--size", "abc"], "--size", "'abc' is not an integer"),
    ("tile", ["--size", "64", "--overlap", "64"], "--overlap", "64 must be smaller"),
    ("tile", ["--size", "64", "--overlap", "100"], "--overlap", "100"),
    ("tile", ["--overlap", "-1"], "--overlap", "-1"),
    ("tile", ["--min-valid", "2"], "--min-valid", "2.0 must be between 0 and 1"),
    ("tile", ["--min-valid", "nan"], "--min-valid", "nan"),
    ("tile", ["--min-valid", "-0.1"], "--min-valid", "-0.1"),
    ("tile", ["--workers", "0"], "--workers", "0 must be >= 1"),
    ("tile", ["--compress", "brotli"], "--compress", "'brotli'"),
    ("tile", ["--potsdam-labels", "maybe"], "--potsdam-labels", "'maybe'"),
    ("tile", ["--ids", ","], "--ids", "at least one"),
    ("train", ["--epochs", "0"], "--epochs", "0 must be >= 1"),
    ("train", ["--batch-size", "0"], "--batch-size", "0"),
    ("train", ["--lr", "-1"], "--lr", "-1.0 must be a finite number > 0"),
    ("train", ["--lr", "0"], "--lr", "0.0"),
    ("train", ["--lr", "nan"], "--lr", "nan"),
    ("train", ["--lr", "inf"], "--lr", "inf"),
    ("train", ["--lr", "1e999"], "--lr", "inf"),
    ("train", ["--weight-decay", "2"], "--weight-decay", "2.0"),
    ("train", ["--schedule", "sometimes"], "--schedule", "'sometimes'"),
    ("train", ["--loss", "bogus"], "--loss", "'bogus'"),
    ("train", ["--loss", "ce*0"], "--loss", "weight > 0"),
    ("train", ["--loss", "ce*nan"], "--loss", "'ce*nan'"),
    ("train", ["--model", "nope"], "--model", "unknown model 'nope'"),
    ("train", ["--val-fraction", "1.5"], "--val-fraction", "1.5"),
    ("train", ["--chip-size", "0"], "--chip-size", "0"),
    ("train", ["--downsample", "0"], "--downsample", "0"),
    ("train", ["--workers", "-1"], "--workers", "-1 must be >= 0"),
    ("train", ["--device", "tpu"], "--device", "'tpu'"),
    ("train", ["--class-weights", "maybe"], "--class-weights", "'maybe'"),
    ("train", ["--seed", "-1"], "--seed", "-1"),
    ("predict", ["--tile-size", "0"], "--tile-size", "0"),
    ("predict", ["--tile-size", "64", "--overlap", "64"], "--overlap", "64 must be smaller"),
    ("predict", ["--batch-size", "0"], "--batch-size", "0"),
    ("predict", ["--workers", "0"], "--workers", "0"),
    ("predict", ["--co", "BAD"], "--co", "'BAD' is not of the form KEY=VAL"),
    ("predict", ["--co", "=x"], "--co", "'=x'"),
    ("predict", ["--precision", "fp8"], "--precision", "'fp8'"),
    ("predict", ["--tta", "many"], "--tta", "'many'"),
    ("predict", ["--blend", "max"], "--blend", "'max'"),
    ("predict", ["--block-size", "0"], "--block-size", "0"),
    ("predict", ["--device", "tpu"], "--device", "'tpu'"),
    ("vectorize", ["--min-area", "-1"], "--min-area", "-1.0"),
    ("vectorize", ["--min-area", "nan"], "--min-area", "nan"),
    ("vectorize", ["--min-area", "inf"], "--min-area", "inf"),
    ("vectorize", ["--hole-area", "nan"], "--hole-area", "nan"),
    ("vectorize", ["--simplify", "-0.5"], "--simplify", "-0.5"),
    ("vectorize", ["--spur-length", "-1"], "--spur-length", "-1.0"),
    ("vectorize", ["--block-size", "0"], "--block-size", "0"),
    ("vectorize", ["--workers", "0"], "--workers", "0"),
    ("vectorize", ["--format", "shp"], "--format", "'shp'"),
    ("vectorize", ["--classes", ","], "--classes", "at least one"),
    ("vectorize", ["--schema", "nope"], "--schema", "nope"),
    ("evaluate", ["--eroded", "-1"], "--eroded", "-1"),
    ("evaluate", ["--block-size", "0"], "--block-size", "0"),
    ("evaluate", ["--min-miou", "2"], "--min-miou", "2.0"),
    ("evaluate", ["--min-miou", "nan"], "--min-miou", "nan"),
    ("evaluate", ["--ignore-class", "nope"], "--ignore-class", "'nope'"),
    ("evaluate", ["--iou", "0.5"], "--iou", "--vectors mode"),
    ("evaluate-vectors", ["--iou", "1"], "--iou", "1.0"),
    ("evaluate-vectors", ["--iou", "-0.5"], "--iou", "-0.5"),
    ("evaluate-vectors", ["--min-f1", "2"], "--min-f1", "2.0"),
    ("evaluate-vectors", ["--min-area", "-1"], "--min-area", "-1.0"),
    ("evaluate-vectors", ["--eroded", "2"], "--eroded", "raster mode"),
    ("synth", ["--size", "10"], "--size", "10"),
    ("synth", ["--scenes", "0"], "--scenes", "0"),
    ("run", ["--workers", "0"], "--workers", "0"),
    ("run", ["--scheduler", "localhost"], "--scheduler", "'localhost'"),
]


@pytest.mark.parametrize(
    ("command", "extra", "option", "says"),
    CASES,
    ids=[f"{c}{''.join(e)}" for c, e, _, _ in CASES],
)
def test_absurd_option_is_a_usage_error(
    world: Path, out: Path, command: str, extra: list[str], option: str, says: str
) -> None:
    fails_cleanly(*_args(command, world, out), *extra, watch=out, code=2, names=(option, says))


# Gaps found by this suite and closed: --scheduler was not checked by predict, and
# click.FloatRange let NaN through in evaluate.
CLOSED_GAPS = [
    pytest.param(
        "predict",
        ["--scheduler", "localhost"],
        "--scheduler",
        "'localhost'",
        id="predict--scheduler-localhost",
    ),
    pytest.param(
        "evaluate-vectors",
        ["--min-area", "nan"],
        "--min-area",
        "nan",
        id="evaluate-vectors--min-area-nan",
    ),
    pytest.param(
        "evaluate-vectors",
        ["--min-f1", "nan"],
        "--min-f1",
        "nan",
        id="evaluate-vectors--min-f1-nan",
    ),
    pytest.param(
        "evaluate-vectors",
        ["--iou", "nan"],
        "--iou",
        "nan",
        id="evaluate-vectors--iou-nan",
    ),
]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real scene and checkpoint, for values that would pass the parse and go on."""
    from geoseg.synth import synthesize
    from tests.pipeline.helpers import make_checkpoint

    root = tmp_path_factory.mktemp("options-real")
    synthesize(root / "data", scenes=1, size=64, seed=1)
    make_checkpoint(root / "model.pt", tile_size=64)
    return root


@pytest.mark.parametrize(("command", "extra", "option", "says"), CLOSED_GAPS)
def test_absurd_option_closed_gaps(
    world: Path,
    real: Path,
    out: Path,
    command: str,
    extra: list[str],
    option: str,
    says: str,
) -> None:
    args = _args(command, world, out)
    if command == "predict":
        args = ["predict", real / "data", "-m", real / "model.pt", "-o", out / "maps"]
    fails_cleanly(*args, *extra, watch=out, code=2, names=(option, says))
