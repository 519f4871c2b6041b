"""Writing a scene's GeoTIFFs (Potsdam layout) and the truth polygons (GeoPackage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from geoseg.schema import POTSDAM
from geoseg.synth._records import CRS_EPSG, SynthScene, scene_paths

_BLOCK = 608  # internal tiling of every raster, as the real files


def write_scene(root: Path, sid: str, scene: SynthScene) -> None:
    """Write the four GeoTIFFs of scene ``sid`` under ``root`` (Potsdam names, 608 px tiles)."""
    import rasterio
    from rasterio.enums import ColorInterp

    paths = scene_paths(root, sid)
    h, w = scene.labels.shape
    common: dict[str, Any] = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "crs": scene.crs,
        "transform": scene.transform,
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
    }
    for p in (paths.image, paths.dsm, paths.labels, paths.labels_no_boundary):
        p.parent.mkdir(parents=True, exist_ok=True)
    # Like the real files, the IR band is tagged alpha although it is data.
    with rasterio.open(
        paths.image,
        "w",
        count=4,
        dtype="uint8",
        photometric="RGB",
        alpha="YES",
        compress="PACKBITS",
        **common,
    ) as ds:
        ds.write(scene.image)
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with rasterio.open(
        paths.dsm, "w", count=1, dtype="float32", compress="DEFLATE", predictor=3, **common
    ) as ds:
        ds.write(scene.dsm, 1)
    for path, lab in (
        (paths.labels, scene.labels),
        (paths.labels_no_boundary, scene.labels_no_boundary),
    ):
        with rasterio.open(
            path, "w", count=3, dtype="uint8", photometric="RGB", compress="DEFLATE", **common
        ) as ds:
            ds.write(POTSDAM.encode(lab))


def write_truth(path: Path, buildings: list[dict[str, Any]], roads: list[dict[str, Any]]) -> None:
    """Write the true polygons as layers ``buildings`` and ``roads`` of the GeoPackage ``path``."""
    import geopandas as gpd

    crs = f"EPSG:{CRS_EPSG}"
    layers: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = [
        ("buildings", buildings, {"scene": "str", "height_m": "float64", "roof": "str"}),
        ("roads", roads, {"scene": "str", "width_m": "float64"}),
    ]
    for name, rows, columns in layers:
        if rows:
            gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
        else:
            gdf = gpd.GeoDataFrame(
                {c: np.array([], dtype=object if t == "str" else t) for c, t in columns.items()},
                geometry=gpd.GeoSeries([], crs=crs),
                crs=crs,
            )
        gdf.to_file(path, layer=name, driver="GPKG", engine="pyogrio", geometry_type="Polygon")
