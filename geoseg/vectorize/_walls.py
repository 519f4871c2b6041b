"""Regularizing attached buildings together, so that neighbours keep one common wall.

Regularizing each house of a terrace on its own moves the two sides of a shared wall
independently: slivers of gap and overlap appear between them. Here the group is regularized
as one outline (the union of its parts, by
:func:`~geoseg.vectorize._regularize.regularize_building`), and the walls between parts are
straightened and cut through it:

1. each wall (the pixel border two parts share) becomes one straight segment, fitted to its
   vertices and turned to the group's axes when it is within :data:`SNAP_DEG` of them (a
   right angle with the outer walls, as on real terraces), extended a little past its ends;
2. the outline is cut by all walls (a planar subdivision: faces share exact edges);
3. each face goes to the part that covers most of it, and the faces of a part are joined.

The parts therefore tile the regularized outline: no gap and no overlap, by construction.
A group where this fails (a part left without a face, or split in two) keeps its pixel
outlines, which share their walls exactly too.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon

from geoseg.vectorize._clean import polygon_parts
from geoseg.vectorize._regularize import regularize_building

__all__ = ["SNAP_DEG", "regularize_group", "straight_wall"]

SNAP_DEG = 12.0
"""A wall within this many degrees of the group's axes is turned onto them."""

_EXTEND_PX = 2.5  # how far a wall reaches past its pixel ends, to cut the outline cleanly


def straight_wall(
    shared: shapely.Geometry, angle: float, *, extend: float = 2.5
) -> LineString | None:
    """One straight segment for the pixel border two parts share.

    Args:
        shared: The shared border (lines, pixel coordinates).
        angle: The group's main axis (radians); walls snap to it or to its normal.
        extend: How far (pixels) the segment reaches past the border's ends.

    Returns:
        The segment through the border's vertices (the total-least-squares line), snapped to
        the group's axes when close, spanning the border plus ``extend`` at each end;
        None for a border shorter than 2 pixels.
    """
    lines = [g for g in shapely.get_parts(shapely.line_merge(shared)) if g.length > 0]
    if not lines or sum(g.length for g in lines) < 2.0:
        return None
    pts = np.concatenate([np.asarray(g.coords) for g in lines])
    centre = pts.mean(axis=0)
    cov = np.cov((pts - centre).T) if len(pts) > 2 else None
    if cov is None or not np.all(np.isfinite(cov)):
        d = pts[-1] - pts[0]
    else:
        vals, vecs = np.linalg.eigh(cov)
        d = vecs[:, int(np.argmax(vals))]
    theta = math.atan2(d[1], d[0])
    for axis in (angle, angle + math.pi / 2):
        diff = (theta - axis + math.pi / 2) % math.pi - math.pi / 2
        if abs(math.degrees(diff)) <= SNAP_DEG:
            theta = axis
            break
    u = np.array([math.cos(theta), math.sin(theta)])
    t = (pts - centre) @ u
    lo, hi = float(t.min()) - extend, float(t.max()) + extend
    return LineString([centre + lo * u, centre + hi * u])


def regularize_group(
    parts: list[Polygon], extent: Polygon, *, detail: float = 1.0
) -> tuple[list[Polygon], bool]:
    """Regularized outlines of attached buildings that share their walls exactly.

    Args:
        parts: The buildings' pixel outlines (pixel coordinates, holes filled), which tile
            their union.
        extent: The raster's extent in pixel coordinates.
        detail: Raster pixels per pixel of true detail (see
            :func:`~geoseg.vectorize._regularize.regularize_building`).

    Returns:
        ``(outlines, regularized)``: one polygon per part, in order, that tile the regularized
        union; or the pixel outlines themselves (``False``) when the group cannot be cut
        cleanly.
    """
    union = shapely.union_all(parts)
    outer_parts = polygon_parts(union)
    if len(outer_parts) != 1:
        return parts, False
    whole = Polygon(outer_parts[0].exterior)
    outline, _ = regularize_building(whole, extent, detail=detail)
    angle = _main_axis(outline)
    walls: list[LineString] = []
    tree = shapely.STRtree(parts)
    for i, j in zip(*tree.query(parts, predicate="touches"), strict=True):
        if i >= j:
            continue
        shared = shapely.intersection(parts[i].boundary, parts[j].boundary)
        wall = straight_wall(shared, angle, extend=_EXTEND_PX * max(1.0, detail))
        if wall is not None:
            walls.append(wall)
    if not walls:
        return parts, False
    noded = shapely.union_all([outline.boundary, *walls])
    faces = [
        f
        for f in shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
        if f.area > 1e-9 and outline.contains(f.representative_point())
    ]
    owner = [int(np.argmax([f.intersection(p).area for p in parts])) for f in faces]
    out: list[Polygon] = []
    for k in range(len(parts)):
        mine = [f for f, o in zip(faces, owner, strict=True) if o == k]
        joined = polygon_parts(shapely.union_all(mine)) if mine else []
        if len(joined) != 1:
            return parts, False
        out.append(shapely.normalize(_drop_collinear(joined[0])))
    return out, True


def _main_axis(outline: Polygon) -> float:
    """The direction of the outline's longest edge (radians): the group's axes."""
    d = np.diff(np.asarray(outline.exterior.coords), axis=0)
    k = int(np.argmax(np.hypot(d[:, 0], d[:, 1])))
    return math.atan2(float(d[k, 1]), float(d[k, 0]))


def _drop_collinear(poly: Polygon) -> Polygon:
    """Remove vertices on straight runs (left where a cut line met a straight edge)."""
    simple = shapely.simplify(poly, 1e-9, preserve_topology=True)
    return simple if isinstance(simple, Polygon) and not simple.is_empty else poly
