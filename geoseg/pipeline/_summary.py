"""Land-cover summary of a class raster: area per class, read block by block.

Areas are in square metres. On a projected grid every pixel has the same area (the
transform's determinant times the square of the CRS's linear unit); on a geographic grid
the area of a pixel row is that of its band on a sphere of the Earth's authalic radius
(``R² · Δλ · |sin φ₁ − sin φ₂|``). Percentages are of the valid area: pixels that hold a
class of the schema (255 and the raster's nodata are not valid; other values are counted
as ``unknown_pixels`` and are not valid either).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.errors import InputError
from geoseg.grid import crs_unit_metres
from geoseg.raster.source import gdal_call, open_raster
from geoseg.raster.tags import schema_from_tags
from geoseg.schema import IGNORE, ClassSchema

__all__ = ["CSV_COLUMNS", "LandcoverSummary", "landcover_summary", "write_landcover_csv"]

logger = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_007.2
"""Authalic radius of the WGS84 ellipsoid (sphere of the same area)."""

CSV_COLUMNS = ("scene", "class_index", "class", "pixels", "area_m2", "percent_of_valid")


@dataclass(frozen=True)
class LandcoverSummary:
    """Area per class of one class raster.

    Attributes:
        classes: Class names, in index order.
        pixels: Pixels per class.
        area_m2: Area per class in m² (None when the raster has no CRS).
        percent: Percentage of the valid area per class (0 when nothing is valid).
        valid_pixels: Pixels holding a class.
        valid_area_m2: Their area in m² (None when the raster has no CRS).
        nodata_pixels: Pixels that are 255 or nodata.
        unknown_pixels: Pixels with a value outside the schema.
    """

    classes: tuple[str, ...]
    pixels: tuple[int, ...]
    area_m2: tuple[float, ...] | None
    percent: tuple[float, ...]
    valid_pixels: int
    valid_area_m2: float | None
    nodata_pixels: int
    unknown_pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the run manifest)."""
        return {
            "valid_pixels": self.valid_pixels,
            "valid_area_m2": self.valid_area_m2,
            "nodata_pixels": self.nodata_pixels,
            "unknown_pixels": self.unknown_pixels,
            "classes": [
                {
                    "index": i,
                    "class": name,
                    "pixels": self.pixels[i],
                    "area_m2": None if self.area_m2 is None else self.area_m2[i],
                    "percent_of_valid": self.percent[i],
                }
                for i, name in enumerate(self.classes)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LandcoverSummary:
        """Inverse of :meth:`to_dict`."""
        rows = d["classes"]
        areas = [r["area_m2"] for r in rows]
        return cls(
            classes=tuple(r["class"] for r in rows),
            pixels=tuple(int(r["pixels"]) for r in rows),
            area_m2=None if any(a is None for a in areas) else tuple(float(a) for a in areas),
            percent=tuple(float(r["percent_of_valid"]) for r in rows),
            valid_pixels=int(d["valid_pixels"]),
            valid_area_m2=None if d["valid_area_m2"] is None else float(d["valid_area_m2"]),
            nodata_pixels=int(d["nodata_pixels"]),
            unknown_pixels=int(d["unknown_pixels"]),
        )

    def rows(self, scene: str) -> list[dict[str, Any]]:
        """CSV rows (see :data:`CSV_COLUMNS`), one per class."""
        return [
            {
                "scene": scene,
                "class_index": i,
                "class": name,
                "pixels": self.pixels[i],
                "area_m2": "" if self.area_m2 is None else f"{self.area_m2[i]:.4f}",
                "percent_of_valid": f"{self.percent[i]:.4f}",
            }
            for i, name in enumerate(self.classes)
        ]


def _geographic_row_areas(
    t: Affine, row0: int, nrows: int, *, name: str
) -> npt.NDArray[np.float64]:
    """Area in m² of one pixel of each row ``row0 .. row0 + nrows - 1`` of a lon/lat grid."""
    if t.b != 0 or t.d != 0:
        raise InputError(
            f"{name}: rotated geographic grids are not supported for area summaries; "
            "warp the raster to a projected CRS"
        )
    edges = t.f + t.e * np.arange(row0, row0 + nrows + 1, dtype=np.float64)
    lat = np.radians(np.clip(edges, -90.0, 90.0))
    dlon = math.radians(abs(t.a))
    return np.asarray(EARTH_RADIUS_M**2 * dlon * np.abs(np.diff(np.sin(lat))))


def _pixel_area(crs: CRS, t: Affine) -> float:
    """Area in m² of a pixel of a projected grid."""
    return abs(t.a * t.e - t.b * t.d) * crs_unit_metres(crs) ** 2


def landcover_summary(
    path: str | os.PathLike[str],
    *,
    schema: ClassSchema | str | None = None,
    block_size: int = 1024,
) -> LandcoverSummary:
    """Area per class of a class raster, block by block (memory: one block).

    Args:
        path: A 1-band integer class raster (e.g. ``{scene}_classes.tif``).
        schema: Class schema when the raster has no ``GEOSEG_SCHEMA`` tag (default
            ``potsdam``).
        block_size: Rows per block; memory is ``block_size × width`` pixels.

    Returns:
        The summary.

    Raises:
        InputError: The file is not a readable 1-band integer raster.
        SchemaError: The raster's ``GEOSEG_SCHEMA`` tag is bad, or ``schema`` is unusable.
    """
    if block_size < 1:
        raise InputError(f"block_size={block_size} must be >= 1")
    p = Path(path)
    ds = open_raster(p, "class raster")
    with ds:
        if ds.count != 1 or np.dtype(ds.dtypes[0]).kind not in "ui":
            raise InputError(
                f"{p}: expected a 1-band integer class raster, got {ds.count} band(s) of "
                f"{ds.dtypes[0]}"
            )
        sch = schema_from_tags(ds, schema if schema is not None else "potsdam", path=p)
        n = sch.num_classes
        nodata = ds.nodata
        pixels = np.zeros(n, dtype=np.int64)
        areas: npt.NDArray[np.float64] = np.zeros(n, dtype=np.float64)
        crs, transform = ds.crs, ds.transform
        have_area = crs is not None
        geographic = have_area and bool(crs.is_geographic)
        nodata_px = unknown_px = 0
        for row0 in range(0, ds.height, block_size):
            h = min(block_size, ds.height - row0)
            block = gdal_call(
                lambda: ds.read(1, window=Window(0, row0, ds.width, h)),  # noqa: B023
                lambda m: InputError(f"{p}: read failed ({m}); the file may be truncated"),
            ).astype(np.int64)
            ignore = block == IGNORE
            if nodata is not None and math.isfinite(nodata):
                ignore |= block == int(nodata)
            nodata_px += int(np.count_nonzero(ignore))
            good = ~ignore & (block >= 0) & (block < n)
            unknown_px += int(np.count_nonzero(~ignore & ~good))
            cls = np.where(good, block, n)  # bin n collects what is not a class
            counts = np.bincount(cls.ravel(), minlength=n + 1)[:n]
            pixels += counts
            if geographic:
                row_area = _geographic_row_areas(transform, row0, h, name=str(p))
                for r, a in zip(cls, row_area, strict=True):
                    areas += np.bincount(r, minlength=n + 1)[:n] * a
    if unknown_px:
        logger.warning(
            "%s: %d pixels hold values outside schema %r; not counted", p, unknown_px, sch.name
        )
    if crs is not None and not geographic:
        areas = (pixels * _pixel_area(crs, transform)).astype(np.float64)
    valid = int(pixels.sum())
    valid_area = float(areas.sum()) if have_area else None
    if have_area:
        total = valid_area or 0.0
        percent = areas / total * 100.0 if total > 0 else np.zeros(n)
    else:
        percent = pixels / valid * 100.0 if valid else np.zeros(n)
    return LandcoverSummary(
        classes=sch.classes,
        pixels=tuple(int(v) for v in pixels),
        area_m2=tuple(float(v) for v in areas) if have_area else None,
        percent=tuple(float(v) for v in percent),
        valid_pixels=valid,
        valid_area_m2=valid_area,
        nodata_pixels=nodata_px,
        unknown_pixels=unknown_px,
    )


def write_landcover_csv(
    summaries: Iterable[tuple[str, LandcoverSummary]],
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
) -> Path:
    """Write one row per scene and class (columns :data:`CSV_COLUMNS`) atomically.

    Args:
        summaries: ``(scene, summary)`` pairs, in the order to write.
        path: The CSV file.
        overwrite: Replace an existing file.

    Returns:
        The written path.
    """
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for scene, s in summaries:
        w.writerows(s.rows(scene))
    final = Path(path)
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return final
