"""Pixel outlines of labelled components as polygons, traced with whole-array operations.

The polygons are those of ``rasterio.features.shapes(labels, connectivity=4)`` (GDAL's
polygonizer), vertex for vertex and ring for ring: vertices only where the outline turns,
each ring starting at its first corner in scan order, shells running down first and holes
right first, holes in scan order. Where a component touches itself at a pixel corner (two
of its pixels meet diagonally), its rings keep the pixels that are *not* in it apart, as
GDAL does: a hole that touches the shell or another hole at a corner is a ring of its own,
so every ring is simple and every polygon valid.

How: a pixel corner is a vertex of a label when the label holds 1 or 3 of the 4 pixels
around it, or 2 diagonal ones (then the corner is passed twice). Each pass joins one
horizontal and one vertical outline edge. Along a grid line, the passes of one label pair
up in order (an edge interval starts at one and ends at the next), which links every pass
to its horizontal and its vertical neighbour; following them with the label on a fixed
side gives each ring as a cycle, ordered in C (:func:`scipy.sparse.csgraph.depth_first_order`
along one chain through all rings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
from scipy import sparse
from scipy.sparse import csgraph

__all__ = ["Rings", "normalize_rings", "polygons_from_rings", "trace_outlines", "trace_rings"]

# The four pixels around a corner: a (up-left), b (up-right), c (down-left), d (down-right).
_RIGHT = np.array([False, True, False, True])  # the pass around q runs right (else left)
_DOWN = np.array([False, False, True, True])  # ... and down (else up)
_AD = np.array([True, False, False, True])  # a and d turn the other way than b and c


def _passes(
    labels: npt.NDArray[np.int32],
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int32],
    npt.NDArray[np.int64],
    npt.NDArray[np.bool_],
]:
    """Every pass of an outline through a pixel corner, in corner scan order.

    Returns:
        Per pass: its corner row and column, its label, the quadrant it turns around
        (0..3 = a, b, c, d) and whether it leaves the corner along the vertical edge
        (following the outline with the label on a fixed side).
    """
    h, w = labels.shape
    pad = np.zeros((h + 2, w + 2), dtype=np.int32)
    pad[1:-1, 1:-1] = labels
    # Corners inside a region or on a straight edge are no vertex of anyone.
    across = pad[:, :-1] == pad[:, 1:]  # a == b (rows :-1), c == d (rows 1:)
    down = pad[:-1, :] == pad[1:, :]  # a == c (columns :-1), b == d (columns 1:)
    turn = across[:-1] & across[1:]
    turn |= down[:, :-1] & down[:, 1:]
    np.logical_not(turn, out=turn)
    corner = np.flatnonzero(turn)
    ci, cj = np.divmod(corner, w + 1)
    flat = pad.ravel()
    at = ci * (w + 2) + cj
    quad = [flat[at], flat[at + 1], flat[at + w + 2], flat[at + w + 3]]
    # Per corner, one outline per distinct nonzero label around it (taken at its first
    # quadrant p). Its pass turns around the lone quadrant: p itself when the label holds
    # only p; the quadrant outside it when it holds 3; each of the two outside quadrants
    # when it holds a diagonal pair (the pixels outside it stay apart, as in GDAL).
    emit = np.zeros((len(corner), 4, 4), dtype=bool)  # (corner, p, quadrant q)
    for p in range(4):
        label = quad[p]
        others = [q for q in range(4) if q != p]
        same = {q: quad[q] == label for q in others}
        ok = label != 0
        for q in range(p):
            ok &= ~same[q]
        count = sum((same[q].astype(np.uint8) for q in others), np.zeros(len(corner), np.uint8))
        diagonal = same[3 - p]  # a-d and b-c are the diagonal pairs
        odd = ok & ((count == 2) | ((count == 1) & diagonal))
        emit[:, p, p] = ok & (count == 0)
        for q in others:
            emit[:, p, q] = odd & ~same[q]
    k, p_, q_ = np.nonzero(emit)
    inside = p_ == q_  # the pass turns around a quadrant of its own label
    labels_k = np.stack(quad, axis=1)[k, p_]
    return ci[k], cj[k], labels_k, q_, inside == _AD[q_]


def _partners(
    label: npt.NDArray[np.int32],
    line: npt.NDArray[np.int64],
    along: npt.NDArray[np.int64],
    forward: npt.NDArray[np.bool_],
    n_line: int,
    n_along: int,
) -> npt.NDArray[np.int64]:
    """The other end of each pass's edge along its grid line.

    Sorted by label, line, position and direction (an interval's end before the next
    one's start at a shared corner), the passes pair up (start, end), (start, end)...
    """
    key = (label.astype(np.int64) * n_line + line) * n_along + along
    order = np.argsort(key * 2 + forward)
    out = np.empty(len(order), dtype=np.int64)
    out[order[0::2]] = order[1::2]
    out[order[1::2]] = order[0::2]
    return out


@dataclass(frozen=True)
class Rings:
    """Polygons as rings laid end to end (pixel-corner coordinates).

    Attributes:
        xy: Ring vertices, (n, 2), ring after ring, each ring *not* closed.
        size: Vertices of each ring (at least 4).
        first: Index of each polygon's first ring (its shell); its holes follow it.
        labels: The label of each polygon.
    """

    xy: npt.NDArray[np.float64]
    size: npt.NDArray[np.int64]
    first: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]

    def polygons(self) -> npt.NDArray[np.object_]:
        """The polygons, as shapely geometries."""
        return polygons_from_rings(self.xy, self.size, self.first)

    def ring_polygon(self) -> npt.NDArray[np.int64]:
        """The polygon of each ring."""
        n_rings = np.diff(np.append(self.first, len(self.size)))
        return np.repeat(np.arange(len(self.first)), n_rings)

    def select(self, keep: npt.NDArray[np.bool_]) -> Rings:
        """The polygons where ``keep`` (one flag per polygon) is true."""
        ring_keep = keep[self.ring_polygon()]
        size = self.size[ring_keep]
        is_first = np.zeros(len(self.size), dtype=bool)
        is_first[self.first] = True
        return Rings(
            xy=self.xy[np.repeat(ring_keep, self.size)],
            size=size,
            first=np.flatnonzero(is_first[ring_keep]),
            labels=self.labels[keep],
        )

    def ring_area(self) -> npt.NDArray[np.int64]:
        """Twice the signed area of each ring (positive: counter-clockwise, y up), exact."""
        xy = self.xy.astype(np.int64)
        nxt = _next_in_ring(self.size)
        cross = xy[:, 0] * xy[nxt, 1] - xy[nxt, 0] * xy[:, 1]
        starts = np.cumsum(self.size) - self.size
        return np.add.reduceat(cross, starts) if len(starts) else np.zeros(0, np.int64)


def _next_in_ring(size: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Index of the next vertex of each vertex in rings laid end to end."""
    n = int(size.sum())
    nxt = np.arange(1, n + 1)
    ends = np.cumsum(size)
    nxt[ends - 1] = ends - size  # the last vertex of a ring is followed by its first
    return nxt


def normalize_rings(rings: Rings) -> Rings:
    """The rings in ``shapely.normalize`` order (GEOS ``Polygon::normalize``), vectorized.

    Each ring starts at its smallest vertex (x, then y); shells run clockwise and holes
    counter-clockwise (y up); holes follow their shell in decreasing order (vertex count,
    then first vertex: no two holes of a pixel outline start at the same corner).
    """
    size, xy = rings.size, rings.xy
    n_rings = len(size)
    if not n_rings:
        return rings
    starts = np.cumsum(size) - size
    ring = np.repeat(np.arange(n_rings), size)
    x, y = xy[:, 0], xy[:, 1]
    x_min = np.minimum.reduceat(x, starts)
    y_min = np.minimum.reduceat(np.where(x == x_min[ring], y, np.inf), starts)
    lowest = np.flatnonzero((x == x_min[ring]) & (y == y_min[ring]))  # one per ring
    is_hole = np.ones(n_rings, dtype=bool)
    is_hole[rings.first] = False
    area = rings.ring_area()
    reverse = np.where(is_hole, area < 0, area > 0)
    # Ring order: per polygon its shell, then its holes in decreasing order of vertex count,
    # then first vertex (GEOS compares rings by size first).
    first_xy = xy[lowest]
    order = np.lexsort((-first_xy[:, 1], -first_xy[:, 0], -size, is_hole, rings.ring_polygon()))
    new_size = size[order]
    k = np.arange(len(xy)) - np.repeat(np.cumsum(new_size) - new_size, new_size)
    s = np.repeat(new_size, new_size)
    offset = np.where(np.repeat(reverse[order], new_size), -k, k)
    src = (
        np.repeat(starts[order], new_size)
        + (np.repeat(lowest[order] - starts[order], new_size) + offset) % s
    )
    new_first = np.flatnonzero(~is_hole[order])
    return Rings(xy=xy[src], size=new_size, first=new_first, labels=rings.labels)


def trace_rings(labels: npt.NDArray[np.int32], *, col_off: int = 0, row_off: int = 0) -> Rings:
    """The outline rings of every labelled component, in pixel-corner coordinates.

    Args:
        labels: Component labels (0: no component); each label one 4-connected region.
        col_off: Added to every x (column) coordinate.
        row_off: Added to every y (row) coordinate.

    Returns:
        One polygon per label present, in ascending label order, its rings as GDAL
        writes them (see the module's docstring).
    """
    h, w = labels.shape
    ci, cj, lab, q, vertical = _passes(labels)
    n = len(lab)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Rings(np.zeros((0, 2)), empty, empty, empty)
    hp = _partners(lab, ci, cj, _RIGHT[q], h + 1, w + 1)
    vp = _partners(lab, cj, ci, _DOWN[q], w + 1, h + 1)
    nxt = np.where(vertical, vp, hp)
    # Rings: cycles of nxt. Each starts at its first pass in scan order.
    graph = sparse.csr_matrix((np.ones(n, dtype=np.int8), nxt, np.arange(n + 1)), shape=(n, n))
    n_rings, ring = csgraph.connected_components(graph, directed=False)
    start = np.full(n_rings, n, dtype=np.int64)
    np.minimum.at(start, ring, np.arange(n))
    # Rings grouped by label, shell (its first ring) first, holes in scan order; chained
    # tail to next start so one depth-first walk lists them all in order.
    ring_label = lab[start]
    start = start[np.lexsort((start, ring_label))]
    prev = np.empty(n, dtype=np.int64)
    prev[nxt] = np.arange(n)
    tail = prev[start]
    chain = nxt.copy()
    chain[tail[:-1]] = start[1:]
    chain[tail[-1]] = tail[-1]
    graph = sparse.csr_matrix((np.ones(n, dtype=np.int8), chain, np.arange(n + 1)), shape=(n, n))
    order = csgraph.depth_first_order(
        graph, int(start[0]), directed=True, return_predecessors=False
    )
    xy = np.empty((n, 2), dtype=np.float64)
    xy[:, 0] = cj[order] + col_off
    xy[:, 1] = ci[order] + row_off
    ring_label = lab[start]
    new_poly = np.ones(len(start), dtype=bool)
    new_poly[1:] = ring_label[1:] != ring_label[:-1]
    return Rings(
        xy=xy,
        size=np.bincount(ring, minlength=n_rings)[ring[start]].astype(np.int64),
        first=np.flatnonzero(new_poly),
        labels=ring_label[new_poly].astype(np.int64),
    )


def trace_outlines(
    labels: npt.NDArray[np.int32], *, col_off: int = 0, row_off: int = 0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.object_]]:
    """The polygon of every labelled component, in pixel-corner coordinates.

    Args:
        labels: Component labels (0: no component); each label one 4-connected region.
        col_off: Added to every x (column) coordinate.
        row_off: Added to every y (row) coordinate.

    Returns:
        The labels present, ascending, and their polygons (shapely, integer corners).
    """
    rings = trace_rings(labels, col_off=col_off, row_off=row_off)
    return rings.labels, rings.polygons()


def polygons_from_rings(
    xy: npt.NDArray[np.float64],
    ring_size: npt.NDArray[np.int64],
    first_ring: npt.NDArray[np.int64],
) -> npt.NDArray[np.object_]:
    """Polygons from open rings laid end to end (one vectorized call).

    Args:
        xy: Ring vertices, (n, 2), ring after ring, each ring *not* closed.
        ring_size: Vertices of each ring (at least 3).
        first_ring: Index of each polygon's first ring (its shell); its holes follow it.

    Returns:
        The polygons.
    """
    if not len(first_ring):
        return np.zeros(0, dtype=object)
    ends = np.cumsum(ring_size + 1)
    closed = np.empty((len(xy) + len(ring_size), 2), dtype=np.float64)
    closed[np.arange(len(xy)) + np.repeat(np.arange(len(ring_size)), ring_size)] = xy
    closed[ends - 1] = closed[ends - 1 - ring_size]  # each ring closed by its first vertex
    offsets = (np.concatenate([[0], ends]), np.append(first_ring, len(ring_size)))
    return shapely.from_ragged_array(shapely.GeometryType.POLYGON, closed, offsets)
