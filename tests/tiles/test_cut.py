from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.errors import ConfigError, OutputExistsError
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from geoseg.tiles import TileOptions, read_chip, read_store, tile_scenes
from tests.conftest import POTSDAM_TF, coord_image, real_data, write_raster


def reassemble(root: Path, shape: tuple[int, int], nbands: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.full((nbands, *shape), np.nan, dtype=np.float32)
    count = np.zeros(shape, dtype=np.int32)
    _, index = read_store(root)
    for row in index.itertuples():
        data, _, _ = read_chip(root / row.path)
        r, c = row.row_off, row.col_off
        h, w = min(row.height, shape[0] - r), min(row.width, shape[1] - c)
        out[:, r : r + h, c : c + w] = data[:, :h, :w]
        count[r : r + h, c : c + w] += 1
    return out, count


def test_chips_reassemble_to_the_scene_exactly(tmp_path: Path) -> None:
    img = coord_image(300, 410)
    p = write_raster(tmp_path / "coords.tif", img)
    rep = tile_scenes(
        [SceneSpec("c", p)], tmp_path / "store", options=TileOptions(size=128, overlap=16)
    )
    assert rep.written == rep.chips == 3 * 4  # rows at 0, 112, 172; cols at 0, 112, 224, 282
    out, count = reassemble(tmp_path / "store", (300, 410), 3)
    assert count.min() >= 1
    np.testing.assert_array_equal(out, img)


def test_chip_transform_is_scene_transform_offset_by_window(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "img.tif", coord_image(200, 250))
    tile_scenes([SceneSpec("c", p)], tmp_path / "s", options=TileOptions(size=96, overlap=8))
    _, index = read_store(tmp_path / "s")
    for row in index.itertuples():
        with rasterio.open(tmp_path / "s" / row.path) as ds:
            assert ds.transform == POTSDAM_TF @ Affine.translation(row.col_off, row.row_off)
            assert ds.crs == "EPSG:32633"
            assert ds.bounds == pytest.approx(row.geometry.bounds)
            assert ds.descriptions == ("red", "green", "blue")


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    height=st.integers(20, 160),
    width=st.integers(20, 160),
    size=st.sampled_from([32, 48, 64, 200]),
    overlap=st.integers(0, 16),  # stride >= 16: keeps the chip count small
)
def test_reassembly_property(
    tmp_path: Path, height: int, width: int, size: int, overlap: int
) -> None:
    import tempfile

    d = Path(tempfile.mkdtemp(dir=tmp_path))
    img = coord_image(height, width)
    p = write_raster(d / "img.tif", img)
    tile_scenes(
        [SceneSpec("c", p)], d / "s", options=TileOptions(size=size, overlap=overlap, min_valid=0)
    )
    out, count = reassemble(d / "s", (height, width), 3)
    assert count.min() >= 1
    np.testing.assert_array_equal(out, img)
    # chips larger than the scene are padded, masked invalid, and report their valid fraction
    _, index = read_store(d / "s")
    for row in index.itertuples():
        assert row.valid_fraction == pytest.approx(
            min(size, height - row.row_off) * min(size, width - row.col_off) / size**2,
            abs=1e-6,  # stored with 6 decimals
        )


