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
from geoseg.vectorize._instances import SplitSource, split_pieces
from geoseg.vectorize._outlines import Rings, normalize_rings, polygons_from_rings
from geoseg.vectorize._polygonize import BorderMerger, InnerPieces, Piece, merge_pieces

__all__ = [
    "Batch",
    "FeatureContext",
    "LayerTarget",
    "Regularizer",
    "finish",
    "finish_groups",
    "finish_inner",
    "measure",
    "regularize_attached",
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
    split: SplitSource | None = None  # how touching buildings are split into instances
    detail: float = 1.0  # raster pixels per pixel of true detail (a coarser model's map)


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
    flat = np.empty(len(owner), dtype=object)
    flat[:] = [g for ps in parts for g in ps]
    cls = np.array([p.cls for p in pieces], dtype=np.int64)[owner]
    mean_prob = (
        np.array([p.prob_sum / (255.0 * p.count) if p.count else np.nan for p in pieces])[owner]
        if ctx.has_prob
        else None
    )
    return _batches(flat, cls, mean_prob, ctx)


def _batches(
    flat: np.ndarray, cls: np.ndarray, mean_prob: np.ndarray | None, ctx: FeatureContext
) -> list[Batch]:
    """Pixel-coordinate polygons with their class (and mean probability) -> batches."""
    if not len(flat):
        return []
    px_geoms = shapely.normalize(flat)
    geoms = to_map(px_geoms, ctx.transform)
    area_px = None if ctx.geographic else shapely.area(px_geoms)
    return _map_batches(geoms, area_px, cls, mean_prob, ctx)


def _map_batches(
    geoms: np.ndarray,
    area_px: np.ndarray | None,
    cls: np.ndarray,
    mean_prob: np.ndarray | None,
    ctx: FeatureContext,
) -> list[Batch]:
    """Normalized map-coordinate polygons (with their area in pixels) -> batches."""
    if ctx.geographic or area_px is None:
        measured = np.array([measure(g, ctx) for g in geoms]).reshape(-1, 2)
        area, perim = measured[:, 0], measured[:, 1]
    else:
        # Area from pixel coordinates: exact (no loss to large map offsets).
        det = abs(ctx.transform.a * ctx.transform.e - ctx.transform.b * ctx.transform.d)
        area = area_px * det * ctx.unit**2
        perim = shapely.length(geoms) * ctx.unit
    floor = np.zeros(256)  # class values are uint8
    for k, v in ctx.min_area.items():
        floor[k] = v
    keep = (area > 0) & (area >= floor[cls])
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
    """Clean final pieces (hole filling, simplification) into feature batches per layer.

    Touching buildings are first split into instances when ``ctx.split`` says how; their
    shared walls get arc nodes, so they stay shared when simplified.
    """
    if ctx.split is not None:
        pieces = split_pieces(pieces, ctx.split, stride=ctx.stride)
    if ctx.tol_px > 0:
        return _features(pieces, [_clean_piece(p, ctx) for p in pieces], ctx)
    # No simplification: only drop collinear vertices (vectorized); the same canonical
    # vertex list as the arc machinery with tolerance 0, for a fraction of the cost. A
    # clean piece has none and is valid (filling holes keeps it so): it stays as it is.
    geoms = np.empty(len(pieces), dtype=object)
    geoms[:] = [p.geom for p in pieces]
    if ctx.hole_px > 0:
        holed = np.flatnonzero(
            (shapely.get_num_interior_rings(geoms) > 0) | (shapely.get_type_id(geoms) != 3)
        )
        geoms[holed] = [_fill_holes(g, ctx.hole_px) for g in geoms[holed]]
    clean = np.fromiter((p.clean for p in pieces), dtype=bool, count=len(pieces))
    parts: list[list[Polygon]] = [[g] for g in geoms.tolist()]
    other = np.flatnonzero(~clean)
    if len(other):
        arr = shapely.simplify(geoms[other], 0.0, preserve_topology=False)
        valid = shapely.is_valid(arr)
        for i, g, ok in zip(other.tolist(), arr.tolist(), valid.tolist(), strict=True):
            parts[i] = polygon_parts(g if ok else shapely.make_valid(g))
    return _features(pieces, parts, ctx)


def finish_inner(inner: InnerPieces, ctx: FeatureContext) -> list[Batch]:
    """:func:`finish` for clean pieces given as rings, without simplification or splitting.

    The same features as :func:`finish` of the same pieces as :class:`Piece` records, in
    whole-array steps: small holes dropped ring by ring, rings put in normalized order and
    moved to map coordinates before any geometry is built.
    """
    rings = inner.rings
    area_px = inner.count.astype(np.float64)
    if ctx.hole_px > 0:
        hole = np.ones(len(rings.size), dtype=bool)
        hole[rings.first] = False
        hole_area = np.abs(rings.ring_area()) / 2
        filled = hole & (hole_area < ctx.hole_px)
        if filled.any():
            owner = rings.ring_polygon()
            area_px += np.bincount(owner[filled], hole_area[filled], minlength=len(area_px))
            rings = _drop_rings(rings, filled)
    rings = normalize_rings(rings)
    t = ctx.transform
    x, y = rings.xy[:, 0], rings.xy[:, 1]  # as to_map
    xy = np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)
    geoms = polygons_from_rings(xy, rings.size, rings.first)
    mean_prob = None
    if ctx.has_prob:
        mean_prob = np.full(len(geoms), np.nan)
        np.divide(inner.prob_sum, 255.0 * inner.count, out=mean_prob, where=inner.count > 0)
    return _map_batches(geoms, area_px, inner.cls, mean_prob, ctx)


