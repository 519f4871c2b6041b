"""Hostile sizes for ``predict`` and ``vectorize``: refused in one line, not a MemoryError.

The big scenes are sparse GeoTIFFs (200000 x 200000 px, about 1 MB on disk, written in
0.1 s): only their header is read before the refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from geoseg.blocks import plan_blocks
from geoseg.predict import PredictOptions
from geoseg.predict._driver import _check_sizes
from geoseg.predict._model import ModelMeta
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from tests.conftest import POTSDAM_TF, write_raster
from tests.hostile.helpers import fails_cleanly, tiny_checkpoint

BIG = 200_000


def sparse_raster(path: Path, count: int, nodata: int) -> Path:
    """A BIG x BIG uint8 GeoTIFF of which only the first 256 x 256 block is written."""
    profile = {
        "driver": "GTiff",
        "width": BIG,
        "height": BIG,
        "count": count,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": POTSDAM_TF,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "sparse_ok": True,
        "nodata": nodata,
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.ones((count, 256, 256), np.uint8), window=Window(0, 0, 256, 256))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny checkpoint (SegNet of width 4, 3 bands, 6 classes, 32 px tiles)."""
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def test_predict_refuses_an_absurd_tile_size(root: Path, ckpt: Path) -> None:
    """Regression (issue 11, class 4): a 10.9 TiB allocation and a traceback."""
    rng = np.random.default_rng(0)
    scene = write_raster(root / "top.tif", rng.integers(1, 256, (3, 40, 50)).astype(np.uint8))
    f = fails_cleanly(
        "predict",
        scene,
        "-m",
        ckpt,
        "--device",
        "cpu",
        "--tile-size",
        1_000_000,
        "-o",
        root / "maps",
        watch=root,
        code=1,
        names=("--tile-size 1000000", "scene top", "--batch-size"),
    )
    assert "TiB" in f.message


def test_predict_refuses_an_absurd_block_size(root: Path, ckpt: Path) -> None:
    """Regression (issue 11, class 4): the block's accumulator raised MemoryError."""
    scene = sparse_raster(root / "big.tif", 3, nodata=0)
    fails_cleanly(
        "predict",
        scene,
        "-m",
        ckpt,
        "--device",
        "cpu",
        "--block-size",
        1_000_000,
        "-o",
        root / "maps",
        watch=root,
        code=1,
        names=("--block-size 1000000", f"{BIG} x {BIG} px", "scene big"),
    )


def test_vectorize_refuses_an_absurd_block_size(root: Path) -> None:
    """Regression (issue 11, class 4): a 37 GiB read and a MemoryError."""
    classes = sparse_raster(root / "classes.tif", 1, nodata=255)
    fails_cleanly(
        "vectorize",
        classes,
        "--block-size",
        1_000_000,
        "-o",
        root / "city.gpkg",
        watch=root,
        code=1,
        names=("--block-size 1000000", "classes.tif"),
    )


def test_the_default_sizes_pass_on_a_big_scene(tmp_path: Path) -> None:
    """The check refuses absurd values only: the defaults on a 200000 px scene pass."""
    meta = ModelMeta(
        bands=("red", "green", "blue", "nir", "ndsm"),
        mean=(0.0,) * 5,
        std=(1.0,) * 5,
        schema=POTSDAM,
        tile_size=512,
        gsd=0.05,
        name="m",
        sha256="0",
    )
    options = PredictOptions(probabilities=True)
    plan = plan_blocks((BIG, BIG), tile_size=512, overlap=128, block_size=options.block_size)
    spec = SceneSpec("big", tmp_path / "big.tif")
    _check_sizes(spec, plan, meta, options, tile=512, scale=1, device="cuda")
