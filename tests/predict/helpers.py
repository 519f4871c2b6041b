"""Shared models, scenes and options of the prediction tests (tiny, fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from torch import nn

from geoseg.checkpoint import Checkpoint, save_checkpoint
from geoseg.predict import PredictModel, PredictOptions
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM, ClassSchema
from tests.conftest import write_raster

TWO = ClassSchema("two", ("background", "square"), ((0, 0, 0), (255, 0, 0)))
RGB = ("red", "green", "blue")
REPO = Path(__file__).resolve().parents[2]


class ThreeConv(nn.Module):
    """Three stacked 3x3 convolutions: a receptive field of 7 x 7 pixels."""

    def __init__(self, cin: int = 3, ncls: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(cin, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, ncls, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 3.0


class Threshold(nn.Module):
    """Class 1 where the first band exceeds 100 (no normalisation), else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, :1] - 100.0) * 0.5
        return torch.cat([torch.zeros_like(score), score], dim=1)


def three_conv_model(**kw: object) -> PredictModel:
    return PredictModel(
        module=ThreeConv(),
        bands=RGB,
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
        name="threeconv",
        **kw,  # type: ignore[arg-type]
    )


def threshold_model(bands: tuple[str, ...] = RGB, gsd: float = 0.05) -> PredictModel:
    n = len(bands)
    return PredictModel(
        module=Threshold(),
        bands=bands,
        mean=(0.0,) * n,
        std=(1.0,) * n,
        schema=TWO,
        tile_size=64,
        gsd=gsd,
        name="threshold",
    )


def random_scene(
    tmp_path: Path, h: int, w: int, *, seed: int = 0, nodata: float | None = None
) -> SceneSpec:
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 256, (3, h, w)).astype(np.uint8)
    path = write_raster(tmp_path / f"scene_{h}x{w}_{seed}.tif", img, nodata=nodata)
    return SceneSpec(id=path.stem, image=path)


def square_scene(tmp_path: Path, h: int, w: int, rows: slice, cols: slice) -> SceneSpec:
    img = np.full((3, h, w), 50, dtype=np.uint8)
    img[0, rows, cols] = 200
    path = write_raster(tmp_path / "square.tif", img)
    return SceneSpec(id="square", image=path)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def opts(**kw: object) -> PredictOptions:
    base: dict[str, object] = {"tile_size": 64, "overlap": 16, "batch_size": 4, "device": "cpu"}
    base.update(kw)
    return PredictOptions(**base)  # type: ignore[arg-type]


def save_tiny_checkpoint(path: Path, arch: str = "fcn_resnet18") -> Path:
    torch.manual_seed(0)
    ckpt = Checkpoint.untrained(
        arch,
        bands=RGB,
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
    )
    return save_checkpoint(ckpt, path)
