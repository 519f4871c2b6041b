"""Road network metrics: APLS (SpaceNet) and length-weighted precision / recall in a buffer.

Pure geometry (shapely; the graph math is :mod:`geoseg.evaluate.apls`); no file I/O.
Coordinates are in a projected CRS; ``unit`` (metres per CRS unit) turns the options, given
in metres, into CRS units and the reported lengths back into metres.

**APLS** is the harmonic mean of truth-onto-prediction (missing roads cost) and
prediction-onto-truth (spurious roads cost), each :func:`~geoseg.evaluate.apls.apls_direction`
(0 when either is 0), as in CosmiQ's reference implementation. An empty truth has nothing to
score: APLS is NaN (the reference says 0).

**Buffer precision / recall** (correctness / completeness): the length of the prediction
within ``buffer`` of the truth over the prediction's length, and the length of the truth
within ``buffer`` of the prediction over the truth's length. Overlapping lines count once.

Example:
    >>> from shapely.geometry import LineString
    >>> truth = [LineString([(0, 0), (100, 0)]), LineString([(100, 0), (100, 100)])]
    >>> score_roads(truth, truth).apls
    1.0
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geoseg.errors import InputError
from geoseg.evaluate.apls import (
    MIN_PATH_LENGTH_M,
    DirectionScore,
    RoadGraph,
    apls_direction,
    road_graph,
)
from geoseg.options import EvaluateOptions

__all__ = [
    "MIN_PATH_LENGTH_M",
    "DirectionScore",
    "RoadGraph",
    "RoadMetrics",
    "apls_direction",
    "buffer_lengths",
    "road_graph",
    "score_roads",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- buffer P/R


def _length_near(lines: RoadGraph, other: RoadGraph, buffer: float) -> float:
    """Length of ``lines`` within ``buffer`` of ``other``.

    Edge by edge, against the union of the buffers of the edges of ``other`` near it: one
    buffer of a whole city network is several times slower.
    """
    if not lines.geometries or not other.geometries:
        return 0.0
    mine = np.asarray(lines.geometries, dtype=object)
    zones = shapely.buffer(np.asarray(other.geometries, dtype=object), buffer)
    li, zi = shapely.STRtree(zones).query(mine, predicate="intersects")
    if len(li) == 0:  # nothing of ``lines`` is near ``other``
        return 0.0
    order = np.argsort(li, kind="stable")
    li, zi = li[order], zi[order]
    starts = np.flatnonzero(np.r_[True, li[1:] != li[:-1]])
    ends = np.r_[starts[1:], len(li)]
    return float(
        sum(
            shapely.intersection(mine[li[a]], shapely.union_all(zones[zi[a:b]])).length
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        )
    )


def buffer_lengths(pred: RoadGraph, truth: RoadGraph, buffer: float) -> tuple[float, float]:
    """Length of each network within ``buffer`` of the other.

    Args:
        pred: Predicted network.
        truth: Reference network.
        buffer: Distance (CRS units).

    Returns:
        ``(pred matched, truth matched)`` lengths in CRS units.
    """
    return _length_near(pred, truth, buffer), _length_near(truth, pred, buffer)


# --------------------------------------------------------------------------- record


@dataclass(frozen=True)
class RoadMetrics:
    """Road network scores of a prediction against the truth.

    Attributes:
        truth_to_pred: APLS with the truth's control points snapped onto the prediction
            (missing roads cost here).
        pred_to_truth: APLS with the prediction's control points snapped onto the truth
            (spurious roads cost here).
        truth_length_m: Length of the truth network, m.
        pred_length_m: Length of the predicted network, m.
        truth_matched_m: Truth length within ``buffer_m`` of the prediction, m.
        pred_matched_m: Predicted length within ``buffer_m`` of the truth, m.
        truth_graph: Nodes and edges of the truth graph.
        pred_graph: Nodes and edges of the predicted graph.
        buffer_m: Buffer of precision and recall, m.
        snap_m: APLS snap distance, m.
        spacing_m: APLS control point spacing, m.
        min_path_m: Shortest route scored, m.
        max_pairs: Most routes scored per direction.
    """

    truth_to_pred: DirectionScore
    pred_to_truth: DirectionScore
    truth_length_m: float
    pred_length_m: float
    truth_matched_m: float
    pred_matched_m: float
    truth_graph: tuple[int, int]
    pred_graph: tuple[int, int]
    buffer_m: float
    snap_m: float
    spacing_m: float
    min_path_m: float
    max_pairs: int

    @property
    def apls(self) -> float:
        """Harmonic mean of both directions; 0 when either is 0; NaN for an empty truth."""
        if self.truth_to_pred.control_points == 0:
            return math.nan
        a, b = self.truth_to_pred.score, self.pred_to_truth.score
        return 2 * a * b / (a + b) if a > 0 and b > 0 else 0.0

    @property
    def precision(self) -> float:
        """Predicted length near the truth / predicted length (0 with no prediction)."""
        return self.pred_matched_m / self.pred_length_m if self.pred_length_m > 0 else 0.0

    @property
    def recall(self) -> float:
        """Truth length near the prediction / truth length (NaN with no truth)."""
        return self.truth_matched_m / self.truth_length_m if self.truth_length_m > 0 else math.nan

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall (NaN with no truth)."""
        p, r = self.precision, self.recall
        if math.isnan(r):
            return math.nan
        return 2 * p * r / (p + r) if p + r > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form (NaN as None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "apls": num(self.apls),
            "apls_truth_to_pred": self.truth_to_pred.to_dict(),
            "apls_pred_to_truth": self.pred_to_truth.to_dict(),
            "precision": self.precision,
            "recall": num(self.recall),
            "f1": num(self.f1),
            "truth_length_m": self.truth_length_m,
            "pred_length_m": self.pred_length_m,
            "truth_matched_m": self.truth_matched_m,
            "pred_matched_m": self.pred_matched_m,
            "truth_graph": {"nodes": self.truth_graph[0], "edges": self.truth_graph[1]},
            "pred_graph": {"nodes": self.pred_graph[0], "edges": self.pred_graph[1]},
            "buffer_m": self.buffer_m,
            "snap_m": self.snap_m,
            "control_spacing_m": self.spacing_m,
            "min_path_m": self.min_path_m,
            "max_pairs": self.max_pairs,
        }

    def format_table(self) -> str:
        """A readable summary."""

        def val(x: float) -> str:
            return "-" if math.isnan(x) else f"{x:.4f}"

        def way(d: DirectionScore) -> str:
            note = f"{d.routes:,} routes, {d.snapped}/{d.control_points} snapped"
            return note + (f", {d.sources} sources sampled" if d.sampled else "")

        w = 22
        return "\n".join(
            [
                f"{'APLS':<{w}}{val(self.apls):>10}",
                f"{'  truth -> pred':<{w}}{val(self.truth_to_pred.score):>10}"
                f"  ({way(self.truth_to_pred)})",
                f"{'  pred -> truth':<{w}}{val(self.pred_to_truth.score):>10}"
                f"  ({way(self.pred_to_truth)})",
                f"{f'precision ({self.buffer_m:g} m)':<{w}}{val(self.precision):>10}",
                f"{f'recall ({self.buffer_m:g} m)':<{w}}{val(self.recall):>10}",
                f"{'F1':<{w}}{val(self.f1):>10}",
                f"{'truth length m':<{w}}{self.truth_length_m:>10.1f}",
                f"{'pred length m':<{w}}{self.pred_length_m:>10.1f}",
            ]
        )


