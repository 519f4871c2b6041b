"""Synthetic Potsdam-like scenes: image, DSM, labels and true polygons from one geometry.

:func:`make_scene` builds one scene in memory (pure: no I/O): a layout of roads, pavements,
parking lots, buildings, trees, cars, clutter and grass patches drawn as shapely polygons,
rasterized once into an object-id raster from which the class labels, the DSM and the
image are all derived. :func:`synthesize` writes scenes in the ISPRS Potsdam folder layout
(``4_Ortho_RGBIR``, ``1_DSM``, ``5_Labels_all``, ``5_Labels_all_noBoundary``) plus the true
building and road polygons in ``truth.gpkg``, so that the Potsdam reader reads it unchanged.

Geometry is made in a local metric frame: ``u`` east and ``v`` south of the scene's
top-left corner (``u = col * res``, ``v = row * res``), and moved to map coordinates only
at the end. Every scene is determined by ``(seed, index)``; the ground surface depends on
the seed and map position only, so neighbouring scenes share continuous terrain.

The data flow, one private module per step: ``_records`` (constants, records, naming and
validation) -> ``_objects`` + ``_layout`` (geometry in local metres) -> ``_render``
(arrays) -> ``_write`` (GeoTIFFs and ``truth.gpkg``); ``_api`` runs them.
"""

from __future__ import annotations

from geoseg.synth._api import make_scene, synthesize
from geoseg.synth._records import (
    CRS_EPSG,
    MAX_SIZE,
    MIN_SIZE,
    PIXEL_SIZE,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    BuildingTruth,
    RoadTruth,
    ScenePaths,
    SynthResult,
    SynthScene,
    scene_id,
    scene_transform,
)

__all__ = [
    "CRS_EPSG",
    "MAX_SIZE",
    "MIN_SIZE",
    "PIXEL_SIZE",
    "SUN_AZIMUTH_DEG",
    "SUN_ELEVATION_DEG",
    "BuildingTruth",
    "RoadTruth",
    "ScenePaths",
    "SynthResult",
    "SynthScene",
    "make_scene",
    "scene_id",
    "scene_transform",
    "synthesize",
]
