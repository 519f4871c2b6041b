"""Shared fixtures: tiny generated rasters with fixed seeds."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import settings
from rasterio.errors import NotGeoreferencedWarning

# The default run is deterministic (the same generated examples every time: a CI that passes
# once passes again); HYPOTHESIS_PROFILE=explore draws new examples, to hunt for failures.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

POTSDAM_TF = Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0)


def real_data(*parts: str) -> Path:
    """Path under ../shared/data/real, skipping the test when it is absent (a user's clone)."""
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real test data not available: {p} (../shared/data/real is absent)")
    return p


def write_raster(
    path: Path,
    data: np.ndarray,
    *,
    transform: Affine | None = POTSDAM_TF,
    crs: str | None = "EPSG:32633",
    nodata: float | None = None,
    **extra: object,
) -> Path:
    """Write (bands, rows, cols) or (rows, cols) data as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
    }
    if crs is not None:
        profile["crs"] = crs
    if transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    profile.update(extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
    return path


def coord_image(height: int, width: int) -> np.ndarray:
    """A coordinate-encoding image: band 0 = row, band 1 = column, band 2 = row*7+col mod 251."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows, cols, (rows * 7 + cols) % 251]).astype(np.float32)


@pytest.fixture
def raster_factory(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, data: np.ndarray, **kw: object) -> Path:
        return write_raster(tmp_path / name, data, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread: results do not depend on the core count, no OpenMP spinning."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def train_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy labelled store of tests.train_helpers (3 scenes of 128 px, 64 px chips)."""
    from tests.train_helpers import make_store

    return make_store(tmp_path_factory.mktemp("train_store"), n=3, size=128, chip=64)
