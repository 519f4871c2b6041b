"""Outline quality of matched polygons, and the topology of neighbouring predictions.

Object F1 and IoU say whether a building was found and how much of it; they do not say
whether its outline is one a GIS analyst would keep. These do (over the matched pairs of
:func:`geoseg.evaluate.objects.match_objects`):

* **C-IoU** (complexity-aware IoU, Zorzi et al. 2022): ``IoU x (1 - |N - N_true| / (N +
  N_true))`` with ``N`` the vertex counts; a pixel staircase has many more vertices than the
  true outline and scores low even when its IoU is high. Mean over matches.
* **N-ratio**: ``N / N_true``, mean over matches (1 is the true vertex count).
* **PoLiS** (Avbelj et al. 2015): the mean distance from each polygon's vertices to the other's
  boundary, averaged both ways, in CRS units (metres): how far the corners are off.
* **gap** and **overlap** between neighbouring predicted polygons (total areas, CRS units²):
  the overlap is their intersection; the gap is what closing the pair by ``gap_tolerance``
  fills that closing each alone does not: the slivers between buildings that share a wall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

__all__ = [
    "GAP_TOLERANCE",
    "ShapeQuality",
    "neighbour_gaps",
    "pair_shape",
    "polis",
    "shape_quality",
    "vertex_count",
]

GAP_TOLERANCE = 1.0
"""Gaps narrower than twice this (CRS units, m) between two predicted polygons count."""


@dataclass(frozen=True)
class ShapeQuality:
    """Outline quality of the matched pairs and the topology of the predictions.

    Attributes:
        c_iou: Mean complexity-aware IoU of the matches (NaN without matches).
        n_ratio: Mean predicted / true vertex count of the matches.
        polis: Mean PoLiS distance of the matches (CRS units).
        gap: Total gap area between neighbouring predictions (CRS units²).
        overlap: Total overlap area between predictions (CRS units²).
    """

    c_iou: float
    n_ratio: float
    polis: float
    gap: float
    overlap: float

    def to_dict(self) -> dict[str, float | None]:
        """A JSON-able form (NaN as None)."""
        return {
            k: None if math.isnan(v) else v
            for k, v in (
                ("c_iou", self.c_iou),
                ("n_ratio", self.n_ratio),
                ("polis", self.polis),
                ("gap_area", self.gap),
                ("overlap_area", self.overlap),
            )
        }

    def format_lines(self) -> list[str]:
        """Readable lines, as in :meth:`ObjectMetrics.format_table`."""
        return [
            f"{'C-IoU (TP)':<16}{self.c_iou:>10.4f}",
            f"{'N-ratio (TP)':<16}{self.n_ratio:>10.3f}",
            f"{'PoLiS (TP)':<16}{self.polis:>10.3f}",
            f"{'gap area':<16}{self.gap:>10.3f}",
            f"{'overlap area':<16}{self.overlap:>10.3f}",
        ]


def vertex_count(geom: shapely.Geometry) -> int:
    """Vertices of a (multi)polygon: every ring's, without the closing repeat."""
    parts = getattr(geom, "geoms", [geom])
    return sum(
        len(r.coords) - 1 for p in parts if not p.is_empty for r in (p.exterior, *p.interiors)
    )


def polis(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """The PoLiS distance of two polygons (CRS units)."""
    va = shapely.points(_vertices(a))
    vb = shapely.points(_vertices(b))
    da = shapely.distance(va, shapely.boundary(b))
    db = shapely.distance(vb, shapely.boundary(a))
    return float(da.mean() / 2 + db.mean() / 2)


def _vertices(g: shapely.Geometry) -> npt.NDArray[np.float64]:
    parts = getattr(g, "geoms", [g])
    rings = [r for p in parts for r in (p.exterior, *p.interiors)]
    return np.concatenate([np.asarray(r.coords)[:-1] for r in rings])


def _closing(g: shapely.Geometry, tol: float) -> shapely.Geometry:
    return shapely.buffer(shapely.buffer(g, tol, join_style="mitre"), -tol, join_style="mitre")


def neighbour_gaps(
    geoms: Sequence[shapely.Geometry] | npt.NDArray[np.object_], tolerance: float = GAP_TOLERANCE
) -> tuple[float, float]:
    """``(gap, overlap)`` areas between every pair of polygons within ``tolerance``."""
    arr = np.asarray(geoms, dtype=object)
    if len(arr) < 2:
        return 0.0, 0.0
    left, right = shapely.STRtree(arr).query(arr, predicate="dwithin", distance=tolerance)
    pairs = left < right
    a, b = arr[left[pairs]], arr[right[pairs]]
    if not len(a):
        return 0.0, 0.0
    overlap = float(shapely.area(shapely.intersection(a, b)).sum())
    closed = _closing(shapely.union(a, b), tolerance)
    own = shapely.union(_closing(a, tolerance), _closing(b, tolerance))
    gap = float(shapely.area(shapely.difference(closed, own)).sum())
    return gap, overlap


def pair_shape(pred: shapely.Geometry, truth: shapely.Geometry, iou: float) -> tuple[float, ...]:
    """``(C-IoU, N-ratio, PoLiS)`` of one matched pair with intersection over union ``iou``."""
    n, nt = vertex_count(pred), vertex_count(truth)
    return iou * (1 - abs(n - nt) / (n + nt)), n / nt, polis(pred, truth)


def shape_quality(
    pairs: Sequence[tuple[float, float, float]], gap: float, overlap: float
) -> ShapeQuality:
    """Pool the :func:`pair_shape` of the matches, with the predictions' gap and overlap."""
    if not pairs:
        return ShapeQuality(math.nan, math.nan, math.nan, gap, overlap)
    c, n, d = (float(np.mean(v)) for v in zip(*pairs, strict=True))
    return ShapeQuality(c, n, d, gap, overlap)
