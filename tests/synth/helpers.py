"""Shared helpers of the geoseg.synth tests: class indices and burning polygons."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.features import rasterize

IMP, BLD, VEG, TREE, CAR, CLUT = range(6)


def burn(polygons: list, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    if not polygons:
        return np.zeros(shape, dtype=bool)
    return rasterize(
        [(p, 1) for p in polygons], out_shape=shape, transform=transform, dtype="uint8"
    ).astype(bool)
