from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.schema import POTSDAM
from tests.conftest import POTSDAM_TF, write_raster


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def assert_one_line_error(code: int, out: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), out
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    img = write_raster(tmp_path / "img.tif", rng.integers(1, 255, (4, 100, 120), dtype=np.uint8))
    dsm = write_raster(tmp_path / "dsm.tif", np.full((100, 120), 30, np.float32))
    lab = write_raster(
        tmp_path / "lab.tif", POTSDAM.encode(rng.integers(0, 6, (100, 120)).astype(np.uint8))
    )
    return {"image": img, "dsm": dsm, "labels": lab}


def test_tile_writes_store(scene: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "store"
    code, text = run(
        "tile",
        "--image",
        str(scene["image"]),
        "--dsm",
        str(scene["dsm"]),
        "--labels",
        str(scene["labels"]),
        "-o",
        str(out),
        "--size",
        "64",
        "--overlap",
        "8",
    )
    assert code == 0, text
    assert "4 chips in the index" in text and (out / "index.gpkg").exists()
    code, text = run(
        "tile",
        "--image",
        str(scene["image"]),
        "-o",
        str(out),
        "--size",
        "64",
        "--overlap",
        "8",
        "--dsm",
        str(scene["dsm"]),
        "--labels",
        str(scene["labels"]),
    )
    assert code == 0 and "4 already complete" in text


@pytest.mark.parametrize("compress", ["none", "zstd"])
def test_chip_compression_option(scene: dict[str, Path], tmp_path: Path, compress: str) -> None:
    import rasterio

    from geoseg.data import read_labelled_chip

    files = ["--image", str(scene["image"]), "--dsm", str(scene["dsm"])]
    files += ["--labels", str(scene["labels"]), "--size", "64", "--overlap", "8"]
    code, text = run("tile", *files, "-o", str(tmp_path / "c"), "--compress", compress)
    assert code == 0, text
    code, text = run("tile", *files, "-o", str(tmp_path / "d"))
    assert code == 0, text
    for a, b in zip(
        sorted((tmp_path / "c").rglob("*.tif")),
        sorted((tmp_path / "d").rglob("*.tif")),
        strict=True,
    ):
        with rasterio.open(a) as ds:
            assert (ds.profile.get("compress") or "none").lower() == compress
        for x, y in zip(read_labelled_chip(a), read_labelled_chip(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Resuming a store with another compression is refused, not mixed.
    code, text = run("tile", *files, "-o", str(tmp_path / "c"))
    assert_one_line_error(code, text, "other options")


def test_not_a_raster(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tif"
    junk.write_text("hello")
    code, out = run("tile", str(junk), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "junk.tif", "not a readable raster")
    assert not (tmp_path / "o").exists()


def test_truncated(tmp_path: Path) -> None:
    big = write_raster(
        tmp_path / "big.tif",
        np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8),
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    cut = tmp_path / "cut.tif"
    cut.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    code, out = run("tile", str(cut), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "cut.tif")
    assert not (tmp_path / "o").exists()


def test_no_crs(tmp_path: Path) -> None:
    p = write_raster(
        tmp_path / "nocrs.tif", np.ones((3, 32, 32), np.uint8), crs=None, transform=None
    )
    code, out = run("tile", str(p), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "nocrs.tif", "no CRS", "gdal_edit")
    assert not (tmp_path / "o").exists()


def test_unexpected_band_count(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "two.tif", np.ones((2, 32, 32), np.uint8))
    code, out = run("tile", str(p), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "two.tif", "found 2", "--band-names")


def test_unexpected_dtype(tmp_path: Path, scene: dict[str, Path]) -> None:
    lab16 = write_raster(tmp_path / "lab16.tif", np.ones((100, 120), np.uint16))
    code, out = run(
        "tile", "--image", str(scene["image"]), "--labels", str(lab16), "-o", str(tmp_path / "o")
    )
    assert_one_line_error(code, out, "lab16.tif", "uint8", "uint16")
    cpx = write_raster(tmp_path / "cpx.tif", np.ones((3, 16, 16), np.complex64))
    code, out = run("tile", str(cpx), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "cpx.tif", "complex")


def test_dsm_not_overlapping(tmp_path: Path, scene: dict[str, Path]) -> None:
    far = write_raster(
        tmp_path / "far.tif",
        np.ones((100, 120), np.float32),
        transform=POTSDAM_TF @ Affine.translation(1e5, 0),
    )
    code, out = run(
        "tile", "--image", str(scene["image"]), "--dsm", str(far), "-o", str(tmp_path / "o")
    )
    assert_one_line_error(code, out, "far.tif", "does not overlap")
    assert not (tmp_path / "o").exists()


def test_label_size_differs_without_georeferencing(tmp_path: Path, scene: dict[str, Path]) -> None:
    lab = write_raster(
        tmp_path / "small_lab.tif", np.zeros((3, 99, 120), np.uint8), crs=None, transform=None
    )
    code, out = run(
        "tile", "--image", str(scene["image"]), "--labels", str(lab), "-o", str(tmp_path / "o")
    )
    assert_one_line_error(code, out, "small_lab.tif", "no georeferencing", "99")


def test_output_exists_without_overwrite(tmp_path: Path, scene: dict[str, Path]) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "something.txt").write_text("precious")
    code, text = run("tile", str(scene["image"]), "-o", str(out))
    assert_one_line_error(code, text, str(out), "--overwrite")
    assert (out / "something.txt").read_text() == "precious"
    code, text = run(
        "tile", str(scene["image"]), "-o", str(out), "--overwrite", "--size", "64", "--overlap", "0"
    )
    assert code == 0 and not (out / "something.txt").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--size", "8"], "--size"),
        (["--size", "64", "--overlap", "64"], "--overlap"),
        (["--min-valid", "1.5"], "--min-valid"),
    ],
)
def test_bad_option_values_exit_2(
    scene: dict[str, Path], tmp_path: Path, args: list[str], needle: str
) -> None:
    code, out = run("tile", str(scene["image"]), "-o", str(tmp_path / "o"), *args)
    assert code == 2 and needle in out and "Traceback" not in out


def test_dsm_without_image_is_a_usage_error(scene: dict[str, Path], tmp_path: Path) -> None:
    code, out = run("tile", "--dsm", str(scene["dsm"]), "-o", str(tmp_path / "o"))
    assert_one_line_error(code, out, "--image")


def test_help_says_an_empty_run_exits_1() -> None:
    code, out = run("tile", "--help")
    assert code == 0 and "Exits 1" in out and "no chip is valid" in out


def test_an_all_nodata_scene_exits_1_and_leaves_nothing(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "empty.tif", np.zeros((3, 40, 40), np.uint8), nodata=0)
    code, out = run("tile", str(p), "--size", "32", "-o", str(tmp_path / "o"))
    assert code == 1
    assert_one_line_error(code, out, "no chip was valid", "scene empty", "nodata")
    assert not (tmp_path / "o").exists()
