"""Finishing final pieces into features: clean, regularize, measure, map coordinates.

A *piece* (:class:`geoseg.vectorize._polygonize.Piece`) is one polygon of one class in pixel
coordinates, complete once no block border can join it to another. :func:`finish` cleans a
list of pieces (:mod:`._clean`: hole filling, arc-wise simplification) and
:func:`regularize_batch` gives buildings rectilinear outlines (:mod:`._regularize`); both
return :data:`Batch` values (map-coordinate WKB and attributes, per layer) ready for
:class:`geoseg.vectorize._write.FeatureSink`. Both are pure functions of their arguments,
so they run in worker processes. :class:`Regularizer` holds buildings back until all their
neighbours are known.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import LineString, Polygon

from geoseg.vectorize._clean import canonical_polygon, polygon_parts
from geoseg.vectorize._polygonize import BorderMerger, Piece

__all__ = [
    "Batch",
    "FeatureContext",
    "LayerTarget",
    "Regularizer",
    "finish",
    "measure",
    "regularize_batch",
    "to_map",
]


@dataclass(frozen=True)
class LayerTarget:
    """One requested output layer.

    Attributes:
        layer: Layer name (``buildings``, ``roads`` or the class name).
        cls: Class index in the schema.
        name: Class name (the ``class`` attribute of its features).
        colour: Class colour (the layer's default QGIS style).
    """

    layer: str
    cls: int
    name: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class FeatureContext:
    """Everything the per-feature finishing step needs (immutable, shared by threads)."""

    transform: Affine
    stride: int
    geographic: bool
    unit: float  # CRS linear unit in metres (projected)
    tol_px: float
    hole_px: float
    min_area: dict[int, float]  # per class, m²: polygons under it are dropped
    has_prob: bool
    targets: dict[int, LayerTarget]
    size: tuple[int, int] = (0, 0)  # the raster's (width, height): its extent in pixels


@functools.cache
def _wgs84() -> Any:
    from pyproj import Geod

    return Geod(ellps="WGS84")


def measure(geom: shapely.Geometry, ctx: FeatureContext) -> tuple[float, float]:
    """(area m², perimeter or length m) of a map-coordinate geometry."""
    if ctx.geographic:
        geod = _wgs84()
        if isinstance(geom, LineString):
            return 0.0, float(geod.geometry_length(geom))
        area, perim = geod.geometry_area_perimeter(geom)
        return abs(float(area)), float(perim)
    return float(geom.area) * ctx.unit**2, float(geom.length) * ctx.unit


def to_map(geom: shapely.Geometry, t: Affine) -> shapely.Geometry:
    """Pixel-coordinate geometries (one or an array) to map coordinates under ``t``."""

    def f(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)

    return shapely.transform(geom, f)


Batch = tuple[str, np.ndarray, dict[str, np.ndarray]]
"""Features of one layer: (layer, WKB of map geometries, attribute arrays)."""


def _features(pieces: list[Piece], parts: list[list[Polygon]], ctx: FeatureContext) -> list[Batch]:
    """Pixel-coordinate parts of each piece -> map geometries with attributes, per layer."""
    owner = np.repeat(np.arange(len(pieces)), [len(p) for p in parts])
    flat = [g for ps in parts for g in ps]
    if not flat:
        return []
    px_geoms = shapely.normalize(np.asarray(flat, dtype=object))
    geoms = to_map(px_geoms, ctx.transform)
    if ctx.geographic:
        measured = np.array([measure(g, ctx) for g in geoms]).reshape(-1, 2)
        area, perim = measured[:, 0], measured[:, 1]
    else:
        # Area from pixel coordinates: exact (no loss to large map offsets).
        det = abs(ctx.transform.a * ctx.transform.e - ctx.transform.b * ctx.transform.d)
        area = shapely.area(px_geoms) * det * ctx.unit**2
        perim = shapely.length(geoms) * ctx.unit
    cls = np.array([p.cls for p in pieces], dtype=np.int64)[owner]
    floor = np.zeros(256)  # class values are uint8
    for k, v in ctx.min_area.items():
        floor[k] = v
    keep = (area > 0) & (area >= floor[cls])
    mean_prob = (
        np.array([p.prob_sum / (255.0 * p.count) if p.count else np.nan for p in pieces])[owner]
        if ctx.has_prob
        else None
    )
    out: list[Batch] = []
    for k, target in ctx.targets.items():
        sel = keep & (cls == k)
        if not sel.any():
            continue
        values: dict[str, np.ndarray] = {
            "class": np.full(int(sel.sum()), target.name, dtype=object),
            "area_m2": area[sel],
            "perimeter_m": perim[sel],
        }
        if mean_prob is not None:
            values["mean_prob"] = mean_prob[sel]
        out.append((target.layer, shapely.to_wkb(geoms[sel], output_dimension=2), values))
    return out


def _clean_piece(piece: Piece, ctx: FeatureContext) -> list[Polygon]:
    parts: list[Polygon] = []
    for poly in polygon_parts(piece.geom):
        parts.extend(
            canonical_polygon(
                poly, piece.nodes, stride=ctx.stride, tolerance=ctx.tol_px, hole_area=ctx.hole_px
            )
        )
    return parts


def finish(pieces: list[Piece], ctx: FeatureContext) -> list[Batch]:
    """Clean final pieces (hole filling, simplification) into feature batches per layer."""
    if ctx.tol_px > 0:
        return _features(pieces, [_clean_piece(p, ctx) for p in pieces], ctx)
    # No simplification: only drop collinear vertices (vectorized); the same canonical
    # vertex list as the arc machinery with tolerance 0, for a fraction of the cost.
    geoms = [_fill_holes(p.geom, ctx.hole_px) if ctx.hole_px > 0 else p.geom for p in pieces]
    arr = shapely.simplify(np.asarray(geoms, dtype=object), 0.0, preserve_topology=False)
    valid = shapely.is_valid(arr)
    parts = [
        polygon_parts(g if ok else shapely.make_valid(g)) for g, ok in zip(arr, valid, strict=False)
    ]
    return _features(pieces, parts, ctx)


def _fill_holes(poly: shapely.Geometry, hole_px: float) -> shapely.Geometry:
    if hole_px <= 0:
        return poly
    if not isinstance(poly, Polygon):
        return shapely.multipolygons([_fill_holes(p, hole_px) for p in polygon_parts(poly)])
    if not poly.interiors:
        return poly
    return Polygon(poly.exterior, [r for r in poly.interiors if Polygon(r).area >= hole_px])


def regularize_batch(
    jobs: list[tuple[Piece, list[Polygon]]], ctx: FeatureContext, margin: float
) -> list[Batch]:
    """Regularize buildings, each clipped to its territory, into feature batches.

    Args:
        jobs: Buildings with their neighbours, from :meth:`Regularizer.ready`.
        ctx: The finishing context.
        margin: How far (pixels) an outline may move.

    Returns:
        Feature batches per layer.
    """
    from geoseg.vectorize._regularize import clip_to_territory, regularize_building

    extent = shapely.box(0, 0, *ctx.size)
    all_parts: list[list[Polygon]] = []
    for piece, neighbours in jobs:
        parts: list[Polygon] = []
        for poly in polygon_parts(piece.geom):
            filled = _fill_holes(poly, ctx.hole_px)
            outline, _ = regularize_building(filled, extent)
            parts.extend(clip_to_territory(outline, poly, neighbours, margin))
        all_parts.append(parts)
    return _features([p for p, _ in jobs], all_parts, ctx)


class Regularizer:
    """Holds final buildings until every building within reach of them is known.

    A building is regularized once the processed rows extend ``2 * margin`` below it;
    its neighbours (for :func:`clip_to_territory`) are the final buildings kept in a
    window plus the pieces still pending at the border.
    """

    def __init__(self, cls: int, margin: float) -> None:
        self.cls = cls
        self.margin = margin
        self.queue: list[Piece] = []
        self.window: list[tuple[frozenset[int], Polygon]] = []

    def add(self, piece: Piece) -> None:
        self.queue.append(piece)
        ids = frozenset(piece.ids) if piece.ids else frozenset({id(piece)})
        for poly in polygon_parts(piece.geom):
            self.window.append((ids, poly))

    def ready(
        self, y_done: float, merger: BorderMerger, *, last: bool
    ) -> list[tuple[Piece, list[Polygon]]]:
        reach = 2 * self.margin
        ready = [p for p in self.queue if last or p.geom.bounds[3] + reach <= y_done]
        if not ready:
            return []
        self.queue = [p for p in self.queue if not (last or p.geom.bounds[3] + reach <= y_done)]
        pending = [
            (frozenset({root}), p.geom) for root, p in merger.pending_pieces() if p.cls == self.cls
        ]
        entries = self.window + [(ids, g) for ids, g in pending if isinstance(g, Polygon)]
        tree = shapely.STRtree([g for _, g in entries])
        jobs: list[tuple[Piece, list[Polygon]]] = []
        for p in ready:
            own = frozenset(p.ids) if p.ids else frozenset({id(p)})
            x0, y0, x1, y1 = p.geom.bounds
            box = shapely.box(x0 - reach, y0 - reach, x1 + reach, y1 + reach)
            hits = tree.query(box)
            nbrs = [entries[i][1] for i in hits if not (entries[i][0] & own)]
            jobs.append((p, nbrs))
        # Forget window entries nobody can reach any more.
        lows = [p.geom.bounds[1] for p in self.queue] + [g.bounds[1] for _, g in pending]
        floor = min([y_done, *lows]) - reach
        self.window = [(ids, g) for ids, g in self.window if g.bounds[3] >= floor]
        return jobs
