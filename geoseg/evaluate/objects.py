"""Object (building) metrics: the SpaceNet greedy IoU matching rule.

Pure shapely/geopandas, no I/O (reading files is :func:`geoseg.evaluate.evaluate_vectors`).

The rule, as in the SpaceNet challenges and solaris' ``Evaluator``:

1. Empty or missing geometries are dropped on both sides. Truth polygons with
   ``area < min_area_truth`` and proposals with ``area <= min_area_proposal`` are dropped
   (the SpaceNet 2 rule "drop GT < 20 px², proposals <= 20 px²"; at the default 0 a proposal
   needs a positive area).
2. Proposals are visited by ``confidence_column`` descending (stable: ties keep input
   order), or in input order when no column is given.
3. Each proposal takes the unmatched truth polygon that intersects it with the highest IoU
   (ties: the first in truth order). If that IoU is ``> iou_threshold`` the pair is a true
   positive and the truth polygon is used up; otherwise (or when no unmatched truth polygon
   intersects it) the proposal is a false positive.
4. Unmatched truth polygons are false negatives.

Precision, recall and F1 follow solaris: all three are 0 when there is no true positive,
and ``F1 = 2PR / (P + R)``. Each match also carries its outline quality (C-IoU, N-ratio,
PoLiS) and the result the gap and overlap areas between the proposals
(:mod:`geoseg.evaluate.shapes`).

Invalid polygons are repaired with ``shapely.make_valid(method="structure")`` and counted in
a warning. Candidates come from an STRtree query and all IoUs are computed in one vectorised
shapely call, so the cost grows with the number of intersecting pairs, not with
``proposals x truth``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from geoseg.errors import InputError
from geoseg.evaluate.shapes import ShapeQuality, neighbour_gaps, pair_shape, shape_quality

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "GroupedObjectMetrics",
    "MatchPair",
    "ObjectMetrics",
    "match_objects",
    "match_objects_by_group",
]

logger = logging.getLogger(__name__)


class MatchPair(NamedTuple):
    """One true-positive pair.

    Attributes:
        proposal: Index label of the proposal row.
        truth: Index label of the truth row.
        iou: Their intersection over union.
    """

    proposal: Hashable
    truth: Hashable
    iou: float
    c_iou: float = math.nan
    n_ratio: float = math.nan
    polis: float = math.nan


@dataclass(frozen=True)
class ObjectMetrics:
    """Object-level counts and scores.

    Attributes:
        tp: True positives (matched pairs).
        fp: False positives (unmatched proposals).
        fn: False negatives (unmatched truth polygons).
        matches: The matched pairs, in matching order.
        truth_iou: One value per truth row given (input order): the highest IoU the polygon
            reached as some proposal's best unmatched candidate (its match IoU when
            matched, 0 when never a candidate); NaN for rows dropped by the area filter or
            empty. This is SpaceNet's per-building ``iou_score``.
    """

    tp: int
    fp: int
    fn: int
    matches: tuple[MatchPair, ...] = ()
    truth_iou: npt.NDArray[np.float64] = field(
        default_factory=lambda: np.zeros(0), repr=False, compare=False
    )
    gap_area: float = 0.0
    overlap_area: float = 0.0

    def __post_init__(self) -> None:
        arr = np.array(self.truth_iou, dtype=np.float64)
        arr.flags.writeable = False
        object.__setattr__(self, "truth_iou", arr)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 0 when there is no true positive."""
        return self.tp / (self.tp + self.fp) if self.tp else 0.0

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 0 when there is no true positive."""
        return self.tp / (self.tp + self.fn) if self.tp else 0.0

    @property
    def f1(self) -> float:
        """2PR / (P + R) (the solaris formula, bit for bit); 0 when there is no true positive."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if self.tp else 0.0

    @property
    def mean_iou(self) -> float:
        """Mean IoU of the matched pairs (NaN when there is none)."""
        if not self.matches:
            return math.nan
        return float(np.mean([m.iou for m in self.matches]))

    @property
    def shapes(self) -> ShapeQuality:
        """Outline quality of the matches and the proposals' gaps and overlaps."""
        return shape_quality(
            [(m.c_iou, m.n_ratio, m.polis) for m in self.matches],
            self.gap_area,
            self.overlap_area,
        )

    @classmethod
    def combine(cls, parts: Iterable[ObjectMetrics]) -> ObjectMetrics:
        """Pool several results (e.g. images into an AOI): counts add, scores are recomputed.

        ``matches`` and ``truth_iou`` are concatenated in the order given.
        """
        items = list(parts)
        return cls(
            tp=sum(m.tp for m in items),
            fp=sum(m.fp for m in items),
            fn=sum(m.fn for m in items),
            matches=tuple(p for m in items for p in m.matches),
            truth_iou=np.concatenate([m.truth_iou for m in items]) if items else np.zeros(0),
            gap_area=sum(m.gap_area for m in items),
            overlap_area=sum(m.overlap_area for m in items),
        )

    def to_dict(self, *, include_matches: bool = True) -> dict[str, object]:
        """A JSON-able form (labels of matched rows are converted to str unless int)."""
        out: dict[str, object] = {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "mean_iou": None if math.isnan(self.mean_iou) else self.mean_iou,
            **self.shapes.to_dict(),
        }
        if include_matches:
            out["matches"] = [
                {
                    "proposal": _label(m.proposal),
                    "truth": _label(m.truth),
                    "iou": m.iou,
                    "c_iou": m.c_iou,
                    "polis": m.polis,
                }
                for m in self.matches
            ]
        return out

    def format_table(self) -> str:
        """A readable summary of counts and scores."""
        miou = "-" if math.isnan(self.mean_iou) else f"{self.mean_iou:.4f}"
        return "\n".join(
            [
                f"{'TP':<16}{self.tp:>10}",
                f"{'FP':<16}{self.fp:>10}",
                f"{'FN':<16}{self.fn:>10}",
                f"{'precision':<16}{self.precision:>10.4f}",
                f"{'recall':<16}{self.recall:>10.4f}",
                f"{'F1':<16}{self.f1:>10.4f}",
                f"{'mean IoU (TP)':<16}{miou:>10}",
                *([] if not self.matches else self.shapes.format_lines()),
            ]
        )


