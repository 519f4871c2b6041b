"""Topology-preserving cleaning of raster polygons in pixel coordinates (pure geometry).

Polygons from a class raster form a coverage: neighbouring polygons share their borders
exactly. The borders are cut into *arcs* at *nodes*, the pixel corners where three or more
regions meet (:func:`node_mask`). An arc is simplified by a pure function of its own
vertices, after putting it in a canonical direction, so that the two polygons on either
side of an arc compute the same simplified arc even when they are cleaned at different
times, in different threads or from different block layouts. Shared borders therefore stay
shared, without holding the whole coverage in memory (what ``shapely.coverage_simplify``
would need).

With tolerance 0 the same code only drops collinear vertices (keeping nodes), which gives
every polygon one canonical vertex list whatever the block size.
"""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon

from geoseg.vectorize._outlines import polygons_from_rings

__all__ = ["canonical_polygon", "drop_collinear", "node_mask"]


def node_mask(values: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
    """Pixel corners where three or more region borders meet.

    Args:
        values: Class values of a block with a one-pixel halo on every side, (h+2, w+2);
            use a value no class has (e.g. -1) outside the raster.

    Returns:
        Boolean (h+1, w+1): corner (i, j) lies between core pixel rows i-1, i and columns
        j-1, j. A corner is a node when at least three of its four half-edges separate
        different values (T-junctions, four-way junctions, diagonal touches).
    """
    v = values.astype(np.int32, copy=False)
    a = v[:-1, :-1]
    b = v[:-1, 1:]
    c = v[1:, :-1]
    d = v[1:, 1:]
    deg = (
        (a != b).astype(np.uint8)
        + (c != d).astype(np.uint8)
        + (a != c).astype(np.uint8)
        + (b != d).astype(np.uint8)
    )
    return deg >= 3


def _densify(ring: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | None:
    """Integer ring vertices (closed) to unit steps (open); None if not axis-parallel."""
    pts = np.rint(ring).astype(np.int64)
    if not np.array_equal(pts, ring):
        return None
    d = np.diff(pts, axis=0)
    if np.any((d[:, 0] != 0) & (d[:, 1] != 0)):
        return None
    lengths = np.abs(d).sum(axis=1)
    keep = lengths > 0
    d, lengths, starts = d[keep], lengths[keep], pts[:-1][keep]
    if len(lengths) == 0:
        return None
    step = np.sign(d)
    reps = np.repeat(np.arange(len(lengths)), lengths)
    k = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[reps] + step[reps] * k[:, None]


def _drop_collinear(chain: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Keep the endpoints and the vertices where the direction changes."""
    if len(chain) <= 2:
        return chain
    d = np.diff(chain, axis=0)
    turn = np.any(d[1:] != d[:-1], axis=1)
    keep = np.concatenate([[True], turn, [True]])
    return chain[keep]


def _canonical_chains(
    pts: npt.NDArray[np.int64], is_node: npt.NDArray[np.bool_]
) -> tuple[list[npt.NDArray[np.int64]], list[bool]]:
    """Split an open unit-step ring into arcs in canonical direction.

    Returns the arcs (each closed at its end node) and whether each was reversed.
    """
    n = len(pts)
    node_idx = np.flatnonzero(is_node)
    chains: list[npt.NDArray[np.int64]] = []
    flipped: list[bool] = []
    if len(node_idx) == 0:
        # A closed arc with no node: start at the smallest vertex, turn counter-clockwise.
        start = int(np.lexsort((pts[:, 0], pts[:, 1]))[0])
        ring = np.roll(pts, -start, axis=0)
        x, y = ring[:, 0], ring[:, 1]
        area2 = int(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        rev = area2 < 0
        if rev:
            ring = np.concatenate([ring[:1], ring[1:][::-1]])
        chains.append(np.concatenate([ring, ring[:1]]))
        flipped.append(rev)
        return chains, flipped
    ring = np.roll(pts, -int(node_idx[0]), axis=0)
    rel = np.append((node_idx - node_idx[0]) % n, n)
    ring = np.concatenate([ring, ring[:1]])
    for s, e in itertools.pairwise(rel):
        c = ring[s : e + 1]
        a, b = tuple(c[0][::-1]), tuple(c[-1][::-1])
        if a == b:
            rev = tuple(c[1][::-1]) > tuple(c[-2][::-1])
        else:
            rev = a > b
        chains.append(c[::-1] if rev else c)
        flipped.append(bool(rev))
    return chains, flipped


def _simplify_chains(
    chains: list[npt.NDArray[np.int64]], tolerance: float
) -> list[npt.NDArray[np.float64]]:
    reduced = [_drop_collinear(c) for c in chains]
    if tolerance <= 0:
        return [c.astype(np.float64) for c in reduced]
    lines = shapely.linestrings(
        np.concatenate(reduced).astype(np.float64),
        indices=np.repeat(np.arange(len(reduced)), [len(c) for c in reduced]),
    )
    simple = shapely.simplify(lines, tolerance, preserve_topology=False)
    coords, idx = shapely.get_coordinates(simple, return_index=True)
    splits = np.flatnonzero(np.diff(idx)) + 1
    return list(np.split(coords, splits))


def _ring(
    ring: npt.NDArray[np.float64],
    nodes: npt.NDArray[np.int64],
    stride: int,
    tolerance: float,
) -> npt.NDArray[np.float64] | None:
    """One ring through the arc machinery; None if it collapses."""
    pts = _densify(ring)
    if pts is None:
        return ring
    keys = pts[:, 1] * stride + pts[:, 0]
    is_node = np.isin(keys, nodes, assume_unique=False)
    chains, flipped = _canonical_chains(pts, is_node)
    simple = _simplify_chains(chains, tolerance)
    parts = [s[::-1] if f else s for s, f in zip(simple, flipped, strict=False)]
    out = np.concatenate([parts[0]] + [p[1:] for p in parts[1:]])
    if len(out) < 4 or len(np.unique(out[:-1], axis=0)) < 3:
        return None
    return out


def canonical_polygon(
    geom: Polygon,
    nodes: npt.NDArray[np.int64],
    *,
    stride: int,
    tolerance: float = 0.0,
    hole_area: float = 0.0,
) -> list[Polygon]:
    """Clean one raster polygon (pixel coordinates) without breaking shared borders.

    Args:
        geom: A polygon whose vertices are integer pixel corners (as from
            ``rasterio.features.shapes`` or a union of such polygons).
        nodes: Keys ``row * stride + col`` of the node corners on its border.
        stride: Key stride, the raster width + 1.
        tolerance: Douglas-Peucker tolerance in pixels applied per arc (0: only drop
            collinear vertices).
        hole_area: Holes smaller than this (pixels²) are filled.

    Returns:
        Valid polygons (usually one; none when the polygon collapses).
    """
    holes = [
        np.asarray(r.coords)
        for r in geom.interiors
        if hole_area <= 0 or Polygon(r).area >= hole_area
    ]
    shell = _ring(np.asarray(geom.exterior.coords), nodes, stride, tolerance)
    if shell is None:
        return []
    kept = [h for h in (_ring(r, nodes, stride, tolerance) for r in holes) if h is not None]
    poly = Polygon(shell, kept)
    if poly.is_valid and not poly.is_empty:
        return [poly]
    return polygon_parts(shapely.make_valid(poly))


def polygon_parts(geom: shapely.Geometry) -> list[Polygon]:
    """The non-empty polygons in any geometry (collections from ``make_valid`` included)."""
    if isinstance(geom, Polygon):
        return [] if geom.is_empty or geom.area <= 0 else [geom]
    if isinstance(geom, MultiPolygon):
        return [p for p in geom.geoms if p.area > 0]
    parts = shapely.get_parts(geom)
    out: list[Polygon] = []
    for p in parts:
        if isinstance(p, Polygon | MultiPolygon) or shapely.get_type_id(p) == 7:
            out.extend(polygon_parts(p))
    return out


def drop_collinear(polygons: npt.NDArray[np.object_]) -> npt.NDArray[np.object_]:
    """Polygons without the vertices where their rings run straight on (vectorized).

    For valid polygons with integer vertices (pixel outlines and unions of them) this gives
    the vertices of ``shapely.simplify(g, 0)`` (ring starts included) without its repair
    step, at a fraction of its cost; a valid polygon stays valid.

    Args:
        polygons: Polygons (no other geometry type).

    Returns:
        The polygons, each ring keeping only its turning vertices.
    """
    if len(polygons) == 0:
        return polygons
    _, coords, (ring_off, poly_off) = shapely.to_ragged_array(polygons)
    size = np.diff(ring_off) - 1  # open ring lengths
    is_open = np.ones(len(coords), dtype=bool)
    is_open[ring_off[1:] - 1] = False
    pts = coords[is_open]
    ring = np.repeat(np.arange(len(size)), size)
    first = np.cumsum(size) - size
    i = np.arange(len(pts))
    pos = i - first[ring]
    prev = np.where(pos == 0, i + size[ring] - 1, i - 1)
    nxt = np.where(pos == size[ring] - 1, i - size[ring] + 1, i + 1)
    d_in, d_out = pts - pts[prev], pts[nxt] - pts
    keep = d_in[:, 0] * d_out[:, 1] != d_in[:, 1] * d_out[:, 0]
    return polygons_from_rings(
        pts[keep], np.bincount(ring[keep], minlength=len(size)), poly_off[:-1]
    )
