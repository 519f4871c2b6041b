"""A quick-look PNG of a scene and its class map: image, classes, building outlines.

:func:`write_quicklook` draws three panels side by side on the scene's map coordinates:

1. the image's RGB (bands named ``red``/``green``/``blue`` in the band descriptions, else
   the bands whose colour interpretation is red/green/blue, else the first three; a single
   band is drawn grey), each band stretched from its 2nd to its 98th percentile;
2. the class map in its class colours with a legend of the class names: a one-band class
   raster (``geoseg predict``) takes its schema from the ``GEOSEG_SCHEMA`` tag, else from
   its colour table (with the built-in schema's names where the colours are its own); a
   colour-coded label image (three bands, ISPRS style) is decoded with the tagged schema or
   the built-in one;
3. the image again with the polygons of a vector layer (buildings) outlined.

Every raster is read decimated (rasterio ``out_shape``: GDAL uses the overviews where the
file has them) to at most ``max_size`` pixels on its longer edge, so memory stays bounded
whatever the scene's size. matplotlib is imported inside the function and used through its
object-oriented API on the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, Resampling

from geoseg._io import atomic_path, check_output_path
from geoseg.errors import InputError
from geoseg.raster.source import open_raster
from geoseg.raster.tags import SCHEMA_TAG, schema_from_tags
from geoseg.schema import IGNORE, POTSDAM, ClassSchema

__all__ = ["OUTLINE_COLOUR", "STRETCH_PERCENTILES", "write_quicklook"]

logger = logging.getLogger("geoseg.raster")

STRETCH_PERCENTILES = (2.0, 98.0)
"""The percentiles of each image band mapped to black and white."""

OUTLINE_COLOUR = "#ff00ff"
"""The colour of the polygon outlines (magenta: no class colour, strong on imagery)."""

_PANEL_IN = 5.0
_DPI = 100
_Legend = list[tuple[str, tuple[int, int, int]]]


def write_quicklook(
    image_path: str | os.PathLike[str],
    classes_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    vectors: str | os.PathLike[str] | None = None,
    layer: str = "buildings",
    max_size: int = 1024,
    title: str | None = None,
) -> Path:
    """Write a three-panel quick-look PNG of a scene: image, class map, outlined polygons.

    Args:
        image_path: The scene's image (RGB bands found as the module says).
        classes_path: Its class map: a one-band class raster or a colour-coded label image.
        out_png: The PNG to write (atomically; an existing file is replaced).
        vectors: A vector file (GeoPackage) whose layer ``layer`` is outlined on the image
            in the third panel; None draws the image alone there.
        layer: The layer of ``vectors`` to outline.
        max_size: The longest edge, in pixels, any raster is read at (decimated).
        title: The figure's title; None uses the image's file name.

    Returns:
        ``out_png`` as a Path.

    Raises:
        InputError: A raster or the vector file cannot be read, ``layer`` is not in it, or
            ``max_size`` is below 16.
        SchemaError: The class map's ``GEOSEG_SCHEMA`` tag is unusable.
        OutputError: ``out_png`` cannot be created (a parent is a file, a folder is there).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    t0 = time.perf_counter()
    if max_size < 16:
        raise InputError(f"max_size={max_size}: give at least 16 pixels")
    out = check_output_path(out_png, kind="file")
    with open_raster(Path(image_path), "image") as ds:
        rgb, image_extent = _read_rgb(ds, max_size)
        crs, full_shape = ds.crs, (ds.height, ds.width)
        bounds = ds.bounds
    with open_raster(Path(classes_path), "class map") as ds:
        classes_rgba, legend, classes_extent = _read_classes(ds, max_size)
    rings = None if vectors is None else _read_rings(Path(vectors), layer, crs, bounds)

    fig = Figure(figsize=(3 * _PANEL_IN, _PANEL_IN + 0.9), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    axes[0].imshow(rgb, extent=image_extent, interpolation="antialiased")
    axes[0].set_title("image")
    axes[1].imshow(classes_rgba, extent=classes_extent, interpolation="nearest")
    axes[1].set_title("classes")
    handles = [Patch(facecolor=_unit(rgb_c), edgecolor="0.3", label=name) for name, rgb_c in legend]
    fig.legend(handles=handles, loc="outside lower center", ncol=max(1, min(8, len(handles))),
               fontsize="small", frameon=False)  # fmt: skip
    axes[2].imshow(rgb, extent=image_extent, interpolation="antialiased")
    if rings is not None:
        axes[2].add_collection(LineCollection(rings, colors=OUTLINE_COLOUR, linewidths=1.2))
        axes[2].set_title(f"{layer}: {len(rings)} outline{'s' if len(rings) != 1 else ''}")
    else:
        axes[2].set_title("image")
    left, bottom, right, top = image_extent[0], image_extent[2], image_extent[1], image_extent[3]
    for ax in axes:
        ax.set_xlim(left, right)
        ax.set_ylim(bottom, top)
        ax.set_xticks([])
        ax.set_yticks([])
    caption = f"{full_shape[1]} x {full_shape[0]} px"
    if crs is not None:
        caption += f", {crs.to_string()}"
    fig.suptitle(f"{title if title is not None else Path(image_path).name}\n{caption}",
                 fontsize="medium")  # fmt: skip

    with atomic_path(out, overwrite=True, kind="file") as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, facecolor="white")
    logger.info("quick-look %s in %.1f s", out, time.perf_counter() - t0)
    return out


