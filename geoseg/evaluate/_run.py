"""Evaluation on files: streaming pixel metrics over raster blocks, object metrics of layers.

:func:`evaluate_rasters` reads a predicted class raster and a truth raster block by block
and accumulates one confusion matrix, so memory is bounded by the block size whatever the
scene size. :func:`evaluate_vectors` reads two polygon layers and applies the SpaceNet
matching rule of :mod:`geoseg.evaluate.objects`. The arithmetic lives in
:mod:`geoseg.evaluate.pixels` and :mod:`geoseg.evaluate.objects`; this module only does I/O
and grid checks. :func:`evaluate_roads` reads two line layers for the road network metrics
of :mod:`geoseg.evaluate.roads`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geoseg.errors import BandMismatchError, GridMismatchError, InputError
from geoseg.evaluate.pixels import PixelMetrics, boundary_mask, confusion_matrix
from geoseg.grid import block_windows
from geoseg.options import EvaluateOptions
from geoseg.raster.source import gdal_call, open_raster
from geoseg.schema import IGNORE, POTSDAM, ClassSchema, load_schema

if TYPE_CHECKING:
    import geopandas as gpd
    import pyproj

    from geoseg.evaluate.objects import ObjectMetrics
    from geoseg.evaluate.roads import RoadMetrics

__all__ = ["evaluate_rasters", "evaluate_roads", "evaluate_vectors"]

# The package's name, not this module's: log lines read "geoseg.evaluate: ..." as they did
# before geoseg/evaluate.py became a package.
logger = logging.getLogger("geoseg.evaluate")

PathLike = str | os.PathLike[str]

GRID_TOLERANCE_PX = 1e-6
"""Largest corner offset (in pixels) at which two transforms count as the same grid."""

DEFAULT_LAYER = "buildings"


# --------------------------------------------------------------------------- rasters


def _read_error(path: PathLike, role: str, message: str) -> InputError:
    return InputError(
        f"{path}: the {role} raster is truncated or corrupt ({message}); copy or write it again"
    )


def _georeferenced(ds: DatasetReader) -> bool:
    return ds.crs is not None or ds.transform != Affine.identity()


def _terms(t: Affine) -> str:
    return "(" + ", ".join(f"{v:.10g}" for v in tuple(t)[:6]) + ")"


def _corner_shift_px(a: Affine, b: Affine, width: int, height: int) -> float:
    """Largest distance, in pixels of ``a``, between the grid corners under ``a`` and ``b``."""
    if a.determinant == 0:
        return math.inf
    inv = ~a
    worst = 0.0
    for cx, cy in ((0, 0), (width, 0), (0, height), (width, height)):
        x, y = inv @ (b @ (cx, cy))
        worst = max(worst, abs(x - cx), abs(y - cy))
    return worst


def _check_grids(
    pred: DatasetReader, truth: DatasetReader, pred_path: str, truth_path: str
) -> None:
    if (pred.width, pred.height) != (truth.width, truth.height):
        raise GridMismatchError(
            f"{pred_path} is {pred.width}x{pred.height} px but {truth_path} is "
            f"{truth.width}x{truth.height} px; evaluate a prediction made on the truth's grid"
        )
    if not _georeferenced(pred):
        # Predictions are written georeferenced: one without is worth a word.
        logger.warning(
            "%s: the prediction has no georeferencing (no CRS, no transform); it is the size of "
            "%s, so it is compared pixel by pixel as if on the same grid",
            pred_path,
            truth_path,
        )
        return
    if not _georeferenced(truth):
        # Usual for ISPRS label files: said at INFO level.
        logger.info("%s has no georeferencing; same size, so assuming the same grid", truth_path)
        return
    if pred.crs is not None and truth.crs is not None and pred.crs != truth.crs:
        raise GridMismatchError(
            f"{pred_path} has CRS {pred.crs} but {truth_path} has CRS {truth.crs}; "
            "predict on the truth's grid or warp one raster onto the other"
        )
    shift = _corner_shift_px(pred.transform, truth.transform, pred.width, pred.height)
    if shift > GRID_TOLERANCE_PX:
        raise GridMismatchError(
            f"{pred_path} and {truth_path} are not on the same grid: their corners differ by "
            f"up to {shift:.6g} px (transform {_terms(pred.transform)} vs "
            f"{_terms(truth.transform)}); predict on the truth's grid or warp one onto the other"
        )


def _check_pred(ds: DatasetReader, path: str) -> None:
    if ds.count != 1:
        raise BandMismatchError(
            f"{path}: the prediction has {ds.count} bands; pass a 1-band class raster "
            "(as written by geoseg predict)"
        )
    if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
        raise InputError(
            f"{path}: prediction dtype {ds.dtypes[0]} is not an integer class raster; "
            "pass class indices (uint8, nodata 255)"
        )


def _truth_is_colour(ds: DatasetReader, path: str) -> bool:
    if ds.count == 1:
        if not np.issubdtype(np.dtype(ds.dtypes[0]), np.integer):
            raise InputError(
                f"{path}: truth dtype {ds.dtypes[0]} is not an integer class raster; "
                "pass class indices or a colour-coded RGB label image"
            )
        return False
    if ds.count >= 3:
        return True
    raise BandMismatchError(
        f"{path}: the truth has {ds.count} bands; pass 1-band class indices or a "
        "3-band colour-coded label image"
    )


def _nodata_int(ds: DatasetReader) -> int | None:
    nd = ds.nodata
    if nd is None or not math.isfinite(nd) or nd != int(nd):
        return None
    return int(nd)


def _to_classes(
    raw: npt.NDArray[np.integer], num_classes: int, nodata: int | None
) -> tuple[npt.NDArray[np.uint8], int]:
    """Integer raster to uint8 classes: nodata and 255 -> 255; others out of range -> 255.

    Returns:
        The classes and the number of pixels that were out of range (not nodata/255).
    """
    ignore = raw == IGNORE
    if nodata is not None:
        ignore |= raw == nodata
    good = (raw >= 0) & (raw < num_classes)
    out_of_range = int(np.count_nonzero(~good & ~ignore))
    out = np.where(good & ~ignore, raw, IGNORE).astype(np.uint8)
    return out, out_of_range


def _read_truth_block(
    ds: DatasetReader,
    core: Window,
    halo: int,
    *,
    schema: ClassSchema,
    colour: bool,
    nodata: int | None,
) -> tuple[npt.NDArray[np.uint8], int]:
    """Truth classes of ``core`` grown by ``halo`` px on every side (outside = 255).

    Returns:
        The padded class block and the number of undecodable pixels inside ``core``.
    """
    r0, c0 = int(core.row_off) - halo, int(core.col_off) - halo
    h, w = int(core.height) + 2 * halo, int(core.width) + 2 * halo
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, ds.height), min(c0 + w, ds.width)
    win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
    if colour:
        classes, _ = schema.decode(ds.read((1, 2, 3), window=win))
        bad_mask = classes == IGNORE
    else:
        raw = ds.read(1, window=win)
        classes, _ = _to_classes(raw, schema.num_classes, nodata)
        bad_mask = (classes == IGNORE) & (raw != IGNORE)
        if nodata is not None:
            bad_mask &= raw != nodata
    # Count undecodable pixels in the core only (the halo belongs to other blocks).
    cr0, cc0_ = int(core.row_off) - rr0, int(core.col_off) - cc0
    bad = int(
        np.count_nonzero(bad_mask[cr0 : cr0 + int(core.height), cc0_ : cc0_ + int(core.width)])
    )
    if halo == 0:
        return classes, bad
    out = np.full((h, w), IGNORE, dtype=np.uint8)
    out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = classes
    return out, bad


def evaluate_rasters(
    pred_path: PathLike,
    truth_path: PathLike,
    *,
    schema: ClassSchema | PathLike = POTSDAM,
    eroded: int = 0,
    ignore_classes: Sequence[str] = (),
    block_size: int = 1024,
) -> PixelMetrics:
    """Pixel metrics of a predicted class raster against a truth raster, block by block.

    The prediction is a 1-band integer class raster; 255 and its declared nodata are not
    counted. The truth is 1-band class indices (255 / nodata ignored) or a colour-coded
    label image (first 3 bands) decoded with ``schema``; colours not in the schema become
    255 and are reported in one warning with their count (as are 1-band values outside the
    schema). Both rasters must share a grid: same size and, when both are georeferenced,
    same CRS and transform (within 1e-6 px); a raster without georeferencing (no CRS,
    identity transform) is accepted when its size matches.

    With ``eroded=R`` pixels within ``R`` px of a class boundary of the truth are not
    counted (:func:`geoseg.evaluate.pixels.boundary_mask`); each truth block is read with a halo of
    ``R`` px, so the result equals a whole-image computation for every block size.

    Args:
        pred_path: Predicted class raster.
        truth_path: Truth class raster or colour-coded label image.
        schema: Class schema, or a name/file for :func:`geoseg.schema.load_schema`.
        eroded: Boundary erosion radius in pixels (0 = none).
        ignore_classes: Class names left out of mIoU and mean F1.
        block_size: Block edge in pixels; memory is O(block_size²).

    Returns:
        The metrics over the whole raster.

    Raises:
        InputError: A file that cannot be read, wrong band count or dtype, bad options.
        GridMismatchError: The two rasters are not on the same grid.
        SchemaError: An unknown schema or ignored class.
    """
    sch = load_schema(schema)
    for name in ignore_classes:
        sch.index(name)
    if eroded < 0:
        raise InputError(f"eroded={eroded} must be >= 0")
    if block_size < 1:
        raise InputError(f"block_size={block_size} must be >= 1")
    pred_s, truth_s = str(pred_path), str(truth_path)
    n = sch.num_classes
    cm = np.zeros((n, n), dtype=np.int64)
    unknown_truth = 0
    unknown_pred = 0
    with contextlib.ExitStack() as files:
        # Opened and checked up front (a truncated file fails here). Truth files may carry
        # no georeferencing (ISPRS labels); geoseg says so in its own words (_check_grids).
        pds = files.enter_context(open_raster(Path(pred_s), "prediction"))
        tds = files.enter_context(open_raster(Path(truth_s), "truth"))
        _check_pred(pds, pred_s)
        colour = _truth_is_colour(tds, truth_s)
        _check_grids(pds, tds, pred_s, truth_s)
        p_nodata, t_nodata = _nodata_int(pds), _nodata_int(tds)
        for win in block_windows(pds.height, pds.width, block_size):
            raw = gdal_call(
                partial(pds.read, 1, window=win), lambda m: _read_error(pred_s, "prediction", m)
            )
            pred, bad_p = _to_classes(raw, n, p_nodata)
            unknown_pred += bad_p
            truth, bad_t = gdal_call(
                partial(
                    _read_truth_block, tds, win, eroded, schema=sch, colour=colour, nodata=t_nodata
                ),
                lambda m: _read_error(truth_s, "truth", m),
            )
            unknown_truth += bad_t
            valid = None
            if eroded:
                mask = boundary_mask(truth, eroded)
                valid = ~mask[eroded:-eroded, eroded:-eroded]
                truth = truth[eroded:-eroded, eroded:-eroded]
            cm += confusion_matrix(pred, truth, num_classes=n, valid=valid)
    if unknown_truth:
        what = "colours" if colour else "values"
        logger.warning(
            "%s: %d truth pixels have %s not in schema %r; they are ignored",
            truth_s,
            unknown_truth,
            what,
            sch.name,
        )
    if unknown_pred:
        logger.warning(
            "%s: %d predicted pixels hold classes outside schema %r (0..%d); they are ignored",
            pred_s,
            unknown_pred,
            sch.name,
            n - 1,
        )
    metrics = PixelMetrics.from_confusion(cm, sch.classes, ignore_classes=ignore_classes)
    logger.info(
        "%s vs %s: %d px counted, OA %.4f, mIoU %.4f",
        pred_s,
        truth_s,
        metrics.pixel_count,
        metrics.overall_accuracy,
        metrics.miou,
    )
    return metrics


# --------------------------------------------------------------------------- vectors


def _pick_layer(
    path: str, layer: str | None, role: str, option: str, default: str = DEFAULT_LAYER
) -> str:
    import pyogrio
    from pyogrio.errors import DataSourceError

    try:
        names = [str(row[0]) for row in pyogrio.list_layers(path)]
    except (DataSourceError, OSError) as exc:
        raise InputError(
            f"{path}: cannot open the {role} vector file ({exc}); pass a GeoPackage or GeoJSON"
        ) from None
    if layer is not None:
        if layer not in names:
            raise InputError(
                f"{path}: no layer {layer!r}; layers: {', '.join(names) or '(none)'}; "
                f"pass {option} NAME"
            )
        return layer
    if default in names:
        return default
    if len(names) == 1:
        return names[0]
    raise InputError(
        f"{path}: {len(names)} layers and none is {default!r}; layers: "
        f"{', '.join(names) or '(none)'}; pass {option} NAME"
    )


def _read_layer(
    path: PathLike, layer: str | None, role: str, option: str, default: str = DEFAULT_LAYER
) -> tuple[gpd.GeoDataFrame, str]:
    """A layer of a vector file and its name; a GeoParquet file is one layer, its stem."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    p = str(path)
    if Path(p).suffix.lower() == ".parquet":
        import geopandas as gpd

        name = Path(p).stem
        if layer is not None and layer != name:
            raise InputError(
                f"{p}: a GeoParquet file holds one layer ({name!r}), not {layer!r}; "
                f"leave out {option}"
            )
        try:
            frame = gpd.read_parquet(p)
        except (OSError, ValueError) as exc:
            raise InputError(f"{p}: cannot read the {role} GeoParquet file ({exc})") from None
    else:
        name = _pick_layer(p, layer, role, option, default)
        try:
            frame = pyogrio.read_dataframe(p, layer=name)
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise InputError(f"{p}: cannot read layer {name!r} ({exc})") from None
    logger.info("%s: layer %r, %d features", p, name, len(frame))
    return frame, name


