"""Helpers shared by the geometry tests of geoseg.vectorize."""

from __future__ import annotations

import numpy as np
import rasterio.features
import shapely
from affine import Affine


def raster_pieces(a: np.ndarray) -> list[tuple[int, shapely.Polygon]]:
    """(value, polygon) of each 4-connected region of ``a`` (pixel coordinates)."""
    return [
        (int(v), shapely.geometry.shape(g))
        for g, v in rasterio.features.shapes(
            a.astype(np.int32), connectivity=4, transform=Affine.identity()
        )
    ]
