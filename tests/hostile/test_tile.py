"""Hostile ``geoseg tile`` inputs: absurd sizes, empty scenes, missing bands.

Every refusal is ONE line naming the value or file, a non-zero exit, no traceback and an
unchanged tree (no ``tiles.json`` left behind that would block the next correct run). A
scene smaller than the chip still works (one padded chip); a multi-scene run in which
only some scenes are empty tiles the others, warns about the empty ones and exits 0.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geoseg.errors import NoValidDataError
from geoseg.raster import SceneSpec
from geoseg.tiles import ChipRecord, TileOptions, tile_scenes, write_index
from tests.conftest import POTSDAM_TF, write_raster
from tests.hostile.helpers import fails_cleanly, run, snapshot


class Case:
    """Tiny scenes (40 x 50 px, 3 bands, nodata 0) and the store folder (not yet there)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        rng = np.random.default_rng(0)
        self.img = write_raster(
            root / "scene.tif", rng.integers(1, 256, (3, 40, 50)).astype(np.uint8), nodata=0
        )
        self.empty = write_raster(root / "empty.tif", np.zeros((3, 40, 50), np.uint8), nodata=0)
        self.nan_dsm = write_raster(root / "dsm.tif", np.full((40, 50), np.nan, np.float32))
        self.out = root / "tiles"

    def tile(self, *args: object) -> list[object]:
        return ["tile", *args, "-o", self.out]


@pytest.fixture
def case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    monkeypatch.chdir(tmp_path)
    yield Case(tmp_path)


# -- sizes ---------------------------------------------------------------------------------


def test_an_absurd_size_is_refused_before_anything_is_written(case: Case) -> None:
    """Regression (issue 11, class 4): a 10.9 TiB allocation, a traceback, tiles.json left."""
    f = fails_cleanly(
        *case.tile(case.img, "--size", 1_000_000),
        watch=case.root,
        code=1,
        names=("--size 1000000", "scene", "40 x 50 px"),
    )
    assert "TiB" in f.message and "or less" in f.message
    assert not case.out.exists()


def test_the_next_correct_run_works_after_an_absurd_size(case: Case) -> None:
    """Regression (issue 11, class 4): the left tiles.json refused the next correct run."""
    run(*case.tile(case.img, "--size", 1_000_000))
    rc, output, exc = run(*case.tile(case.img, "--size", 32))
    assert (rc, exc) == (0, None), output
    assert json.loads((case.out / "tiles.json").read_text())["size"] == 32


def test_a_size_that_fits_no_memory_names_the_workers(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("geoseg._io.available_memory", lambda: 1 << 20)  # 1 MiB free
    f = fails_cleanly(
        *case.tile(case.img, "--size", 256, "--workers", 2),
        watch=case.root,
        code=1,
        names=("--size 256", "--workers"),
    )
    assert "available" in f.message


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--size", 0),
        ("--size", -5),
        ("--size", 15),
        ("--size", "abc"),
        ("--overlap", -1),
        ("--overlap", 32),
        ("--overlap", 1_000_000),
        ("--min-valid", 1.5),
        ("--min-valid", -0.1),
        ("--min-valid", "nan"),
    ],
)
def test_absurd_options_are_usage_errors(case: Case, option: str, value: object) -> None:
    extra = ["--size", 32] if option != "--size" else []
    fails_cleanly(
        *case.tile(case.img, *extra, option, value), watch=case.root, code=2, names=option
    )


def test_a_scene_smaller_than_the_chip_gives_one_padded_chip(case: Case) -> None:
    rc, output, exc = run(*case.tile(case.img, "--size", 64, "--min-valid", 0.2))
    assert (rc, exc) == (0, None), output
    (chip,) = (case.out / "chips" / "scene").glob("*.tif")
    with rasterio.open(chip) as ds:
        assert ds.shape == (64, 64)
        mask = ds.dataset_mask() > 0
    assert mask[:40, :50].all() and not mask[40:].any() and not mask[:, 50:].any()


@pytest.mark.parametrize("bands", ["nir", "red,dsm", "label"])
def test_bands_that_do_not_exist_are_refused(case: Case, bands: str) -> None:
    name = bands.split(",")[-1]
    fails_cleanly(*case.tile(case.img, "--size", 32, "--bands", bands), watch=case.root, names=name)


# -- runs that produce nothing ---------------------------------------------------------------


def test_an_all_nodata_image_is_refused(case: Case) -> None:
    """Regression (issue 11, class 6): exit 0, 0 chips, an index without CRS, a warning."""
    f = fails_cleanly(
        *case.tile(case.empty, "--size", 32),
        watch=case.root,
        code=1,
        names=("no chip was valid", "empty", "nodata"),
    )
    assert str(case.empty) in f.message
    assert not case.out.exists()