def score_roads(
    pred_lines: Iterable[BaseGeometry | None],
    truth_lines: Iterable[BaseGeometry | None],
    *,
    buffer: float = EvaluateOptions.road_buffer,
    snap: float = EvaluateOptions.road_snap,
    spacing: float = EvaluateOptions.road_spacing,
    max_pairs: int = EvaluateOptions.road_max_pairs,
    min_path_length: float = MIN_PATH_LENGTH_M,
    unit: float = 1.0,
) -> RoadMetrics:
    """APLS and buffer precision / recall of predicted road lines against the truth.

    Args:
        pred_lines: Predicted centre-lines (projected CRS).
        truth_lines: Reference centre-lines, same CRS.
        buffer: Precision / recall buffer, m.
        snap: APLS snap distance, m.
        spacing: APLS control point spacing, m.
        max_pairs: Most routes scored per APLS direction.
        min_path_length: Shortest route scored, m.
        unit: Metres per CRS unit.

    Returns:
        The scores.

    Raises:
        InputError: A geometry is not a line, or an option is out of range.
    """
    if not unit > 0:
        raise InputError(f"unit={unit}: metres per CRS unit must be > 0")
    pred, truth = road_graph(pred_lines), road_graph(truth_lines)
    t2p, p2t = (
        apls_direction(
            a,
            b,
            spacing=spacing / unit,
            snap=snap / unit,
            min_path_length=min_path_length / unit,
            max_pairs=max_pairs,
        )
        for a, b in ((truth, pred), (pred, truth))
    )
    pm, tm = buffer_lengths(pred, truth, buffer / unit)
    metrics = RoadMetrics(
        truth_to_pred=t2p,
        pred_to_truth=p2t,
        truth_length_m=truth.length * unit,
        pred_length_m=pred.length * unit,
        truth_matched_m=tm * unit,
        pred_matched_m=pm * unit,
        truth_graph=(len(truth.nodes), len(truth.edges)),
        pred_graph=(len(pred.nodes), len(pred.edges)),
        buffer_m=buffer,
        snap_m=snap,
        spacing_m=spacing,
        min_path_m=min_path_length,
        max_pairs=max_pairs,
    )
    logger.info(
        "roads: APLS %.4f (truth->pred %.4f, pred->truth %.4f), P %.4f R %.4f",
        metrics.apls,
        t2p.score,
        p2t.score,
        metrics.precision,
        metrics.recall,
    )
    return metrics
