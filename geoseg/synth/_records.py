"""Public records, constants and the naming and validation of synthetic scenes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from shapely.geometry import Polygon

from geoseg.errors import InputError
from geoseg.grid import GeoBox

PIXEL_SIZE = 0.05
"""Ground sample distance of synthetic scenes in metres (as ISPRS Potsdam)."""
CRS_EPSG = 32633
"""EPSG code of synthetic scenes (WGS 84 / UTM 33N, as ISPRS Potsdam)."""
MIN_SIZE = 64
"""Smallest scene edge in pixels."""
MAX_SIZE = 12000
"""Largest scene edge in pixels (twice a Potsdam tile; memory grows with its square)."""
SUN_AZIMUTH_DEG = 150.0
"""Sun azimuth, degrees clockwise from north: shadows fall to the north-north-west."""
SUN_ELEVATION_DEG = 55.0
"""Sun elevation in degrees: a shadow is ``height / tan(55°)`` ≈ 0.7 x the height long."""


_ORIGIN = (366000.0, 5808000.0)


# -- public records --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildingTruth:
    """A true building footprint.

    Attributes:
        polygon: Footprint in map coordinates (EPSG:32633); may have holes (courtyards).
        height_m: Height above ground of the roof (the ridge for gabled roofs).
        roof: Roof form.
    """

    polygon: Polygon
    height_m: float
    roof: Literal["flat", "gabled"]


@dataclass(frozen=True)
class RoadTruth:
    """A true road surface (the carriageway, without pavements), clipped to its scene.

    Attributes:
        polygon: Surface in map coordinates (EPSG:32633).
        width_m: Carriageway width in metres.
    """

    polygon: Polygon
    width_m: float


@dataclass(frozen=True, eq=False)
class SynthScene:
    """One synthetic scene in memory.

    Attributes:
        transform: Pixel-to-map affine of the grid.
        crs: Coordinate reference system (EPSG:32633).
        image: ``(4, H, W)`` uint8 bands red, green, blue, IR.
        dsm: ``(H, W)`` float32 absolute heights in metres.
        ndsm: ``(H, W)`` float32 heights above ground in metres (``dsm`` minus the ground).
        labels: ``(H, W)`` uint8 class indices of the POTSDAM schema.
        labels_no_boundary: ``labels`` with pixels within 3 px of a class boundary set to
            255 (ignore), like the ISPRS ``noBoundary`` labels.
        buildings: True building footprints (rasterizing them gives exactly the building
            pixels of ``labels``).
        roads: True road surfaces (their pixels are impervious surfaces or cars).
    """

    transform: Affine
    crs: CRS
    image: npt.NDArray[np.uint8]
    dsm: npt.NDArray[np.float32]
    ndsm: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    labels_no_boundary: npt.NDArray[np.uint8]
    buildings: tuple[BuildingTruth, ...]
    roads: tuple[RoadTruth, ...]

    @property
    def geobox(self) -> GeoBox:
        """The scene's grid."""
        h, w = self.labels.shape
        return GeoBox(w, h, self.transform, self.crs)


@dataclass(frozen=True)
class ScenePaths:
    """The files of one written scene.

    Attributes:
        image: ``4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif``.
        dsm: ``1_DSM/dsm_potsdam_{rr}_{cc}.tif``.
        labels: ``5_Labels_all/top_potsdam_{r}_{c}_label.tif``.
        labels_no_boundary: ``5_Labels_all_noBoundary/top_potsdam_{r}_{c}_label_noBoundary.tif``.
    """

    image: Path
    dsm: Path
    labels: Path
    labels_no_boundary: Path


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize` wrote.

    Attributes:
        root: The output folder (Potsdam layout).
        scene_ids: Tile ids in order (``2_10``, ``2_11``, ...).
        paths: Files of each scene, by tile id.
        truth: ``truth.gpkg`` with layers ``buildings`` and ``roads``.
        manifest: ``synth.json``, the parameters that reproduce the folder.
    """

    root: Path
    scene_ids: tuple[str, ...]
    paths: Mapping[str, ScenePaths]
    truth: Path
    manifest: Path


# -- validation and naming -------------------------------------------------------------------


def scene_id(index: int) -> str:
    """Potsdam-style tile id of scene ``index`` (0-based): ``2_10``, ``2_11``, ... ``3_10``."""
    row, col = _row_col(index)
    return f"{row}_{col}"


def scene_transform(index: int, size: int) -> Affine:
    """Transform of scene ``index`` of ``size`` px: scenes lie edge to edge on a grid."""
    row, col = _row_col(index)
    x0 = _ORIGIN[0] + (col - 10) * size * PIXEL_SIZE
    y0 = _ORIGIN[1] - (row - 2) * size * PIXEL_SIZE
    return Affine(PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0)


def _row_col(index: int) -> tuple[int, int]:
    if index < 0:
        raise InputError(f"index={index}: a scene index must be >= 0")
    return 2 + index // 10, 10 + index % 10


def check_size_seed(size: int, seed: int) -> None:
    """Raise :class:`InputError` unless ``MIN_SIZE <= size <= MAX_SIZE`` and ``seed >= 0``."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(
            f"size={size}: the scene size must be between {MIN_SIZE} and {MAX_SIZE} px"
        )
    if seed < 0:
        raise InputError(f"seed={seed}: the seed must be >= 0")


def check_transform(transform: Affine) -> float:
    """The pixel size of a north-up, square-pixel ``transform``; :class:`InputError` otherwise."""
    a, b, e, d = transform.a, transform.b, transform.e, transform.d
    if b != 0 or d != 0 or a <= 0 or e >= 0 or not math.isclose(a, -e, rel_tol=1e-9):
        raise InputError(
            f"transform {tuple(transform)[:6]}: synthetic scenes need a north-up grid with "
            "square pixels, e.g. Affine(0.05, 0, x0, 0, -0.05, y0)"
        )
    return float(a)


def scene_paths(root: Path, sid: str) -> ScenePaths:
    """The Potsdam file names of scene ``sid`` under ``root``."""
    r, c = (int(v) for v in sid.split("_"))
    return ScenePaths(
        image=root / "4_Ortho_RGBIR" / f"top_potsdam_{r}_{c}_RGBIR.tif",
        dsm=root / "1_DSM" / f"dsm_potsdam_{r:02d}_{c:02d}.tif",
        labels=root / "5_Labels_all" / f"top_potsdam_{r}_{c}_label.tif",
        labels_no_boundary=root
        / "5_Labels_all_noBoundary"
        / f"top_potsdam_{r}_{c}_label_noBoundary.tif",
    )
