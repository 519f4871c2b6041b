"""The ground estimate behind a derived nDSM: height above ground, sampling, one estimate."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg.grid import GeoBox
from geoseg.raster import SceneSpec
from geoseg.raster.ground import Ground, cached_ground, estimate_ground
from tests.conftest import write_raster


def test_derived_ndsm_is_height_above_ground_and_window_independent(tmp_path: Path) -> None:
    # 0.5 m pixels: a 250 m x 200 m scene on a 1 % slope with a 20 m x 30 m building, 12 m high.
    h, w = 400, 500
    tf = Affine(0.5, 0, 366000.0, 0, -0.5, 5808000.0)
    img = write_raster(tmp_path / "img.tif", np.full((4, h, w), 100, np.uint8), transform=tf)
    rows, cols = np.mgrid[0:h, 0:w]
    ground = 35.0 + 0.005 * cols + 0.003 * rows
    dsm = ground.copy()
    dsm[150:190, 200:260] += 12.0
    dp = write_raster(tmp_path / "dsm.tif", dsm.astype(np.float32), transform=tf)
    with SceneSpec("s", img, dsm=dp).open() as sc:
        full = sc.read(Window(0, 0, w, h), bands=["ndsm"]).data[0]
        part = sc.read(Window(130, 90, 128, 128), bands=["ndsm"]).data[0]
    assert np.abs(full[155:185, 205:255] - 12.0).max() < 0.1
    ground_px = np.ones((h, w), bool)
    ground_px[140:200, 190:270] = False
    interior = np.zeros((h, w), bool)
    interior[60:-60, 60:-60] = True
    assert np.abs(full[ground_px & interior]).max() < 0.1
    # At the scene edge the opening is biased by at most slope x radius: 25 m x (1 % + 0.6 %).
    assert np.abs(full[ground_px]).max() < 25 * (0.01 + 0.006) + 0.05
    np.testing.assert_allclose(part, full[90:218, 130:258], atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (13, 17), (60, 2000)])
@pytest.mark.parametrize("factor", [1, 3, 20])
def test_ground_sampling_equals_scipy_bilinear(shape: tuple[int, int], factor: int) -> None:
    from scipy.ndimage import map_coordinates

    grid = (100.0 + np.random.default_rng(3).normal(size=shape)).astype(np.float32)
    g = Ground(factor, grid)
    wins = [Window(0, 0, 50, 30), Window(-10, -7, 64, 33), Window(900, 900, 9, 5)]
    wins += [Window(1500, 20, 300, 40), Window(0, 0, 0, 4)]
    for win in wins:
        h, w = int(win.height), int(win.width)
        rows = (np.arange(h) + int(win.row_off) + 0.5) / factor - 0.5
        cols = (np.arange(w) + int(win.col_off) + 0.5) / factor - 0.5
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        want = map_coordinates(grid, [rr, cc], order=1, mode="nearest", prefilter=False)
        got = g.sample(win)
        assert got.dtype == np.float32 and got.shape == (h, w)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_estimate_needs_only_a_window_reader() -> None:
    # A plane of DSM heights read through a plain function: no scene, no file.
    gb = GeoBox(300, 200, Affine(0.5, 0, 366000.0, 0, -0.5, 5808000.0), CRS.from_epsg(32633))
    cols = np.mgrid[0:200, 0:300][1]
    dsm = (20.0 + 0.01 * cols).astype(np.float32)
    dsm[80:100, 100:130] += 8.0  # a small building: gone from the ground
    reads: list[Window] = []

    def read(win: Window) -> tuple[np.ndarray, np.ndarray]:
        reads.append(win)
        out = np.full((int(win.height), int(win.width)), np.nan, np.float32)
        r0, c0 = int(win.row_off), int(win.col_off)
        part = dsm[r0 : r0 + out.shape[0], c0 : c0 + out.shape[1]]
        out[: part.shape[0], : part.shape[1]] = part
        return out, np.isfinite(out)

    g = estimate_ground(gb, read, name="plane")
    assert g.factor == 2 and g.grid.shape == (100, 150) and reads
    ground = g.sample(Window(0, 0, 300, 200))
    assert np.abs(ground[90, 115] - dsm[90, 115] + 8.0) < 0.5


def test_no_valid_dsm_gives_a_nan_ground() -> None:
    gb = GeoBox(40, 30, Affine(0.5, 0, 0.0, 0, -0.5, 0.0), CRS.from_epsg(32633))

    def read(win: Window) -> tuple[np.ndarray, np.ndarray]:
        shape = (int(win.height), int(win.width))
        return np.zeros(shape, np.float32), np.zeros(shape, bool)

    g = estimate_ground(gb, read, name="empty")
    assert np.isnan(g.grid).all()


def test_one_estimate_per_key_however_many_threads_ask() -> None:
    calls: list[int] = []
    key = ("test_one_estimate_per_key", time.time())

    def estimate() -> Ground:
        calls.append(1)
        time.sleep(0.05)
        return Ground(1, np.zeros((2, 2), np.float32))

    got: list[Ground] = []
    threads = [
        threading.Thread(target=lambda: got.append(cached_ground(key, estimate))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 6 and all(g is got[0] for g in got)
