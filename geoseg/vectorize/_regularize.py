"""Rectilinear building outlines (pure geometry, pixel coordinates).

A building's dominant orientation is the length-weighted circular mean of its edge
directions modulo 90 degrees (taken from a Douglas-Peucker simplification of the pixel
staircase). In the frame of that orientation, the outline is cut into runs of near-horizontal
and near-vertical edges; each run becomes one straight line fitted to *all* the staircase
vertices it spans, and consecutive lines meet at right angles. Edges more than
``max_deviation`` away from both axes (a true 45 degree wall) keep their direction.

:func:`clip_to_territory` keeps neighbouring buildings apart: a regularized outline may
grow into the band of width ``margin`` around its own pixels only where that band is not
within ``margin`` of another building, so two regularized neighbours never overlap.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon

from geoseg.vectorize._clean import polygon_parts

__all__ = [
    "clip_to_territory",
    "dominant_angle",
    "rectangle_angle",
    "regularize_building",
    "regularize_polygon",
]


def dominant_angle(poly: Polygon, *, tolerance: float = 1.0) -> float:
    """Dominant edge direction of a polygon, radians in [-pi/4, pi/4)."""
    simple = shapely.simplify(poly.exterior, tolerance, preserve_topology=False)
    xy = np.asarray(simple.coords)
    if len(xy) < 3:
        xy = np.asarray(poly.minimum_rotated_rectangle.exterior.coords)
    d = np.diff(xy, axis=0)
    w = np.hypot(d[:, 0], d[:, 1])
    ang = np.arctan2(d[:, 1], d[:, 0])
    s, c = float(np.sum(w * np.sin(4 * ang))), float(np.sum(w * np.cos(4 * ang)))
    if s == 0 and c == 0:
        return 0.0
    return math.atan2(s, c) / 4


def rectangle_angle(poly: Polygon) -> float:
    """Orientation of the polygon's minimum rotated rectangle, radians in [-pi/4, pi/4).

    For long, near-rectangular buildings this is sharper than :func:`dominant_angle`: the
    staircase of a long wall tilts its simplified edges by up to a pixel over their length.
    """
    xy = np.asarray(shapely.minimum_rotated_rectangle(poly).exterior.coords)
    if len(xy) < 3:
        return 0.0
    d = xy[1] - xy[0]
    ang = math.atan2(float(d[1]), float(d[0]))
    return (ang + math.pi / 4) % (math.pi / 2) - math.pi / 4


def _dp_indices(pts: npt.NDArray[np.float64], tol: float) -> list[int]:
    """Douglas-Peucker on an open polyline; the kept indices, sorted."""
    n = len(pts)
    keep = np.zeros(n, dtype=bool)
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b = pts[i], pts[j]
        seg = pts[i + 1 : j]
        ab = b - a
        length = math.hypot(ab[0], ab[1])
        if length == 0:
            dist = np.hypot(seg[:, 0] - a[0], seg[:, 1] - a[1])
        else:
            dist = np.abs(ab[0] * (seg[:, 1] - a[1]) - ab[1] * (seg[:, 0] - a[0])) / length
        k = int(np.argmax(dist))
        if dist[k] > tol:
            m = i + 1 + k
            keep[m] = True
            stack.append((i, m))
            stack.append((m, j))
    return np.flatnonzero(keep).tolist()


def _intersect(
    p1: npt.NDArray[np.float64],
    d1: npt.NDArray[np.float64],
    p2: npt.NDArray[np.float64],
    d2: npt.NDArray[np.float64],
    fallback: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-9 * (np.hypot(*d1) * np.hypot(*d2) + 1e-12):
        return fallback
    t = ((p2[0] - p1[0]) * d2[1] - (p2[1] - p1[1]) * d2[0]) / den
    return p1 + t * d1


def _regularize_ring(
    ring: npt.NDArray[np.float64], tolerance: float, max_dev: float, min_edge: float
) -> tuple[npt.NDArray[np.float64], float] | None:
    """A closed ring in the rotated frame -> regularized closed ring (or None).

    Also returns the length-weighted residual tilt of the walls (radians), with which the
    caller refines the dominant angle.
    """
    pts = ring[:-1]
    n = len(pts)
    if n < 4:
        return None
    far = int(np.argmax(np.hypot(pts[:, 0] - pts[0, 0], pts[:, 1] - pts[0, 1])))
    closed = np.concatenate([pts, pts[:1]])
    first = _dp_indices(closed[: far + 1], tolerance)
    second = [far + i for i in _dp_indices(closed[far:], tolerance)]
    idx = sorted(set(first) | set(second))
    if idx[-1] == n:
        idx = idx[:-1]
    if len(idx) < 3:
        return None
    # Classify DP edges: 0 horizontal, 1 vertical, 2 other; short edges (staircase noise
    # left by DP near corners) join the run before them.
    sin_tol = math.sin(max_dev)
    kinds: list[int] = []
    for a, b in zip(idx, [*idx[1:], idx[0] + n], strict=False):
        d = closed[b] - closed[a]
        length = math.hypot(d[0], d[1])
        if length < min_edge:
            kinds.append(-1)
        elif abs(d[1]) / length <= sin_tol:
            kinds.append(0)
        elif abs(d[0]) / length <= sin_tol:
            kinds.append(1)
        else:
            kinds.append(2)
    # A short oblique edge between wall runs is a cut corner, not a wall.
    lengths = [
        math.hypot(*(closed[b] - closed[a]))
        for a, b in zip(idx, [*idx[1:], idx[0] + n], strict=False)
    ]
    m0 = len(kinds)
    for i in range(m0):
        if kinds[i] == 2 and lengths[i] < 3 * min_edge:
            if kinds[i - 1] in (0, 1) and kinds[(i + 1) % m0] in (0, 1):
                kinds[i] = -1
    if all(k == -1 for k in kinds):
        return None
    last = next(k for k in reversed(kinds) if k != -1)
    for i, k in enumerate(kinds):
        if k == -1:
            kinds[i] = last if last != 2 else 2
        else:
            last = k
    # Runs of consecutive H or V edges (cyclic); 'other' edges stay single runs.
    starts = [k for k in range(len(kinds)) if kinds[k] == 2 or kinds[k] != kinds[k - 1]]
    if not starts:  # all edges one kind: impossible for a closed ring
        return None
    runs: list[tuple[int, int, int]] = []  # (kind, start vertex idx, end vertex idx)
    for s_i, s in enumerate(starts):
        e = starts[(s_i + 1) % len(starts)]
        a = idx[s]
        b = idx[e] if e > s else idx[e] + n
        runs.append((kinds[s], a, b))
    # A line per run: point + direction.
    seq = np.concatenate([pts, pts, pts[:1]])
    lines: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    dev_sum = dev_w = 0.0
    for kind, a, b in runs:
        if kind == 2:
            p, q = seq[a], seq[b]
            lines.append((p, q - p))
            continue
        span = seq[a : b + 1]
        d = np.diff(span, axis=0)
        w = np.hypot(d[:, 0], d[:, 1])
        mid = (span[:-1] + span[1:]) / 2
        wsum = float(np.sum(w))
        c = float(np.sum(w * mid[:, 1 - kind]) / wsum) if wsum > 0 else float(span[0, 1 - kind])
        if len(span) > 2 and wsum > 0:
            # Residual tilt of this wall: principal direction of its staircase.
            mu = np.sum(w[:, None] * mid, axis=0) / np.sum(w)
            dm = mid - mu
            cxx, cyy = np.sum(w * dm[:, 0] ** 2), np.sum(w * dm[:, 1] ** 2)
            cxy = np.sum(w * dm[:, 0] * dm[:, 1])
            phi = 0.5 * math.atan2(2 * cxy, cxx - cyy)  # direction of the major axis
            dev = phi if kind == 0 else phi - math.copysign(math.pi / 2, phi)
            if abs(dev) < max_dev:
                dev_sum += float(np.sum(w)) * dev
                dev_w += float(np.sum(w))
        if kind == 0:
            lines.append((np.array([0.0, c]), np.array([1.0, 0.0])))
        else:
            lines.append((np.array([c, 0.0]), np.array([0.0, 1.0])))
    out = []
    m = len(runs)
    for i in range(m):
        p1, d1 = lines[i - 1]
        p2, d2 = lines[i]
        out.append(_intersect(p1, d1, p2, d2, seq[runs[i][1]]))
    if len(out) < 3:
        return None
    arr = np.asarray(out)
    return np.concatenate([arr, arr[:1]]), (dev_sum / dev_w if dev_w > 0 else 0.0)


def _rotate(
    xy: npt.NDArray[np.float64], angle: float, origin: tuple[float, float]
) -> npt.NDArray[np.float64]:
    c, s = math.cos(angle), math.sin(angle)
    x, y = xy[:, 0] - origin[0], xy[:, 1] - origin[1]
    return np.stack([c * x - s * y + origin[0], s * x + c * y + origin[1]], axis=1)


def regularize_polygon(
    poly: Polygon,
    *,
    tolerance: float = 1.5,
    max_deviation: float = math.radians(15.0),
    min_hole_area: float = 4.0,
    angle: float | None = None,
) -> Polygon | None:
    """A rectilinear version of a pixel-staircase building outline.

    Args:
        poly: The outline, pixel coordinates.
        tolerance: Douglas-Peucker tolerance (pixels) that finds the wall runs.
        max_deviation: Edges within this angle (radians) of the dominant axes become
            axis-parallel walls meeting at right angles.
        min_hole_area: Holes smaller than this (pixels²) are dropped.
        angle: The walls' orientation (radians); default: the outline's dominant angle,
            refined by the walls' residual tilt.

    Returns:
        The regularized polygon, or None when the outline is too small or the result is
        not a sensible polygon (caller keeps the original then).
    """
    c = poly.centroid
    origin = (c.x, c.y)
    if angle is not None:
        theta = angle
    else:
        theta = dominant_angle(poly, tolerance=tolerance)
        first = _regularize_ring(
            _rotate(np.asarray(poly.exterior.coords), -theta, origin),
            tolerance,
            max_deviation,
            3 * tolerance,
        )
        if first is not None:
            theta += first[1]
    rings: list[npt.NDArray[np.float64]] = []
    for k, ring in enumerate([poly.exterior, *poly.interiors]):
        if k > 0 and Polygon(ring).area < min_hole_area:
            continue
        xy = _rotate(np.asarray(ring.coords), -theta, origin)
        res = _regularize_ring(xy, tolerance, max_deviation, 3 * tolerance)
        if res is None:
            if k == 0:
                return None
            continue
        rings.append(_rotate(res[0], theta, origin))
    out = Polygon(rings[0], rings[1:])
    if not out.is_valid:
        parts = polygon_parts(shapely.make_valid(out))
        if not parts:
            return None
        out = max(parts, key=lambda p: p.area)
    if out.is_empty or not 0.7 <= out.area / poly.area <= 1.3:
        return None
    return out


def clip_to_territory(
    reg: Polygon, original: Polygon, neighbours: list[Polygon], margin: float
) -> list[Polygon]:
    """Keep a regularized outline off its neighbours.

    The allowed region is the building's own pixels plus the band within ``margin`` of them
    that is farther than ``margin`` from every neighbour; since each neighbour obeys the
    same rule, two clipped neighbours cannot overlap.

    Args:
        reg: The regularized outline.
        original: The building's pixel outline.
        neighbours: Pixel outlines of the other buildings near it.
        margin: Band width in pixels.

    Returns:
        The clipped polygon parts (at least 1 pixel² each).
    """
    near = [n for n in neighbours if n.distance(original) < 2 * margin]
    if not near:
        return [reg]
    band = original.buffer(margin, join_style="mitre")
    others = shapely.union_all([n.buffer(margin, join_style="mitre") for n in near])
    allowed = shapely.union(original, shapely.difference(band, others))
    clipped = shapely.intersection(reg, allowed)
    return [p for p in polygon_parts(clipped) if p.area >= 1.0]


MAX_GROWTH_PX = 1.0
"""How far (pixels) a regularized outline may reach outside its own pixels."""

_AXIS_PREFERENCE = 0.01
"""IoU an axis-aligned candidate may give up and still win (pixels' own axes first)."""


COARSE_REACH_PX = 3.0
"""How far (pixels of detail) a wall may run outside the pixels of a coarser-detail map.

A model that sees a coarser detail than the grid (``detail`` ``k > 1``: a 20 cm model on a
5 cm grid) ripples the walls of buildings by a pixel or two of its detail and rounds their
corners; a straight wall fitted through them runs up to this far outside. On the synthetic
test scene of the boundary-loss experiment such walls match the true footprints better than
the pixels do (21 of 25 buildings). At full detail (``k = 1``) walls stay within
:data:`MAX_GROWTH_PX`.
"""

CORNER_PX = 6.0
"""How far (pixels of detail) beyond a wall's reach a corner may be completed (``k > 1``)."""


def _within_reach(reg: Polygon, poly: Polygon, wall: float, corner: float) -> bool:
    """Whether ``reg`` stays within ``wall`` of ``poly``, or ``corner`` near its own vertices."""
    ring = reg.exterior
    n = max(8, int(ring.length))  # about one sample per pixel
    pts = shapely.line_interpolate_point(ring, np.linspace(0.0, ring.length, n, endpoint=False))
    out = shapely.distance(pts, poly)
    if float(out.max()) <= wall:
        return True
    corners = shapely.multipoints(np.asarray(ring.coords)[:-1])
    near = shapely.distance(pts, corners) <= corner
    return bool(np.all((out <= wall) | (near & (out <= corner))))


_CORNER_COST = 2e-4
"""IoU a candidate gives up per corner: of two that fit alike, the simpler outline wins."""


def iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Intersection over union of two areas (0 when both are empty)."""
    union = shapely.union(a, b).area
    return float(shapely.intersection(a, b).area / union) if union > 0 else 0.0


_TURN_TOLERANCE_DEG = 5.0
"""A regular outline turns by 90 or 45 degrees at each corner, give or take this much."""


def _regular(poly: Polygon, extent: Polygon) -> bool:
    """Whether every corner turns by a right angle or a true 45 degree wall's angle.

    Corners on the raster's edge (where the outline is cut) do not count.
    """
    xy = np.asarray(poly.exterior.coords)
    d = np.diff(xy, axis=0)
    ang = np.degrees(np.arctan2(d[:, 1], d[:, 0]))
    turn = np.abs((np.diff(np.r_[ang, ang[:1]]) + 90.0) % 180.0 - 90.0)
    off = np.minimum(np.abs(turn - 90.0), np.abs(turn - 45.0))
    # turn[i] is the corner at vertex i + 1
    cut = shapely.distance(extent.exterior, shapely.points(np.roll(xy[:-1], -1, axis=0))) < 1e-6
    return bool(np.all((off <= _TURN_TOLERANCE_DEG) | cut))


def _on_axes(poly: Polygon) -> bool:
    """Whether every edge runs along the pixel grid's axes (a truly axis-aligned outline)."""
    d = np.diff(np.asarray(poly.exterior.coords), axis=0)
    return bool(np.all((np.abs(d[:, 0]) < 1e-6) | (np.abs(d[:, 1]) < 1e-6)))


def regularize_building(
    poly: Polygon, extent: Polygon, *, tolerance: float = 1.5, detail: float = 1.0
) -> tuple[Polygon, bool]:
    """The best outline of a building's pixels: rectilinear when that fits, kept on them.

    Rectilinear candidates come from three orientations, the pixel grid's own axes and the
    outline's dominant one (long edges weighted by length) with and without the walls'
    residual tilt, and from Douglas-Peucker tolerances of 1 to 3 pixels (the wall runs).
    Each is clipped to ``extent`` (a building cut by the raster's edge keeps that straight
    edge) and to :data:`MAX_GROWTH_PX` around its own pixels; at a coarser ``detail`` a
    candidate whose walls stay in that band is kept whole, its corners completed beyond
    rounded pixels up to :data:`CORNER_PX` (pixels of detail). The candidate that fits the
    pixels best (IoU, less :data:`_CORNER_COST` per corner) wins, the grid's axes unless
    another fits :data:`_AXIS_PREFERENCE` better (and only when it is truly axis-aligned).
    A winner that fits the pixels worse than the raw outline (the pixel outline
    simplified with ``tolerance``: no shape prior) is rejected for the raw outline; at a
    coarser ``detail``, "worse" allows for what the pixels cannot know (:func:`_fits`).

    Args:
        poly: The building's pixels (outline, pixel coordinates, holes filled).
        extent: The raster's extent in pixel coordinates.
        tolerance: Douglas-Peucker tolerance (pixels) of the raw outline.
        detail: Raster pixels per pixel of true detail (>= 1): a class map predicted by a
            model at 20 cm on a 5 cm grid has 4, and its outlines step by 4 pixels. Growth,
            tolerances and "one pixel" are counted in those coarser pixels.

    Returns:
        ``(outline, rectilinear)``: the outline and whether it is a regularized one.
    """
    k = max(1.0, detail)
    tolerance *= k
    allowed = shapely.intersection(extent, poly.buffer(MAX_GROWTH_PX * k, join_style="mitre"))
    dominant = dominant_angle(poly, tolerance=tolerance)
    runs = tuple(k * t for t in (1.0, 2.0, 3.0))
    tried: list[tuple[float | None, float]] = [(0.0, tolerance), (None, tolerance)]
    rectangle = rectangle_angle(poly)
    tried += [(a, t) for t in (tolerance, *runs) for a in (dominant, rectangle)]
    tried += [(0.0, t) for t in runs]
    # a coarser map's rounded corners are not 45 degree walls: every wall goes on the axes
    dev = math.radians(15.0) if k == 1 else math.radians(45.0)
    reach = COARSE_REACH_PX * k
    best: tuple[Polygon, float] | None = None
    for angle, tol in tried:
        reg = regularize_polygon(poly, tolerance=tol, angle=angle, max_deviation=dev)
        if reg is None:
            continue
        whole = k > 1 and _within_reach(reg, poly, reach, reach + CORNER_PX * (k - 1))
        parts = polygon_parts(shapely.intersection(reg, extent if whole else allowed))
        if not parts:
            continue
        cand = max(parts, key=lambda p: p.area)
        if not _regular(cand, extent):
            continue
        prefer = angle == 0.0 and _on_axes(cand)
        corners = len(cand.exterior.coords) - 1
        fit = iou(cand, poly) + (_AXIS_PREFERENCE if prefer else 0.0) - _CORNER_COST * corners
        if best is None or fit > best[1]:
            best = (cand, fit)
    raw = shapely.simplify(poly, tolerance, preserve_topology=True)
    raw_parts = polygon_parts(shapely.intersection(raw, allowed)) or [poly]
    raw = max(raw_parts, key=lambda p: p.area)
    if best is not None and _fits(best[0], raw, poly, k):
        return best[0], True
    return raw, False


def _fits(cand: Polygon, raw: Polygon, poly: Polygon, detail: float) -> bool:
    """Whether a regularized outline fits the pixels at least as well as the raw outline.

    At full detail that is IoU against the pixels. A map predicted at a coarser detail of
    ``k`` grid pixels knows its outlines only to within about a pixel of that detail (a model
    rounds corners and ripples walls), so there the regularized outline may differ from the
    pixels by ``k - 1`` grid pixels more along the outline than the raw outline does.
    """
    if iou(cand, poly) >= iou(raw, poly):
        return True
    if detail <= 1.0:
        return False
    slack = (detail - 1.0) * poly.exterior.length
    return bool(
        shapely.symmetric_difference(cand, poly).area
        <= shapely.symmetric_difference(raw, poly).area + slack
    )
