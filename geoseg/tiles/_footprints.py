"""Building footprints for the contact target of a tile store.

``geoseg tile --footprints FILE`` adds a ``contact`` band to every chip: 1 where a pixel lies
within ``contact_width`` metres of two or more *different* footprints (the walls buildings
share, and the narrow gaps between them), 0 elsewhere, 255 where the scene is nodata. A model
trained on it learns where touching buildings meet, which a class map alone merges.

How: each footprint is buffered by the width (at least one pixel) and the buffers are burnt
into the chip's grid with an additive count (pixel centres); pixels counted twice or more are
contact. A multi-part footprint is one footprint: its parts are never contact with each other.

:func:`read_footprints` reads and checks the file once (I/O, before any chip is written);
:func:`scene_footprints` puts them on a scene's grid (reprojected, buffered, indexed) and
:meth:`SceneFootprints.contact` makes the band of one window (no I/O).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine

from geoseg.errors import InputError, first_line
from geoseg.grid import GeoBox, metres_per_unit

__all__ = [
    "DEFAULT_LAYER",
    "Footprints",
    "SceneFootprints",
    "contact_band",
    "read_footprints",
    "scene_footprints",
]

logger = logging.getLogger("geoseg.tiles")

DEFAULT_LAYER = "buildings"
"""The layer read from a multi-layer file when none is named."""

_PARQUET = (".parquet", ".geoparquet")
_POLYGONAL = ("Polygon", "MultiPolygon")
_FIX = "give a GeoPackage, GeoJSON or GeoParquet of building polygons with a CRS"


@dataclass(frozen=True, eq=False)
class Footprints:
    """Building footprints as read: polygons in the file's CRS.

    Attributes:
        path: The file.
        layer: The layer read (None for a GeoParquet file).
        geoms: Polygons and multipolygons (shapely), one per building.
        crs: The file's CRS (WKT).
    """

    path: Path
    layer: str | None
    geoms: npt.NDArray[Any]
    crs: str


def _layers(path: Path) -> list[str]:
    import pyogrio

    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except (pyogrio.errors.DataSourceError, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read footprints ({first_line(exc)}); {_FIX}") from None


def _pick_layer(path: Path, layers: list[str], layer: str | None) -> str:
    if layer is not None:
        if layer not in layers:
            raise InputError(
                f"{path}: no layer {layer!r} (its layers: {', '.join(layers) or 'none'}); "
                "pass one of them with --footprints-layer"
            )
        return layer
    if DEFAULT_LAYER in layers:
        return DEFAULT_LAYER
    if len(layers) == 1:
        return layers[0]
    if not layers:
        raise InputError(f"{path}: the file has no layer; {_FIX}")
    raise InputError(
        f"{path}: {len(layers)} layers ({', '.join(layers)}) and none named "
        f"{DEFAULT_LAYER!r}; choose one with --footprints-layer"
    )


def read_footprints(path: str | os.PathLike[str], *, layer: str | None = None) -> Footprints:
    """Read and check building footprints (any vector format GDAL reads, or GeoParquet).

    Geometries other than polygons are left out (with a warning); empty ones too.

    Args:
        path: The vector file.
        layer: The layer to read; None takes ``buildings``, else the file's only layer.

    Raises:
        InputError: The file is missing or unreadable, the layer is absent or ambiguous,
            the file has no CRS, or it holds no polygon (one line naming the file).
    """
    import geopandas as gpd
    import pyogrio
    import shapely

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: footprints file not found; {_FIX}")
    if p.suffix.lower() in _PARQUET:
        import pyarrow

        if layer is not None:
            raise InputError(f"{p}: a GeoParquet file has no layers; leave out --footprints-layer")
        try:
            frame = gpd.read_parquet(p)
        except (OSError, ValueError, pyarrow.ArrowException) as exc:
            raise InputError(f"{p}: cannot read footprints ({first_line(exc)}); {_FIX}") from None
        name = None
    else:
        name = _pick_layer(p, _layers(p), layer)
        try:
            frame = gpd.read_file(p, layer=name, engine="pyogrio")
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
            raise InputError(f"{p}: cannot read footprints ({first_line(exc)}); {_FIX}") from None
    where = f"{p}" + (f" (layer {name!r})" if name is not None else "")
    if frame.crs is None:
        raise InputError(
            f"{where}: the footprints have no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX) so "
            "that they can be placed on the scenes"
        )
    geoms = np.asarray(frame.geometry.values, dtype=object)
    kinds = shapely.get_type_id(geoms)
    keep = np.isin(kinds, (3, 6)) & ~shapely.is_empty(geoms)  # Polygon, MultiPolygon
    if not keep.any():
        raise InputError(
            f"{where}: no polygon among its {len(geoms)} feature(s); building footprints must "
            "be polygons"
        )
    if not keep.all():
        logger.warning(
            "%s: %d feature(s) that are not polygons (or are empty) were left out",
            where,
            int((~keep).sum()),
        )
    geoms = geoms[keep]
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = shapely.make_valid(geoms[bad])
    return Footprints(path=p, layer=name, geoms=geoms, crs=frame.crs.to_wkt())


@dataclass(frozen=True, eq=False)
class SceneFootprints:
    """Footprints on one scene's grid: buffered by the contact width, in a spatial index.

    Attributes:
        buffered: The footprints in the scene's CRS, each buffered by ``radius``.
        radius: The buffer, in CRS units.
        layer: The layer of the file they were read from (None for GeoParquet).
    """

    buffered: npt.NDArray[Any]
    radius: float
    layer: str | None = None
    tree: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import shapely

        object.__setattr__(self, "tree", shapely.STRtree(self.buffered))

    def contact(self, transform: Affine, shape: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """The contact band (0/1) of a window with ``transform`` and ``shape`` (rows, cols)."""
        import shapely

        h, w = shape
        left, top = transform @ (0, 0)
        right, bottom = transform @ (w, h)
        box = shapely.box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))
        hits = self.tree.query(box)
        return contact_band(self.buffered[np.sort(hits)], transform, shape)


def contact_band(
    buffered: npt.NDArray[Any], transform: Affine, shape: tuple[int, int]
) -> npt.NDArray[np.uint8]:
    """1 where two or more of the ``buffered`` footprints cover a pixel's centre, else 0.

    Args:
        buffered: Footprints already buffered by the contact width (one per building).
        transform: The grid's transform.
        shape: The grid's (rows, cols).
    """
    import shapely

    if len(buffered) < 2:
        return np.zeros(shape, dtype=np.uint8)
    # Pixel centres inside each footprint, counted (shapely, not GDAL: chips are cut in
    # threads, and a rasterized window is small).
    inv = ~transform
    count = np.zeros(shape, dtype=np.int32)
    for g in buffered:
        x0, y0, x1, y1 = g.bounds
        xs4, ys4 = np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1])
        cols = inv.a * xs4 + inv.b * ys4 + inv.c
        rows = inv.d * xs4 + inv.e * ys4 + inv.f
        c0, c1 = max(0, int(np.floor(cols.min()))), min(shape[1], int(np.ceil(cols.max())) + 1)
        r0, r1 = max(0, int(np.floor(rows.min()))), min(shape[0], int(np.ceil(rows.max())) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        cc, rr = np.meshgrid(np.arange(c0, c1) + 0.5, np.arange(r0, r1) + 0.5)
        xs = transform.a * cc + transform.b * rr + transform.c
        ys = transform.d * cc + transform.e * rr + transform.f
        count[r0:r1, c0:c1] += shapely.contains_xy(g, xs, ys)
    return (count >= 2).astype(np.uint8)


def scene_footprints(fp: Footprints, geobox: GeoBox, *, width_m: float) -> SceneFootprints:
    """The footprints that reach a scene, reprojected to its CRS and buffered.

    The buffer is ``width_m`` metres, and at least one pixel (the larger pixel side), so that
    the contact band is never thinner than two pixels across a shared wall.

    Raises:
        InputError: The scene has no CRS (the footprints cannot be placed on it).
    """
    import shapely
    from pyproj import CRS, Transformer
    from rasterio.warp import transform_bounds

    if geobox.crs is None:
        raise InputError(
            "a scene without a CRS cannot take --footprints; georeference the scene or leave "
            "out --footprints"
        )
    res = max(abs(geobox.resolution[0]), abs(geobox.resolution[1]))
    radius = max(width_m / metres_per_unit(geobox), res)
    src, dst = CRS.from_wkt(fp.crs), CRS.from_user_input(geobox.crs.to_wkt())
    left, bottom, right, top = geobox.bounds
    pad = radius + res
    scene_box = (left - pad, bottom - pad, right + pad, top + pad)
    geoms = fp.geoms
    if src != dst:
        # keep what may reach the scene (its bounds in the file's CRS), then reproject that
        bounds = transform_bounds(dst.to_wkt(), src.to_wkt(), *scene_box, densify_pts=21)
        geoms = geoms[shapely.intersects(geoms, shapely.box(*bounds))]
        tr = Transformer.from_crs(src, dst, always_xy=True)
        geoms = shapely.transform(
            geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))
        )
    geoms = geoms[shapely.intersects(geoms, shapely.box(*scene_box))]
    return SceneFootprints(
        buffered=shapely.buffer(geoms, radius), radius=float(radius), layer=fp.layer
    )
