"""The synthetic scene, tiny model and checkpoint of the predict benches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.bench.scene import BENCH_BANDS, IMAGE_BANDS, bench_checkpoint, bench_scene, tiny_model
from geoseg.errors import InputError


def test_bench_scene_is_written_once_and_reused(tmp_path: Path) -> None:
    spec = bench_scene(tmp_path, 96)
    assert spec.image_bands == IMAGE_BANDS and spec.dsm is not None
    with rasterio.open(spec.image) as ds:
        assert ds.shape == (96, 96) and ds.count == 4 and ds.dtypes[0] == "uint8"
        first = ds.read()
    with rasterio.open(spec.dsm) as ds:
        assert ds.dtypes[0] == "float32" and np.isfinite(ds.read(1)).all()
    mtime = spec.image.stat().st_mtime_ns
    again = bench_scene(tmp_path, 96)
    assert again == spec and spec.image.stat().st_mtime_ns == mtime
    with rasterio.open(again.image) as ds:
        np.testing.assert_array_equal(ds.read(), first)


def test_bench_scene_without_dsm_and_too_small(tmp_path: Path) -> None:
    assert bench_scene(tmp_path, 64, dsm=False).dsm is None
    with pytest.raises(InputError, match="at least 64"):
        bench_scene(tmp_path, 32)


def test_tiny_model_and_bench_checkpoint(tmp_path: Path) -> None:
    import torch

    model = tiny_model()
    out = model.module(torch.zeros(1, len(IMAGE_BANDS), 8, 8))
    assert out.shape == (1, model.schema.num_classes, 8, 8) and model.name == "tiny"

    from geoseg.checkpoint import load_checkpoint

    path = bench_checkpoint(tmp_path, "fcn_resnet18", 64)
    assert bench_checkpoint(tmp_path, "fcn_resnet18", 64) == path
    ckpt = load_checkpoint(path)
    assert tuple(ckpt.bands) == BENCH_BANDS and ckpt.tile_size == 64
