"""geoseg.vectorize._polygonize: exact pixel-corner pieces, safe in threads, read errors named."""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import shapely
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.vectorize._polygonize import polygonize_block
from tests.conftest import write_raster
from tests.vectorize.helpers import corrupt_first_tile, raster_pieces

SIZE, BLOCK = 192, 64
CLASSES = (0, 1, 2)


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 3, (SIZE // 8, SIZE // 8)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    a[rng.random(a.shape) < 0.05] = 1  # speckle: many small pieces
    path = write_raster(tmp_path_factory.mktemp("poly") / "classes.tif", a, nodata=255)
    return path, a


def _windows() -> list[Window]:
    return [
        Window(c, r, BLOCK, BLOCK) for r in range(0, SIZE, BLOCK) for c in range(0, SIZE, BLOCK)
    ]


def _polygonize(path: Path, window: Window) -> int:
    res, _ = polygonize_block(str(path), window, row=0, col=0, classes=CLASSES, ignore=(255,))
    return len(res.pieces)


def test_block_pieces_are_the_whole_raster_pieces_in_scene_pixel_corners(
    classes: tuple[Path, np.ndarray],
) -> None:
    path, a = classes
    for window in (Window(0, 0, BLOCK, BLOCK), Window(BLOCK, 2 * BLOCK, BLOCK, BLOCK)):
        r0, c0 = int(window.row_off), int(window.col_off)
        res, _ = polygonize_block(str(path), window, row=0, col=0, classes=CLASSES, ignore=(255,))
        sub = a[r0 : r0 + BLOCK, c0 : c0 + BLOCK]
        want = sorted(
            shapely.affinity.translate(g, c0, r0).normalize().wkt for _, g in raster_pieces(sub)
        )
        got = sorted(p.geom.normalize().wkt for p in res.pieces.values())
        assert got == want
        # Integer corners, exactly: the unit offset given to GDAL is taken off exactly.
        coords = shapely.get_coordinates([p.geom for p in res.pieces.values()])
        np.testing.assert_array_equal(coords, np.round(coords))
        assert coords.min(axis=0).tolist() == [c0, r0]


@pytest.fixture
def filters_toggled_elsewhere() -> Iterator[None]:
    """Two other threads enter and leave ``warnings.catch_warnings`` over and over.

    As torch, rasterio or any library may, in threads of their own. Each exit restores the
    process-wide filter list it saw on entry, under the feet of every other thread.
    """
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    threads = [threading.Thread(target=toggle, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)


def test_polygonize_in_threads_raises_no_warning_while_filters_are_toggled(
    classes: tuple[Path, np.ndarray], filters_toggled_elsewhere: None
) -> None:
    # Issue 11, class 8: rasterio's NotGeoreferencedWarning escaped from
    # rasterio.features.shapes (an array wrapped in a dataset without a geotransform, the
    # warning silenced by catch_warnings) while scenes ran in threads; warnings are errors
    # here as in the whole suite. Polygonization now raises no warning at all.
    path, _ = classes
    windows = _windows() * 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(lambda w: _polygonize(path, w), windows))
    assert min(counts) > 0


def test_a_corrupt_block_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    a = np.zeros((768, 768), np.uint8)
    a[100:300, 100:300] = 1
    path = write_raster(
        tmp_path / "c.tif",
        a,
        nodata=255,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    corrupt_first_tile(path)
    with pytest.raises(InputError, match=r"c\.tif: reading pixels at column 0, row 0 failed"):
        polygonize_block(str(path), Window(0, 0, 256, 256), row=0, col=0, classes=(1,), ignore=())
    # The last block still reads: a parent check of the last pixel does not see this one.
    polygonize_block(str(path), Window(512, 512, 256, 256), row=2, col=2, classes=(1,), ignore=())