def test_an_all_nan_dsm_is_refused(case: Case) -> None:
    """Regression (issue 11, class 6)."""
    fails_cleanly(
        "tile",
        "--image",
        case.img,
        "--dsm",
        case.nan_dsm,
        "--size",
        32,
        "-o",
        case.out,
        watch=case.root,
        code=1,
        names=("no chip was valid", "DSM", "dsm.tif", "NaN"),
    )


def test_every_chip_below_min_valid_is_refused(case: Case) -> None:
    f = fails_cleanly(
        *case.tile(case.img, "--size", 64), watch=case.root, code=1, names="--min-valid 0.5"
    )
    assert "no chip was valid" in f.message and "best chip is 48.8% valid" in f.message


def test_an_empty_run_with_overwrite_keeps_the_old_store(case: Case) -> None:
    assert run(*case.tile(case.img, "--size", 32))[0] == 0
    fails_cleanly(
        *case.tile(case.empty, "--size", 16, "--overwrite"),
        watch=case.root,
        code=1,
        names="no chip was valid",
    )


def test_an_empty_run_with_overwrite_keeps_an_existing_folder(case: Case) -> None:
    (case.out / "sub").mkdir(parents=True)
    fails_cleanly(
        *case.tile(case.empty, "--size", 16, "--overwrite"),
        watch=case.root,
        code=1,
        names="no chip was valid",
    )
    assert (case.out / "sub").is_dir()


def test_an_empty_scene_among_others_is_a_warning(
    case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="geoseg.tiles"):
        rc, output, exc = run(*case.tile(case.img, case.empty, "--size", 32))
    assert (rc, exc) == (0, None), output
    assert "4 chips" in output
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "geoseg.tiles"]
    assert "scene empty" in warning and "nodata" in warning
    assert sorted(p.name for p in (case.out / "chips").iterdir()) == ["scene"]


def test_the_library_raises_for_an_empty_run(case: Case) -> None:
    with pytest.raises(NoValidDataError, match="no chip was valid: scene empty"):
        tile_scenes([SceneSpec("empty", case.empty)], case.out, options=TileOptions(size=32))
    assert not case.out.exists()


def test_a_failure_before_the_first_chip_leaves_nothing(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 11, class 4): tiles.json was left, refusing the next correct run."""

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("geoseg.tiles._cut._write_chip", boom)
    before = snapshot(case.root)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tile_scenes([SceneSpec("scene", case.img)], case.out / "a" / "b", workers=1)
    assert snapshot(case.root) == before


def test_a_failure_after_chips_keeps_them_to_resume(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg.tiles import _cut

    real = _cut._write_chip
    calls = {"n": 0}

    def second_fails(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr("geoseg.tiles._cut._write_chip", second_fails)
    opts = TileOptions(size=32)
    with pytest.raises(RuntimeError):
        tile_scenes([SceneSpec("scene", case.img)], case.out, options=opts, workers=1)
    assert (case.out / "tiles.json").is_file()
    kept = len(list((case.out / "chips" / "scene").glob("*.tif")))
    assert 1 <= kept < 4  # the chips after the failed one are not started (one may be)
    monkeypatch.setattr("geoseg.tiles._cut._write_chip", real)
    report = tile_scenes([SceneSpec("scene", case.img)], case.out, options=opts, workers=1)
    assert (report.skipped_existing, report.written, report.chips) == (kept, 4 - kept, 4)


# -- the index -----------------------------------------------------------------------------


def test_an_index_without_rows_keeps_the_crs_and_does_not_warn(tmp_path: Path) -> None:
    """Regression (issue 11, class 6): pyogrio's "'crs' was not provided" UserWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_index([], tmp_path / "index.gpkg", num_classes=6, crs="EPSG:32633")
        write_index([], tmp_path / "nocrs.gpkg", num_classes=6)
    gdf = gpd.read_file(tmp_path / "index.gpkg", layer="chips")
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == 0
    assert {"path", "scene", "valid_fraction", "class_5"} <= set(gdf.columns)
    assert gdf["col_off"].dtype.kind == "i"


def test_an_index_of_chips_without_a_crs_does_not_warn(tmp_path: Path) -> None:
    record = ChipRecord(
        path="chips/s/s_r0_c0.tif",
        scene="s",
        col_off=0,
        row_off=0,
        width=16,
        height=16,
        valid_fraction=1.0,
        histogram=(256,),
        ignored=0,
        footprint=(0.0, 0.0, 16.0, 16.0),
        crs="",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_index([record], tmp_path / "index.gpkg", num_classes=1)
    gdf = gpd.read_file(tmp_path / "index.gpkg", layer="chips")
    assert gdf.crs is None and list(gdf["class_0"]) == [256]


def test_a_store_is_written_with_the_scene_crs(case: Case) -> None:
    rc, output, exc = run(*case.tile(case.img, "--size", 32))
    assert (rc, exc) == (0, None), output
    gdf = gpd.read_file(case.out / "index.gpkg", layer="chips")
    assert gdf.crs.to_epsg() == 32633 and len(gdf) == 4
    assert POTSDAM_TF.c == gdf.total_bounds[0]
