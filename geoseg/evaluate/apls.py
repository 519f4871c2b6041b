"""APLS (Average Path Length Similarity, SpaceNet 3) of two road graphs, one direction.

Pure geometry and graph math (shapely, numpy, scipy's sparse shortest paths); no file I/O.
Coordinates and distances are in the units of one projected CRS.

**Graph.** :func:`road_graph` nodes the lines (an intersection becomes a node), dissolves
overlaps and merges chains through degree-2 joints, so a graph does not depend on how its
roads were cut into features: nodes are the line ends and junctions, one edge per line
between them, weighted by its length.

**One direction** (:func:`apls_direction`), source graph ``S`` onto target graph ``T``
(Van Etten et al., SpaceNet 3):

1. Control points of ``S``: its nodes plus points along each edge: none on an edge shorter
   than 0.75 x ``spacing``, its middle up to ``spacing``, else ``ceil(L / spacing) - 1``
   evenly spaced points.
2. Each control point is snapped onto the nearest point of ``T`` within ``snap`` (a node is
   inserted there, splitting the edge); one farther away has no image.
3. For each ordered pair of control points ``(a, b)`` joined in ``S`` by a route of length
   ``L`` (shortest path): when ``a`` has no image, the route counts 1; else, when
   ``L >= min_path_length``, it counts ``min(1, |L - L'| / L)``, ``L'`` the shortest route
   between the images of ``a`` and ``b`` in ``T`` (1 when either has no image or they are
   not joined).
4. The direction scores ``1 - mean`` of these counts (0 when no route counts).

These are the definitions of CosmiQ's reference implementation (the ``apls`` package:
``make_graphs`` with its default ``allow_renaming=False`` and the curvature filter off, then
``compute_apls_metric``), which the test suite checks geoseg against on the same graphs.
Bounded work: a direction scores at most ``max_pairs`` routes; a bigger graph scores every
route from a sample of its control points (a fixed-seed draw, so the result is repeatable).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from shapely.geometry import LineString, MultiLineString
from shapely.geometry.base import BaseGeometry

from geoseg.errors import InputError

__all__ = [
    "MIN_PATH_LENGTH_M",
    "SAMPLE_SEED",
    "DirectionScore",
    "RoadGraph",
    "apls_direction",
    "road_graph",
]

MIN_PATH_LENGTH_M = 10.0
"""Routes shorter than this (m) in the source graph are not scored (the reference's default)."""

SAMPLE_SEED = 0
"""Seed of the draw of control points when a graph has more routes than ``max_pairs``."""

_CHUNK_CELLS = 2_000_000
"""Distance-matrix cells computed at once (16 MB of float64)."""

_Floats = npt.NDArray[np.float64]
_Ints = npt.NDArray[np.int64]


# --------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class RoadGraph:
    """An undirected road graph in CRS units.

    Attributes:
        nodes: (N, 2) node coordinates: line ends and junctions.
        edges: (E, 2) node indices ``(u, v)`` of each edge (``u == v`` for a ring).
        geometries: The E edge lines, each running from its ``u`` to its ``v``.
    """

    nodes: _Floats
    edges: _Ints
    geometries: tuple[LineString, ...]

    @property
    def lengths(self) -> _Floats:
        """Edge lengths (CRS units)."""
        return np.asarray(shapely.length(np.asarray(self.geometries, dtype=object)), float)

    @property
    def length(self) -> float:
        """Total length of the network (CRS units)."""
        return float(self.lengths.sum()) if self.geometries else 0.0


def _line_parts(lines: Iterable[BaseGeometry | None]) -> list[LineString]:
    parts: list[LineString] = []
    for geom in lines:
        if geom is None or geom.is_empty:
            continue
        if not isinstance(geom, LineString | MultiLineString):
            raise InputError(
                f"a {geom.geom_type} is not a road line; pass LineStrings (centre-lines)"
            )
        for part in shapely.get_parts(shapely.force_2d(geom)):
            if part.length > 0:
                parts.append(part)
    return parts


def road_graph(lines: Iterable[BaseGeometry | None]) -> RoadGraph:
    """The road graph of some lines: nodes at ends and junctions, edges weighted by length.

    Lines are noded (crossings become junctions) and dissolved (an overlap counts once);
    chains through degree-2 joints become one edge. Empty and zero-length lines are dropped.

    Args:
        lines: LineStrings or MultiLineStrings (None and empty ones are skipped).

    Returns:
        The graph.

    Raises:
        InputError: A geometry is not a line.
    """
    parts = _line_parts(lines)
    if not parts:
        return RoadGraph(np.zeros((0, 2)), np.zeros((0, 2), np.int64), ())
    merged = shapely.line_merge(shapely.unary_union(np.asarray(parts, dtype=object)))
    pieces = [p for p in shapely.get_parts(merged) if p.length > 0]
    index: dict[tuple[float, float], int] = {}
    edges = np.zeros((len(pieces), 2), np.int64)
    for i, piece in enumerate(pieces):
        coords = piece.coords
        for j, xy in enumerate((coords[0], coords[-1])):
            key = (float(xy[0]), float(xy[1]))
            edges[i, j] = index.setdefault(key, len(index))
    nodes = np.array(list(index), dtype=np.float64).reshape(-1, 2)
    return RoadGraph(nodes, edges, tuple(pieces))


# --------------------------------------------------------------------------- splitting


@dataclass(frozen=True)
class _Split:
    """A graph with nodes inserted along its edges, as weighted node pairs."""

    n_nodes: int
    a: _Ints
    b: _Ints
    w: _Floats
    inserted: _Ints  # the node of each inserted point, in the order given

    def matrix(self) -> csr_matrix:
        """Sparse adjacency (shortest parallel edge kept; loops dropped)."""
        keep = self.a != self.b
        lo = np.minimum(self.a, self.b)[keep]
        hi = np.maximum(self.a, self.b)[keep]
        w = self.w[keep]
        order = np.lexsort((w, hi, lo))
        lo, hi, w = lo[order], hi[order], w[order]
        first = np.ones(len(lo), bool)
        first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
        lo, hi, w = lo[first], hi[first], w[first]
        return csr_matrix((w, (lo, hi)), shape=(self.n_nodes, self.n_nodes))


def _split(graph: RoadGraph, edge: _Ints, pos: _Floats) -> _Split:
    """Insert a node at distance ``pos[i]`` along edge ``edge[i]`` for every ``i``.

    A point at an end of its edge is that end's node; points at the same place on the same
    edge share one node.
    """
    lengths = graph.lengths
    n = len(graph.nodes)
    inserted = np.full(len(edge), -1, np.int64)
    a: list[int] = []
    b: list[int] = []
    w: list[float] = []
    by_edge: dict[int, list[int]] = {}
    for i, e in enumerate(edge.tolist()):
        by_edge.setdefault(e, []).append(i)
    for e, (u, v) in enumerate(graph.edges.tolist()):
        length = float(lengths[e])
        idx = by_edge.get(e)
        if not idx:
            a.append(u)
            b.append(v)
            w.append(length)
            continue
        p = pos[idx]
        at_u, at_v = p <= 0.0, p >= length
        inner = ~(at_u | at_v)
        inserted[np.asarray(idx)[at_u]] = u
        inserted[np.asarray(idx)[at_v]] = v
        stops, inverse = np.unique(p[inner], return_inverse=True)
        ids = np.arange(n, n + len(stops))
        n += len(stops)
        inserted[np.asarray(idx)[inner]] = ids[inverse]
        chain = [u, *ids.tolist(), v]
        marks = [0.0, *stops.tolist(), length]
        for k in range(len(chain) - 1):
            a.append(chain[k])
            b.append(chain[k + 1])
            w.append(marks[k + 1] - marks[k])
    return _Split(n, np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(w), inserted)


def _control_positions(graph: RoadGraph, spacing: float) -> tuple[_Ints, _Floats]:
    """The points along the edges at which APLS adds control points (edge, distance)."""
    edge: list[int] = []
    pos: list[float] = []
    for e, length in enumerate(graph.lengths.tolist()):
        if length < 0.75 * spacing:
            continue
        if length <= spacing:
            stops = [0.5 * length]
        else:
            parts = math.ceil(length / spacing)
            stops = np.linspace(0.0, length, parts + 1)[1:-1].tolist()
        edge.extend([e] * len(stops))
        pos.extend(stops)
    return np.asarray(edge, np.int64), np.asarray(pos, np.float64)


def _snap(graph: RoadGraph, points: _Floats, snap: float) -> tuple[_Ints, _Ints, _Floats]:
    """Nearest edge and distance along it for each point within ``snap`` of ``graph``.

    Returns:
        The indices of the points that snapped, their edges and their positions.
    """
    if not graph.geometries or not len(points):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0)
    geoms = np.asarray(graph.geometries, dtype=object)
    tree = shapely.STRtree(geoms)
    pts = shapely.points(points)
    (pi, ei), _ = tree.query_nearest(pts, max_distance=snap, return_distance=True, all_matches=True)
    # Ties (a point as near to two edges): the lowest edge index, as the reference does.
    order = np.lexsort((ei, pi))
    pi, ei = pi[order], ei[order]
    first = np.ones(len(pi), bool)
    first[1:] = pi[1:] != pi[:-1]
    pi, ei = pi[first].astype(np.int64), ei[first].astype(np.int64)
    pos = np.asarray(shapely.line_locate_point(geoms[ei], pts[pi]), np.float64)
    return pi, ei, pos