def _out_shape(ds: rasterio.DatasetReader, max_size: int) -> tuple[int, int]:
    """The decimated (rows, cols) of ``ds``: at most ``max_size`` on the longer edge."""
    scale = min(1.0, max_size / max(ds.height, ds.width))
    return max(1, math.ceil(ds.height * scale)), max(1, math.ceil(ds.width * scale))


def _extent(ds: rasterio.DatasetReader) -> tuple[float, float, float, float]:
    """``imshow``'s extent (left, right, bottom, top) of a north-up raster."""
    b = ds.bounds
    return (b.left, b.right, b.bottom, b.top)


def _rgb_bands(ds: rasterio.DatasetReader) -> list[int]:
    """The 1-based indexes of the red, green and blue bands (see the module)."""
    names = [(d or "").strip().lower() for d in ds.descriptions]
    if all(c in names for c in ("red", "green", "blue")):
        return [names.index(c) + 1 for c in ("red", "green", "blue")]
    interp = list(ds.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if all(c in interp for c in wanted):
        return [interp.index(c) + 1 for c in wanted]
    return [1, 2, 3] if ds.count >= 3 else [1, 1, 1]


def _read_rgb(
    ds: rasterio.DatasetReader, max_size: int
) -> tuple[npt.NDArray[np.float32], tuple[float, float, float, float]]:
    """The stretched RGB image (H, W, 3) in 0..1, decimated, and its extent."""
    bands = _rgb_bands(ds)
    shape = _out_shape(ds, max_size)
    data = ds.read(bands, out_shape=(3, *shape), resampling=Resampling.average)
    data = data.astype(np.float32)
    valid = np.ones(shape, dtype=bool)
    if ds.nodata is not None:
        valid = ~(data == np.float32(ds.nodata)).all(axis=0)
    valid &= np.isfinite(data).all(axis=0)
    out = np.ones((*shape, 3), dtype=np.float32)  # no data: white
    for i in range(3):
        band = data[i]
        if not valid.any():
            break
        lo, hi = np.percentile(band[valid], STRETCH_PERCENTILES)
        scaled = (band - lo) / (hi - lo) if hi > lo else np.zeros_like(band)
        out[..., i] = np.where(valid, np.clip(scaled, 0.0, 1.0), 1.0)
    return out, _extent(ds)


def _read_classes(
    ds: rasterio.DatasetReader, max_size: int
) -> tuple[npt.NDArray[np.uint8], _Legend, tuple[float, float, float, float]]:
    """The class map as RGBA (H, W, 4), decimated (mode), its legend and its extent.

    Pixels of no class (255, the nodata value, a colour not in the schema) are transparent.
    """
    shape = _out_shape(ds, max_size)
    if ds.count >= 3:  # colour-coded labels: decode the colours
        schema = schema_from_tags(ds, POTSDAM)
        colours = ds.read([1, 2, 3], out_shape=(3, *shape), resampling=Resampling.nearest)
        indices, _ = schema.decode(colours)
        entries = _schema_entries(schema)
    else:
        indices = ds.read(1, out_shape=shape, resampling=Resampling.mode)
        if indices.dtype != np.uint8:
            ok = (indices >= 0) & (indices < IGNORE)
            indices = np.where(ok, indices, IGNORE).astype(np.uint8)
        if ds.nodata is not None and 0 <= ds.nodata <= IGNORE:
            indices = np.where(indices == int(ds.nodata), IGNORE, indices).astype(np.uint8)
        entries = _class_entries(ds, indices)
    lut = np.zeros((256, 4), dtype=np.uint8)
    for value, _, colour in entries:
        lut[value] = (*colour, 255)
    legend = [(name, colour) for _, name, colour in entries]
    return lut[indices], legend, _extent(ds)


def _class_entries(
    ds: rasterio.DatasetReader, indices: npt.NDArray[np.uint8]
) -> list[tuple[int, str, tuple[int, int, int]]]:
    """(value, name, colour) of a one-band class raster's classes (see the module)."""
    schema: ClassSchema | None = None
    if ds.tags().get(SCHEMA_TAG):
        schema = schema_from_tags(ds, POTSDAM)
    table: dict[int, tuple[int, ...]] = {}
    try:
        table = dict(ds.colormap(1))
    except ValueError:  # no colour table
        pass
    if schema is None and table:
        n = len(POTSDAM)
        if all(tuple(table.get(i, ())[:3]) == POTSDAM.colours[i] for i in range(n)):
            schema = POTSDAM
    if schema is not None:
        return _schema_entries(schema)
    present = [int(v) for v in np.unique(indices) if v != IGNORE]
    if table:
        return [(v, f"class {v}", _rgb(table.get(v, (128, 128, 128)))) for v in present]
    return _schema_entries(POTSDAM)


def _schema_entries(schema: ClassSchema) -> list[tuple[int, str, tuple[int, int, int]]]:
    return [(i, schema.classes[i], schema.colours[i]) for i in range(len(schema))]


def _unit(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


def _rgb(entry: Sequence[int]) -> tuple[int, int, int]:
    return (int(entry[0]), int(entry[1]), int(entry[2]))


def _read_rings(
    path: Path, layer: str, crs: CRS | None, bounds: BoundingBox
) -> list[npt.NDArray[np.float64]]:
    """The outlines (polygon rings, lines) of ``layer`` within ``bounds``, in ``crs``."""
    import pyogrio
    import shapely
    from pyogrio.errors import DataLayerError, DataSourceError
    from rasterio.warp import transform_bounds

    if not path.exists():
        raise InputError(f"{path}: vector file not found; check the path")
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
        if layer not in layers:
            raise InputError(
                f"{path}: no layer {layer!r}; layers: {', '.join(layers) or '(none)'}; "
                "pass the layer to outline"
            )
        info = pyogrio.read_info(path, layer=layer)
        box = tuple(bounds)
        if crs is not None and info.get("crs") and CRS.from_user_input(info["crs"]) != crs:
            box = transform_bounds(crs, info["crs"], *bounds)
        frame = pyogrio.read_dataframe(path, layer=layer, bbox=box)
    except (DataSourceError, DataLayerError, OSError) as exc:
        raise InputError(f"{path}: cannot read layer {layer!r} ({exc})") from None
    if crs is not None and frame.crs is not None and frame.crs != crs:
        frame = frame.to_crs(crs)
    parts = shapely.get_parts(np.asarray(frame.geometry.values))
    rings: list[npt.NDArray[np.float64]] = []
    for part in parts:
        if part is None or part.is_empty:
            continue
        if part.geom_type == "Polygon":
            lines = shapely.get_rings(part)
        elif part.geom_type in ("LineString", "LinearRing"):
            lines = [part]
        else:  # points: nothing to outline
            continue
        rings += [shapely.get_coordinates(line) for line in lines]
    return rings