def test_labels_band_histogram_and_min_valid(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    img = rng.integers(1, 255, (4, 128, 128), dtype=np.uint8)
    img[:, :, :80] = 0  # nodata on the left
    ip = write_raster(tmp_path / "img.tif", img, nodata=0)
    idx = rng.integers(0, 6, (128, 128)).astype(np.uint8)
    lp = write_raster(tmp_path / "lab.tif", POTSDAM.encode(idx))
    rep = tile_scenes(
        [SceneSpec("s", ip, labels=lp)],
        tmp_path / "st",
        options=TileOptions(size=64, overlap=0, min_valid=0.5),
    )
    assert rep.skipped_invalid == 2 and rep.chips == 2  # left column of chips is mostly nodata
    _, index = read_store(tmp_path / "st")
    for row in index.itertuples():
        _, lab, names = read_chip(tmp_path / "st" / row.path)
        assert names == ["red", "green", "blue", "nir"]
        assert lab is not None
        win = idx[row.row_off : row.row_off + 64, row.col_off : row.col_off + 64].copy()
        valid = img[0, row.row_off : row.row_off + 64, row.col_off : row.col_off + 64] != 0
        win[~valid] = 255
        np.testing.assert_array_equal(lab, win)
        hist = [getattr(row, f"class_{i}") for i in range(6)]
        assert hist == np.bincount(win[valid], minlength=6).tolist()
        assert row.ignored == int((~valid).sum())
        assert row.valid_fraction == pytest.approx(valid.mean(), abs=1e-6)


def test_rerun_skips_complete_chips_and_other_options_need_overwrite(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "img.tif", coord_image(150, 150))
    spec = [SceneSpec("c", p)]
    opts = TileOptions(size=64, overlap=8)
    first = tile_scenes(spec, tmp_path / "s", options=opts)
    chips = sorted((tmp_path / "s" / "chips").rglob("*.tif"))
    mtimes = [c.stat().st_mtime_ns for c in chips]
    chips[0].unlink()
    again = tile_scenes(spec, tmp_path / "s", options=opts)
    assert again.written == 1 and again.skipped_existing == first.written - 1
    assert [c.stat().st_mtime_ns for c in chips[1:]] == mtimes[1:]
    with pytest.raises(OutputExistsError, match="other options.*--overwrite"):
        tile_scenes(spec, tmp_path / "s", options=TileOptions(size=32, overlap=8))
    rep = tile_scenes(spec, tmp_path / "s", options=TileOptions(size=32, overlap=8), overwrite=True)
    assert (
        rep.written == rep.chips
        and json.loads((tmp_path / "s/tiles.json").read_text())["size"] == 32
    )


def test_interrupted_run_leaves_no_partial_chip_and_resumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = write_raster(tmp_path / "img.tif", rng.integers(0, 255, (4, 1500, 1500), dtype=np.uint8))
    store = tmp_path / "s"
    cmd = [
        sys.executable,
        "-m",
        "geoseg.cli",
        "tile",
        str(p),
        "-o",
        str(store),
        "--size",
        "64",
        "--overlap",
        "0",
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(store.rglob("*_r*_c*.tif"))) < 20:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [c for c in store.rglob("*.tif") if not c.name.startswith(".")]
    assert 0 < len(done) < 24 * 24, "kill the run part way"
    for c in done:  # every chip that has its final name is complete
        with rasterio.open(c) as ds:
            ds.read()
    rep = tile_scenes([SceneSpec("img", p)], store, options=TileOptions(size=64, overlap=0))
    assert rep.skipped_existing >= len(done) and rep.chips == 24 * 24
    assert not list(store.rglob(".*partial*")), "leftover temporaries are cleaned on resume"


def test_real_landsat_chips_georeferenced_with_collar_valid_fraction(tmp_path: Path) -> None:
    src = real_data("rasterio_landsat7_rgb", "RGB.byte.tif")
    rep = tile_scenes(
        [SceneSpec("landsat", src)],
        tmp_path / "l",
        options=TileOptions(size=256, overlap=32, min_valid=0.2),
    )
    _, index = read_store(tmp_path / "l")
    assert rep.chips == len(index) > 0
    with rasterio.open(src) as ds:
        mask = ds.dataset_mask() > 0
        for row in index.itertuples():
            win = Window(row.col_off, row.row_off, row.width, row.height)
            expected = mask[row.row_off : row.row_off + 256, row.col_off : row.col_off + 256].mean()
            assert row.valid_fraction == pytest.approx(expected, abs=1e-6)
            with rasterio.open(tmp_path / "l" / row.path) as chip:
                assert chip.crs == ds.crs
                assert chip.transform == ds.window_transform(win)
                np.testing.assert_array_equal(
                    chip.read(1).astype(np.uint8) * (chip.dataset_mask() > 0),
                    ds.read(1, window=win),
                )
    fractions = index.valid_fraction.to_numpy()
    assert fractions.min() < 0.6 and fractions.max() > 0.99, "the collar shows in the fractions"


def test_overwrite_that_fails_before_a_chip_puts_the_old_store_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = write_raster(tmp_path / "img.tif", coord_image(64, 64))
    spec = [SceneSpec("c", p)]
    tile_scenes(spec, tmp_path / "s", options=TileOptions(size=32, overlap=0))
    before = sorted((q.relative_to(tmp_path), q.stat().st_mtime_ns) for q in tmp_path.rglob("*"))

    def boom(*args: object, **kw: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("geoseg.tiles._cut._write_chip", boom)
    with pytest.raises(RuntimeError, match="boom"):
        tile_scenes(spec, tmp_path / "s", options=TileOptions(size=16, overlap=0), overwrite=True)
    after = sorted((q.relative_to(tmp_path), q.stat().st_mtime_ns) for q in tmp_path.rglob("*"))
    assert after == before
    assert json.loads((tmp_path / "s" / "tiles.json").read_text())["size"] == 32


def test_chip_memory_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "img.tif", coord_image(40, 40))
    with pytest.raises(ConfigError, match=r"--size 20000: .* scene c \(40 x 40 px\).*or less"):
        tile_scenes([SceneSpec("c", p)], tmp_path / "s", options=TileOptions(size=20000))
    assert not (tmp_path / "s").exists()