@dataclass(frozen=True)
class GroupedObjectMetrics:
    """Per-group results (e.g. per image) and their pooled total.

    Attributes:
        groups: Group value (as str) to its metrics, sorted by group.
        total: All groups pooled (counts summed; ``truth_iou`` in truth input order).
    """

    groups: dict[str, ObjectMetrics]
    total: ObjectMetrics

    def to_dict(self, *, include_matches: bool = False) -> dict[str, object]:
        """A JSON-able form."""
        return {
            "total": self.total.to_dict(include_matches=include_matches),
            "groups": {
                k: v.to_dict(include_matches=include_matches) for k, v in self.groups.items()
            },
        }


def _label(x: Hashable) -> int | str:
    if isinstance(x, int | np.integer):
        return int(x)
    return str(x)


def _geometries(frame: gpd.GeoDataFrame, role: str) -> npt.NDArray[np.object_]:
    """Geometries as an array, invalid ones repaired; raise on non-polygons."""
    geoms = np.asarray(frame.geometry.values, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    types = shapely.get_type_id(geoms[present])
    # 3 = Polygon, 6 = MultiPolygon
    bad = ~np.isin(types, (3, 6))
    if bad.any():
        kinds = ", ".join(sorted({g.geom_type for g in geoms[present][bad]}))
        raise InputError(
            f"{role}: {int(bad.sum())} geometries are not polygons ({kinds}); "
            "pass polygon layers (building footprints)"
        )
    invalid = present.copy()
    invalid[present] = ~shapely.is_valid(geoms[present])
    if invalid.any():
        logger.warning("%s: repaired %d invalid polygons with make_valid", role, int(invalid.sum()))
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(
            geoms[invalid], method="structure", keep_collapsed=False
        )
    return geoms


def _keep(geoms: npt.NDArray[np.object_], min_area: float, *, strict: bool) -> npt.NDArray:
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    area = np.zeros(len(geoms))
    area[present] = shapely.area(geoms[present])
    big = area > min_area if strict else area >= min_area
    return np.flatnonzero(present & big)


def _order(proposals: gpd.GeoDataFrame, confidence_column: str | None) -> npt.NDArray[np.intp]:
    n = len(proposals)
    if confidence_column is None:
        return np.arange(n)
    if confidence_column not in proposals.columns:
        raise InputError(
            f"proposals have no column {confidence_column!r}; columns: "
            f"{', '.join(map(str, proposals.columns))}"
        )
    conf = pd.to_numeric(proposals[confidence_column], errors="coerce").to_numpy(float)
    if np.isnan(conf).any() and not proposals[confidence_column].isna().all():
        n_bad = int(np.isnan(conf).sum())
        logger.warning(
            "column %r: %d proposals without a numeric confidence are visited last",
            confidence_column,
            n_bad,
        )
    # Stable descending order; NaN sorts last.
    key = np.where(np.isnan(conf), np.inf, -conf)
    return np.argsort(key, kind="stable")


def _greedy(
    prop: npt.NDArray[np.object_],
    order: npt.NDArray[np.intp],
    truth: npt.NDArray[np.object_],
    iou_threshold: float,
) -> tuple[list[tuple[int, int, float]], npt.NDArray[np.float64]]:
    """Greedy matching on positions. Returns (matched (p, t, iou) list, truth best IoU)."""
    n_t = len(truth)
    best_iou = np.zeros(n_t)
    pairs: list[tuple[int, int, float]] = []
    if len(prop) == 0 or n_t == 0:
        return pairs, best_iou
    tree = shapely.STRtree(truth)
    pi, ti = tree.query(prop, predicate="intersects")
    a, b = prop[pi], truth[ti]
    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(shapely.union(a, b))
    iou = np.divide(inter, union, out=np.zeros(len(pi)), where=union > 0)
    srt = np.lexsort((ti, pi))
    pi, ti, iou = pi[srt], ti[srt], iou[srt]
    bounds = np.searchsorted(pi, np.arange(len(prop) + 1)).tolist()
    cand = ti.tolist()
    ious = iou.tolist()
    matched = [False] * n_t
    best = best_iou.tolist()
    for p in order.tolist():
        t_best = -1
        v_best = -1.0
        for k in range(bounds[p], bounds[p + 1]):
            t = cand[k]
            if not matched[t] and ious[k] > v_best:
                t_best, v_best = t, ious[k]
        if t_best < 0:
            continue
        if v_best > best[t_best]:
            best[t_best] = v_best
        if v_best > iou_threshold:
            matched[t_best] = True
            pairs.append((p, t_best, v_best))
    return pairs, np.asarray(best, dtype=np.float64)


def _check_options(iou_threshold: float, min_area_truth: float, min_area_proposal: float) -> None:
    if not 0.0 <= iou_threshold < 1.0:
        raise InputError(f"iou_threshold={iou_threshold} must be in [0, 1)")
    if min_area_truth < 0 or min_area_proposal < 0:
        raise InputError(
            f"minimum areas must be >= 0, got {min_area_truth} (truth), "
            f"{min_area_proposal} (proposals)"
        )


def _match_positions(
    pgeoms: npt.NDArray[np.object_],
    porder: npt.NDArray[np.intp],
    tgeoms: npt.NDArray[np.object_],
    p_labels: pd.Index,
    t_labels: pd.Index,
    *,
    iou_threshold: float,
    min_area_truth: float,
    min_area_proposal: float,
) -> ObjectMetrics:
    """Match one set (one image): ``porder`` are proposal positions in visiting order."""
    t_keep = _keep(tgeoms, min_area_truth, strict=False)
    p_keep_mask = np.zeros(len(pgeoms), dtype=bool)
    p_keep_mask[_keep(pgeoms, min_area_proposal, strict=True)] = True
    porder = porder[p_keep_mask[porder]]
    # Re-index kept proposals densely, preserving the visiting order.
    p_sel = np.flatnonzero(p_keep_mask)
    dense = np.full(len(pgeoms), -1, dtype=np.intp)
    dense[p_sel] = np.arange(len(p_sel))
    pairs, best = _greedy(pgeoms[p_sel], dense[porder], tgeoms[t_keep], iou_threshold)
    truth_iou = np.full(len(tgeoms), np.nan)
    truth_iou[t_keep] = best
    kept_p, kept_t = pgeoms[p_sel], tgeoms[t_keep]
    matches = tuple(
        MatchPair(
            p_labels[p_sel[p]], t_labels[t_keep[t]], float(v), *pair_shape(kept_p[p], kept_t[t], v)
        )
        for p, t, v in pairs
    )
    gap, overlap = neighbour_gaps(kept_p)
    tp = len(pairs)
    return ObjectMetrics(
        tp=tp,
        fp=len(p_sel) - tp,
        fn=len(t_keep) - tp,
        matches=matches,
        truth_iou=truth_iou,
        gap_area=gap,
        overlap_area=overlap,
    )


def match_objects(
    proposals: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    *,
    iou_threshold: float = 0.5,
    confidence_column: str | None = None,
    min_area_truth: float = 0.0,
    min_area_proposal: float = 0.0,
) -> ObjectMetrics:
    """Match proposal polygons to truth polygons with the SpaceNet rule (see module docs).

    Both frames must be in the same coordinate system (no CRS check or reprojection here;
    :func:`geoseg.evaluate.evaluate_vectors` does that when reading files).

    Args:
        proposals: Predicted polygons (Polygon/MultiPolygon; empty rows are ignored).
        truth: Reference polygons.
        iou_threshold: A pair matches when its IoU is strictly greater than this.
        confidence_column: Column of ``proposals`` to visit by, descending; input order
            when None.
        min_area_truth: Truth polygons with a smaller area are dropped (``area < min``).
        min_area_proposal: Proposals with an area ``<= min`` are dropped.

    Returns:
        Counts, scores, matched pairs and per-truth best IoU.

    Raises:
        InputError: Non-polygon geometries, a missing confidence column or bad options.
    """
    _check_options(iou_threshold, min_area_truth, min_area_proposal)
    pgeoms = _geometries(proposals, "proposals")
    tgeoms = _geometries(truth, "truth")
    order = _order(proposals, confidence_column)
    return _match_positions(
        pgeoms,
        order,
        tgeoms,
        proposals.index,
        truth.index,
        iou_threshold=iou_threshold,
        min_area_truth=min_area_truth,
        min_area_proposal=min_area_proposal,
    )


def match_objects_by_group(
    proposals: gpd.GeoDataFrame,
    truth: gpd.GeoDataFrame,
    *,
    group_column: str = "ImageId",
    iou_threshold: float = 0.5,
    confidence_column: str | None = None,
    min_area_truth: float = 0.0,
    min_area_proposal: float = 0.0,
) -> GroupedObjectMetrics:
    """Run :func:`match_objects` separately within each group (e.g. per image).

    Groups are the union of the values of ``group_column`` in both frames (compared as
    strings): proposals of a group without truth are all false positives, truth of a group
    without proposals all false negatives.

    Args:
        proposals: Predicted polygons with ``group_column``.
        truth: Reference polygons with ``group_column``.
        group_column: Column naming the group of each row.
        iou_threshold: See :func:`match_objects`.
        confidence_column: See :func:`match_objects`.
        min_area_truth: See :func:`match_objects`.
        min_area_proposal: See :func:`match_objects`.

    Returns:
        Per-group metrics and their pooled total.

    Raises:
        InputError: A missing group or confidence column, non-polygons or bad options.
    """
    _check_options(iou_threshold, min_area_truth, min_area_proposal)
    for role, frame in (("proposals", proposals), ("truth", truth)):
        if group_column not in frame.columns:
            raise InputError(
                f"{role} have no column {group_column!r}; columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
    pgeoms = _geometries(proposals, "proposals")
    tgeoms = _geometries(truth, "truth")
    order = _order(proposals, confidence_column)
    pkey = proposals[group_column].astype(str).to_numpy()
    tkey = truth[group_column].astype(str).to_numpy()
    rank = np.empty(len(order), dtype=np.intp)
    rank[order] = np.arange(len(order))
    groups: dict[str, ObjectMetrics] = {}
    truth_iou = np.full(len(tgeoms), np.nan)
    keys, inverse = np.unique(np.concatenate([pkey, tkey]).astype(str), return_inverse=True)
    inverse = inverse.reshape(-1)
    pgroups = _split_by(inverse[: len(pkey)], len(keys))
    tgroups = _split_by(inverse[len(pkey) :], len(keys))
    for g, key in enumerate(keys.tolist()):
        p_pos, t_pos = pgroups[g], tgroups[g]
        local_order = np.argsort(rank[p_pos], kind="stable")
        m = _match_positions(
            pgeoms[p_pos],
            local_order,
            tgeoms[t_pos],
            proposals.index[p_pos],
            truth.index[t_pos],
            iou_threshold=iou_threshold,
            min_area_truth=min_area_truth,
            min_area_proposal=min_area_proposal,
        )
        groups[key] = m
        truth_iou[t_pos] = m.truth_iou
    pooled = ObjectMetrics.combine(groups.values())
    total = ObjectMetrics(pooled.tp, pooled.fp, pooled.fn, pooled.matches, truth_iou)
    return GroupedObjectMetrics(groups=groups, total=total)


def _split_by(group: npt.NDArray[np.intp], n: int) -> list[npt.NDArray[np.intp]]:
    """Positions of each group 0..n-1, ascending."""
    order = np.argsort(group, kind="stable")
    return np.split(order, np.cumsum(np.bincount(group, minlength=n))[:-1])