def _drop_rings(rings: Rings, drop: np.ndarray) -> Rings:
    """``rings`` without the (hole) rings where ``drop`` is true."""
    keep = ~drop
    is_first = np.zeros(len(rings.size), dtype=bool)
    is_first[rings.first] = True
    return Rings(
        xy=rings.xy[np.repeat(keep, rings.size)],
        size=rings.size[keep],
        first=np.flatnonzero(is_first[keep]),
        labels=rings.labels,
    )


def finish_groups(groups: list[list[Piece]], ctx: FeatureContext) -> list[Batch]:
    """Merge each group of pieces joined across block borders, then :func:`finish` them.

    Run where the finishing runs (a worker process), so that the parent only joins ids.
    """
    return finish([merge_pieces(g) for g in groups], ctx)


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
    pieces: list[Piece] = []
    all_parts: list[list[Polygon]] = []
    for piece, neighbours in jobs:
        members = [piece]
        if ctx.split is not None:
            members = split_pieces([piece], ctx.split, stride=ctx.stride)
        if len(members) > 1:  # attached buildings: one outline, cut at shared walls
            pieces.extend(members)
            all_parts.extend(regularize_attached(members, piece, neighbours, extent, ctx, margin))
            continue
        parts: list[Polygon] = []
        for poly in polygon_parts(piece.geom):
            filled = _fill_holes(poly, ctx.hole_px)
            outline, _ = regularize_building(filled, extent, detail=ctx.detail)
            parts.extend(clip_to_territory(outline, poly, neighbours, margin))
        pieces.append(piece)
        all_parts.append(parts)
    return _features(pieces, all_parts, ctx)


def regularize_attached(
    members: list[Piece],
    parent: Piece,
    neighbours: list[Polygon],
    extent: Polygon,
    ctx: FeatureContext,
    margin: float,
) -> list[list[Polygon]]:
    """Outlines of attached buildings (the parts of ``parent``) that keep their shared walls.

    The group is regularized as one (:func:`~geoseg.vectorize._walls.regularize_group`) and
    kept off other buildings as one; each member's outline is its share of the result.
    """
    from geoseg.vectorize._regularize import clip_to_territory
    from geoseg.vectorize._walls import regularize_group

    whole = polygon_parts(parent.geom)
    if len(whole) != 1 or any(len(polygon_parts(m.geom)) != 1 for m in members):
        return [polygon_parts(m.geom) for m in members]
    filled = [_fill_holes(polygon_parts(m.geom)[0], ctx.hole_px) for m in members]
    outlines, regular = regularize_group(filled, extent, detail=ctx.detail)
    if not regular:
        return [[o] for o in outlines]
    kept = clip_to_territory(shapely.union_all(outlines), whole[0], neighbours, margin)
    territory = shapely.union_all(kept)
    return [polygon_parts(shapely.intersection(o, territory)) for o in outlines]


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