def _align_crs(
    pred: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    pred_path: str,
    truth_path: str,
    extent: tuple[float, float, float, float] | None = None,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    if pred.crs is None and truth.crs is not None:
        logger.warning("%s has no CRS; assuming the truth's (%s)", pred_path, truth.crs)
        pred = pred.set_crs(truth.crs)
    elif truth.crs is None and pred.crs is not None:
        logger.warning("%s has no CRS; assuming the prediction's (%s)", truth_path, pred.crs)
        truth = truth.set_crs(pred.crs)
    elif pred.crs is not None and truth.crs is not None and pred.crs != truth.crs:
        logger.info("reprojecting %s from %s to %s", truth_path, truth.crs, pred.crs)
        truth = truth.to_crs(pred.crs)
    if extent is not None:  # the truth of one scene out of a file that covers many
        truth = truth.clip(extent, keep_geom_type=True)
        truth = truth[~truth.geometry.is_empty]
    if pred.crs is not None and pred.crs.is_geographic:
        utm = pred.estimate_utm_crs() if len(pred) else truth.estimate_utm_crs()
        logger.info("geographic CRS: matching in %s so that areas are in m²", utm.name)
        pred, truth = pred.to_crs(utm), truth.to_crs(utm)
    return pred, truth


def evaluate_vectors(
    pred_path: PathLike,
    truth_path: PathLike,
    *,
    layer: str | None = None,
    truth_layer: str | None = None,
    iou_threshold: float = 0.5,
    confidence_column: str | None = None,
    min_area: float = 0.0,
    extent: tuple[float, float, float, float] | None = None,
) -> ObjectMetrics:
    """Building precision, recall and F1 of a predicted polygon layer against a truth layer.

    Layers default to ``buildings`` when the file has one, else the file's only layer. The
    truth is reprojected to the prediction's CRS when they differ; when one side has no CRS
    it is assumed to be the other's (with a warning). In a geographic CRS both are
    projected to the local UTM zone so that IoU and ``min_area`` are metric.

    Args:
        pred_path: Predicted polygons (GeoPackage, GeoJSON, any OGR format).
        truth_path: Reference polygons.
        layer: Layer of ``pred_path``.
        truth_layer: Layer of ``truth_path``.
        iou_threshold: A pair matches when IoU is strictly greater.
        confidence_column: Prediction column to visit by, descending.
        min_area: Minimum area in CRS units² (m²): truth polygons with ``area < min_area``
            and proposals with ``area <= min_area`` are dropped (the SpaceNet rule).
        extent: ``(xmin, ymin, xmax, ymax)`` in the prediction's CRS: the truth is clipped
            to it (one scene of a truth file that covers many).

    Returns:
        Object metrics (:class:`geoseg.evaluate.objects.ObjectMetrics`).

    Raises:
        InputError: Unreadable files, a missing layer (the message lists the layers) or
            column, non-polygon geometries.
    """
    from geoseg.evaluate.objects import match_objects

    pred_s, truth_s = str(pred_path), str(truth_path)
    pred, _ = _read_layer(pred_s, layer, "prediction", "--layer")
    truth, _ = _read_layer(truth_s, truth_layer, "truth", "--truth-layer")
    pred, truth = _align_crs(pred, truth, pred_s, truth_s, extent)
    return match_objects(
        pred,
        truth,
        iou_threshold=iou_threshold,
        confidence_column=confidence_column,
        min_area_truth=min_area,
        min_area_proposal=min_area,
    )


# --------------------------------------------------------------------------- road lines

ROAD_LAYER = "road_centerlines"
"""The layer of centre-lines that ``geoseg vectorize --centerlines`` writes."""

_LINE_TYPES = {"LineString", "MultiLineString"}


def _road_lines(path: str, layer: str | None, role: str, option: str) -> gpd.GeoDataFrame:
    """The non-empty line features of a layer (``road_centerlines`` or the only one)."""
    frame, name = _read_layer(path, layer, role, option, ROAD_LAYER)
    geoms = frame.geometry
    frame = frame[geoms.notna() & ~geoms.is_empty]
    bad = sorted(set(frame.geom_type) - _LINE_TYPES)
    if bad:
        raise InputError(
            f"{path}: layer {name!r} holds {', '.join(bad)} geometries; road metrics need "
            f"centre-lines (LineString), e.g. the {ROAD_LAYER} layer of "
            f"`geoseg vectorize --centerlines`; pass {option} NAME"
        )
    if frame.empty:
        logger.warning("%s: layer %r has no road lines", path, name)
    return frame


def _metres_per_unit(crs: pyproj.CRS | None) -> float:
    """Metres per unit of a projected CRS's first axis (1.0 when there is no CRS)."""
    axes = crs.axis_info if crs is not None else []
    return float(axes[0].unit_conversion_factor) if axes else 1.0


def evaluate_roads(
    pred_path: PathLike,
    truth_path: PathLike,
    *,
    layer: str | None = None,
    truth_layer: str | None = None,
    buffer: float = EvaluateOptions.road_buffer,
    snap: float = EvaluateOptions.road_snap,
    spacing: float = EvaluateOptions.road_spacing,
    max_pairs: int = EvaluateOptions.road_max_pairs,
    extent: tuple[float, float, float, float] | None = None,
) -> RoadMetrics:
    """APLS and buffer precision / recall of predicted road centre-lines against the truth.

    Layers default to ``road_centerlines`` (what ``geoseg vectorize --centerlines`` writes)
    when the file has one, else the file's only layer; empty geometries are skipped. The
    truth is reprojected to the prediction's CRS when they differ; when one side has no
    CRS it is assumed to be the other's (with a warning), and with no CRS at all the
    coordinates are taken as metres. In a geographic CRS both are projected to the local
    UTM zone; in a projected CRS with another unit (US feet) the distances are converted.
    An empty prediction scores 0; an empty truth leaves APLS and recall undefined (NaN).
    The metrics are those of :mod:`geoseg.evaluate.roads`.

    Args:
        pred_path: Predicted centre-lines (GeoPackage, GeoJSON, GeoParquet, any OGR format).
        truth_path: Reference centre-lines.
        layer: Layer of ``pred_path``.
        truth_layer: Layer of ``truth_path``.
        buffer: Precision / recall buffer, m.
        snap: APLS snap distance, m.
        spacing: APLS control point spacing, m.
        max_pairs: Most APLS routes scored per direction.
        extent: As in :func:`evaluate_vectors`: the truth is clipped to it.

    Returns:
        Road metrics (:class:`geoseg.evaluate.roads.RoadMetrics`).

    Raises:
        InputError: Unreadable files, a missing layer (the message lists the layers),
            geometries that are not lines.
    """
    from geoseg.evaluate.roads import score_roads

    pred_s, truth_s = str(pred_path), str(truth_path)
    pred = _road_lines(pred_s, layer, "prediction", "--layer")
    truth = _road_lines(truth_s, truth_layer, "truth", "--truth-layer")
    if len(pred) or len(truth):
        pred, truth = _align_crs(pred, truth, pred_s, truth_s, extent)
    if pred.crs is None and truth.crs is None:
        logger.warning("%s and %s have no CRS: coordinates are taken as metres", pred_s, truth_s)
    return score_roads(
        pred.geometry.values,
        truth.geometry.values,
        buffer=buffer,
        snap=snap,
        spacing=spacing,
        max_pairs=max_pairs,
        unit=_metres_per_unit(pred.crs),
    )
