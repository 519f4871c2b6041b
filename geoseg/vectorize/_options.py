"""The typed records of :func:`geoseg.vectorize.vectorize_raster`: its options and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geoseg.options import VectorizeOptions

__all__ = ["VectorizeOptions", "VectorizeReport"]


@dataclass(frozen=True)
class VectorizeReport:
    """What :func:`vectorize_raster` wrote.

    Attributes:
        output: The GeoPackage, or the GeoParquet directory.
        format: ``gpkg`` or ``parquet``.
        layers: Feature count per layer.
        schema: Name of the class schema used.
        crs: The output CRS (WKT), or None.
        blocks: Number of blocks processed.
        pixels: Raster pixels.
        seconds: Wall time.
        max_pending: Most pieces held back at a border at once (memory indicator).
        files: The files written (the GeoPackage, or one GeoParquet file per layer).
    """

    output: Path
    format: str
    layers: dict[str, int]
    schema: str
    crs: str | None
    blocks: int
    pixels: int
    seconds: float
    max_pending: int = 0
    files: tuple[Path, ...] = field(default=())
