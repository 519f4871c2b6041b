"""Grids as immutable values and tiling as pure math (no I/O).

A :class:`GeoBox` is a raster grid: shape, affine transform and CRS. :func:`tile_windows`
plans the windows that cover a grid with tiles of a given size and overlap.

Edge policy ("shift"): tiles advance by ``size - overlap``; the last tile of each row and
column is shifted back so that it ends exactly at the grid edge. Every tile then lies fully
inside the grid and every pixel is covered, with no padding. Only when the grid is smaller
than a tile along an axis does a tile extend past the edge; its outside part is read
boundless and marked invalid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

__all__ = [
    "GeoBox",
    "axis_starts",
    "block_rows",
    "block_windows",
    "crs_unit_metres",
    "metres_per_unit",
    "tile_windows",
]


@dataclass(frozen=True)
class GeoBox:
    """An immutable raster grid.

    Attributes:
        width: Columns.
        height: Rows.
        transform: Pixel-to-map affine (pixel corner convention, as GDAL/rasterio).
        crs: Coordinate reference system (may be None only for ungeoreferenced rasters).
    """

    width: int
    height: int
    transform: Affine
    crs: CRS | None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (abs(self.transform.a), abs(self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (self.width, self.height)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))

    def window_transform(self, window: Window) -> Affine:
        """Transform of a window of this grid (the grid's transform offset by the window)."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def window(self, window: Window) -> GeoBox:
        """The sub-grid of a window (may extend past the edges)."""
        return GeoBox(
            int(window.width), int(window.height), self.window_transform(window), self.crs
        )


def axis_starts(length: int, size: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis.

    Args:
        length: Axis length in pixels (> 0).
        size: Tile size (> 0).
        overlap: Pixels shared by neighbouring tiles (0 <= overlap < size).

    Returns:
        Sorted unique offsets. The last tile ends at ``length`` when ``length >= size``;
        otherwise a single tile at 0 that extends past the edge.
    """
    if length <= 0 or size <= 0:
        raise ValueError(f"length and size must be positive, got {length}, {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size), got {overlap} for size {size}")
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return sorted(set(starts))


def tile_windows(
    shape: tuple[int, int], *, size: int | tuple[int, int], overlap: int = 0
) -> Iterator[Window]:
    """Windows covering a grid of ``shape`` (rows, cols), row-major.

    Args:
        shape: Grid (height, width).
        size: Tile size, or (height, width).
        overlap: Overlap between neighbouring tiles, in pixels.

    Yields:
        Windows of exactly the tile size (see module docs for the edge policy).
    """
    th, tw = (size, size) if isinstance(size, int) else size
    for r in axis_starts(shape[0], th, overlap):
        for c in axis_starts(shape[1], tw, overlap):
            yield Window(c, r, tw, th)


def block_rows(height: int, width: int, block_size: int) -> list[list[Window]]:
    """A partition of a grid into blocks of at most ``block_size`` px, row by row.

    The one plan of non-overlapping blocks, shared by every streaming pass (evaluate,
    vectorize); edge blocks are smaller. Prediction's blocks are whole tile strides
    (:func:`geoseg.blocks.plan_blocks`), because tiles must not be cut.

    Raises:
        ValueError: ``block_size`` is below 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1")
    return [
        [
            Window(c, r, min(block_size, width - c), min(block_size, height - r))
            for c in range(0, width, block_size)
        ]
        for r in range(0, height, block_size)
    ]


def block_windows(height: int, width: int, block_size: int) -> Iterator[Window]:
    """The windows of :func:`block_rows`, row-major."""
    for row in block_rows(height, width, block_size):
        yield from row


def crs_unit_metres(crs: CRS | None) -> float:
    """Metres per linear unit of a projected CRS (1.0 when the CRS does not say)."""
    if crs is not None and crs.linear_units_factor is not None:
        return float(crs.linear_units_factor[1])
    return 1.0


def metres_per_unit(grid: GeoBox) -> float:
    """Metres per CRS unit of a grid; for a geographic CRS, east-west at its centre latitude."""
    crs = grid.crs
    if crs is not None and crs.is_geographic:
        lat = (grid.bounds[1] + grid.bounds[3]) / 2.0
        return 111_320.0 * max(0.1, math.cos(math.radians(lat)))
    return crs_unit_metres(crs)