# --------------------------------------------------------------------------- APLS


@dataclass(frozen=True)
class DirectionScore:
    """APLS in one direction: the control points of a source graph snapped onto a target.

    Attributes:
        score: ``1 - mean`` route difference (0 when no route counts).
        routes: Routes scored.
        control_points: Control points of the source graph (nodes and points along edges).
        snapped: Control points that found the target within the snap distance.
        sources: Control points whose routes were scored (all, or a sample for big graphs).
    """

    score: float
    routes: int
    control_points: int
    snapped: int
    sources: int

    @property
    def sampled(self) -> bool:
        """Whether only a sample of the control points' routes was scored."""
        return self.sources < self.control_points

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form."""
        return {
            "score": self.score,
            "routes": self.routes,
            "control_points": self.control_points,
            "snapped": self.snapped,
            "sources": self.sources,
            "sampled": self.sampled,
        }


def _route_sources(n: int, max_pairs: int) -> _Ints:
    if n * (n - 1) <= max_pairs:
        return np.arange(n, dtype=np.int64)
    k = max(1, max_pairs // (n - 1))
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def apls_direction(
    source: RoadGraph,
    target: RoadGraph,
    *,
    spacing: float,
    snap: float,
    min_path_length: float,
    max_pairs: int,
) -> DirectionScore:
    """APLS of ``source`` snapped onto ``target`` (one direction; see the module notes).

    Args:
        source: The graph whose routes are scored.
        target: The graph they are looked up in.
        spacing: Control point spacing along edges (CRS units).
        snap: Largest distance at which a control point finds the target (CRS units).
        min_path_length: Routes shorter than this in ``source`` are not scored (> 0).
        max_pairs: Most routes scored (a fixed-seed sample of sources beyond).

    Returns:
        The direction's score and counts.
    """
    if spacing <= 0 or min_path_length <= 0 or snap < 0 or max_pairs < 1:
        raise InputError(
            f"spacing={spacing}, min_path_length={min_path_length} must be > 0, "
            f"snap={snap} >= 0 and max_pairs={max_pairs} >= 1"
        )
    c_edge, c_pos = _control_positions(source, spacing)
    src = _split(source, c_edge, c_pos)
    n = src.n_nodes
    if n == 0:
        return DirectionScore(0.0, 0, 0, 0, 0)
    geoms = np.asarray(source.geometries, dtype=object)
    along = shapely.get_coordinates(shapely.line_interpolate_point(geoms[c_edge], c_pos))
    coords = np.zeros((n, 2))
    coords[: len(source.nodes)] = source.nodes
    coords[src.inserted] = along.reshape(-1, 2)
    hit, hit_edge, hit_pos = _snap(target, coords, snap)
    tgt = _split(target, hit_edge, hit_pos)
    image = np.full(n, -1, np.int64)
    image[hit] = tgt.inserted
    sources = _route_sources(n, max_pairs)
    src_m, tgt_m = src.matrix(), tgt.matrix()
    total, routes = 0.0, 0
    step = max(1, _CHUNK_CELLS // max(n, tgt.n_nodes, 1))
    for k in range(0, len(sources), step):
        rows = sources[k : k + step]
        d = np.atleast_2d(dijkstra(src_m, directed=False, indices=rows))
        joined = np.isfinite(d)
        joined[np.arange(len(rows)), rows] = False
        lost = image[rows] < 0
        # A control point with no image loses every route from it (the reference's rule).
        routes += int(joined[lost].sum())
        total += float(joined[lost].sum())
        kept = ~lost
        if not kept.any():
            continue
        d, joined = d[kept], joined[kept]
        joined &= d >= min_path_length
        starts, back = np.unique(image[rows[kept]], return_inverse=True)
        dt = np.atleast_2d(dijkstra(tgt_m, directed=False, indices=starts))[back]
        other = np.full(d.shape, np.inf)
        has = image >= 0
        other[:, has] = dt[:, image[has]]
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = np.where(np.isfinite(other), np.abs(d - other) / d, 1.0)
        diff = np.minimum(diff, 1.0)
        routes += int(joined.sum())
        total += float(diff[joined].sum())
    score = 1.0 - total / routes if routes else 0.0
    return DirectionScore(score, routes, n, len(hit), len(sources))
