"""Helpers shared by the geometry tests of geoseg.vectorize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
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


def corrupt_first_tile(path: Path) -> None:
    """Overwrite the compressed bytes of tile (0, 0) of a tiled GeoTIFF with garbage.

    The header and every other tile stay intact: opening the file and reading its last
    pixel work, reading the first block fails.
    """
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\xff" * size
    path.write_bytes(bytes(raw))
