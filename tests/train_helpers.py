"""Tiny labelled tile stores and training options for the data/train tests (fixed seeds)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from affine import Affine

from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from geoseg.tiles import TileOptions, tile_scenes
from geoseg.train import TrainConfig
from tests.conftest import POTSDAM_TF, write_raster

TIMING = {"train_seconds", "val_seconds", "seconds", "chips_per_s", "data_wait_fraction"}

# Small and fast: 2 training scenes of 4 chips of 64 px, random 32 px crops, batches of 4
# -> 2 steps per epoch; validation on the 4 whole chips of scene s2.
TINY = TrainConfig(
    model="fcn_resnet18",
    chip_size=32,
    epochs=2,
    batch_size=4,
    lr=3e-3,
    val_scenes=("s2",),
    device="cpu",
    seed=0,
)

# A distinct colour per class (R, G, B, IR): a learnable toy problem.
CLASS_COLOURS = np.array(
    [[200, 200, 200, 90], [60, 60, 200, 60], [90, 200, 90, 200],
     [30, 120, 30, 220], [220, 220, 40, 120], [200, 40, 40, 80]],
    dtype=np.float32,
)  # fmt: skip


def voronoi_labels(rng: np.random.Generator, size: int, cells: int = 12) -> np.ndarray:
    """Class indices of random Voronoi cells: compact regions, every class likely present."""
    pts = rng.uniform(0, size, (cells, 2))
    cls = np.concatenate([np.arange(6), rng.integers(0, 6, cells - 6)])
    rows, cols = np.mgrid[0:size, 0:size]
    d = (rows[..., None] - pts[:, 0]) ** 2 + (cols[..., None] - pts[:, 1]) ** 2
    return cls[d.argmin(axis=-1)].astype(np.uint8)


def make_scenes(
    root: Path, *, n: int = 3, size: int = 128, seed: int = 0, nodata_scene: int | None = 0
) -> list[SceneSpec]:
    """``n`` scenes ``s0..s{n-1}`` side by side; scene ``nodata_scene`` has a nodata strip."""
    rng = np.random.default_rng(seed)
    specs = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lab = voronoi_labels(rng, size)
        img = CLASS_COLOURS[lab].transpose(2, 0, 1) + rng.normal(0, 25, (4, size, size))
        img = np.clip(img, 1, 255).astype(np.uint8)
        if nodata_scene == i:
            img[:, :, : size // 8] = 0
        tf = POTSDAM_TF @ Affine.translation(i * size, 0)
        ip = write_raster(root / f"s{i}_img.tif", img, transform=tf, nodata=0)
        lp = write_raster(root / f"s{i}_lab.tif", POTSDAM.encode(lab), transform=tf)
        specs.append(SceneSpec(f"s{i}", ip, labels=lp))
    return specs


def make_store(
    root: Path,
    *,
    n: int = 3,
    size: int = 128,
    chip: int = 64,
    overlap: int = 0,
    seed: int = 0,
) -> Path:
    """A labelled tile store of ``n`` toy scenes at ``root / 'store'``."""
    specs = make_scenes(root / "scenes", n=n, size=size, seed=seed)
    store = root / "store"
    tile_scenes(specs, store, options=TileOptions(size=chip, overlap=overlap, min_valid=0.2))
    return store


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def without_timing(rs: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rs]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
