"""Pixel metrics: confusion matrices, the eroded-boundary mask and derived scores.

Pure numpy (plus :mod:`scipy.ndimage` for the boundary mask); no I/O. Streaming over
rasters lives in :mod:`geoseg.evaluate`.

Conventions:

* A confusion matrix has rows = truth and columns = prediction, ``int64`` counts.
* Pixels where either the truth or the prediction is :data:`~geoseg.schema.IGNORE` (255)
  or any value outside ``0..num_classes-1`` are not counted.
* A score that is undefined (0/0) is ``NaN`` in the arrays and ``null`` in :meth:`to_dict`;
  means skip undefined values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from geoseg.errors import InputError, SchemaError
from geoseg.schema import IGNORE

__all__ = ["PixelMetrics", "boundary_mask", "confusion_matrix"]

FloatArray = npt.NDArray[np.float64]


def confusion_matrix(
    pred: npt.ArrayLike,
    truth: npt.ArrayLike,
    *,
    num_classes: int,
    valid: npt.ArrayLike | None = None,
) -> npt.NDArray[np.int64]:
    """Count (truth, prediction) class pairs.

    Args:
        pred: Predicted class indices, any integer dtype and shape.
        truth: True class indices, the same shape as ``pred``.
        num_classes: Number of classes ``C`` (1..254).
        valid: Optional boolean mask of the same shape; pixels where it is False are not
            counted.

    Returns:
        A ``(C, C)`` ``int64`` matrix, rows = truth, columns = prediction. Pixels where
        either value is 255 (ignore), negative or ``>= num_classes`` are not counted.

    Raises:
        InputError: When the shapes differ, an array is not integer, or ``num_classes`` is
            out of range.
    """
    p = np.asarray(pred)
    t = np.asarray(truth)
    if not 1 <= num_classes < IGNORE:
        raise InputError(f"num_classes={num_classes} is out of range; use 1..{IGNORE - 1}")
    if p.shape != t.shape:
        raise InputError(
            f"prediction shape {p.shape} differs from truth shape {t.shape}; "
            "pass arrays of the same grid"
        )
    for name, a in (("prediction", p), ("truth", t)):
        if not np.issubdtype(a.dtype, np.integer):
            raise InputError(f"{name} dtype {a.dtype} is not an integer class array")
    keep = (t < num_classes) & (p < num_classes)
    if np.issubdtype(t.dtype, np.signedinteger):
        keep &= t >= 0
    if np.issubdtype(p.dtype, np.signedinteger):
        keep &= p >= 0
    if valid is not None:
        v = np.asarray(valid, dtype=bool)
        if v.shape != p.shape:
            raise InputError(f"valid mask shape {v.shape} differs from array shape {p.shape}")
        keep &= v
    # Codes fit uint16 (C <= 254); excluded pixels go to an extra bin that is dropped.
    # Masking is cheaper than compacting with t[keep].
    cc = num_classes * num_classes
    code = t.astype(np.uint16) * np.uint16(num_classes) + p.astype(np.uint16)
    code[~keep] = cc
    counts = np.bincount(code.ravel(), minlength=cc + 1)[:cc]
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def boundary_mask(
    truth: npt.ArrayLike, radius: int, *, ignore: int = IGNORE
) -> npt.NDArray[np.bool_]:
    """Pixels within ``radius`` px of a class boundary (the ISPRS eroded-boundary protocol).

    Definition, exactly:

    * A *boundary pixel* is a pixel whose value is not ``ignore`` and that has at least one
      4-neighbour (up, down, left, right) with a different value that is also not ``ignore``.
      Both pixels on either side of a class edge are boundary pixels. Neighbours equal to
      ``ignore`` (255) do **not** create boundaries: an ignore area is already unscored, and
      eroding around it again would widen it twice (the black bands of the ISPRS
      ``_noBoundary`` labels are exactly such areas). The raster edge is not a boundary.
    * A pixel is masked when the Euclidean distance between its centre and the centre of the
      nearest boundary pixel is at most ``radius - 0.5``. A boundary pixel's centre is half a
      pixel from the edge, so this is "within ``radius`` px of the class edge": for a straight
      edge, the ``radius`` pixels on each side are masked (a band ``2 * radius`` px wide),
      as eroding every class region by a disc of radius ``radius`` does.
    * ``radius == 0`` masks nothing.

    The mask at a pixel depends only on the input within ``radius`` pixels of it, so a block
    read with a halo of ``radius`` pixels gives the same mask in its core as the whole image.

    Args:
        truth: 2-D class raster.
        radius: Erosion radius in pixels (>= 0).
        ignore: The value that never forms boundaries.

    Returns:
        Boolean array of ``truth``'s shape, True where pixels are to be excluded.

    Raises:
        InputError: When ``truth`` is not 2-D or ``radius`` is negative.
    """
    t = np.asarray(truth)
    if t.ndim != 2:
        raise InputError(f"boundary_mask needs a 2-D class raster, got shape {t.shape}")
    if radius < 0:
        raise InputError(f"radius={radius} must be >= 0")
    out = np.zeros(t.shape, dtype=bool)
    if radius == 0 or t.size == 0:
        return out
    known = t != ignore
    # Horizontal and vertical neighbour pairs that differ and are both known.
    dh = (t[:, 1:] != t[:, :-1]) & known[:, 1:] & known[:, :-1]
    dv = (t[1:, :] != t[:-1, :]) & known[1:, :] & known[:-1, :]
    edge = np.zeros(t.shape, dtype=bool)
    edge[:, 1:] |= dh
    edge[:, :-1] |= dh
    edge[1:, :] |= dv
    edge[:-1, :] |= dv
    if radius == 1 or not edge.any():
        return edge
    # Disc footprint: offsets with dy^2 + dx^2 <= (radius - 0.5)^2, i.e. <= radius^2 - radius.
    r = radius - 1
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    footprint = yy * yy + xx * xx <= radius * radius - radius
    return np.asarray(ndimage.binary_dilation(edge, structure=footprint), dtype=bool)


def _ratio(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.full(num.shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _nanmean(values: FloatArray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True)
class PixelMetrics:
    """Scores derived from a confusion matrix.

    Per-class arrays are in class order; an undefined value is NaN:

    * ``precision`` is NaN for a class never predicted, ``recall`` for a class absent from
      the truth;
    * ``f1`` (``2TP / (2TP + FP + FN)``) and ``iou`` (``TP / (TP + FP + FN)``) are NaN only
      for a class absent from both truth and prediction. Such a class is excluded from the
      means and reported as ``null``.

    Attributes:
        class_names: Class names, index order.
        confusion: ``(C, C)`` counts, rows = truth, columns = prediction (read-only).
        ignore_classes: Names excluded from ``miou`` and ``mean_f1`` (ISPRS reports means
            without ``clutter``); they still count in ``overall_accuracy``.
    """

    class_names: tuple[str, ...]
    confusion: npt.NDArray[np.int64] = field(repr=False, compare=False)
    ignore_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cm = np.array(self.confusion, dtype=np.int64)
        n = len(self.class_names)
        if cm.shape != (n, n):
            raise InputError(
                f"confusion matrix shape {cm.shape} does not fit {n} class names; "
                f"expected ({n}, {n})"
            )
        if (cm < 0).any():
            raise InputError("confusion matrix has negative counts")
        for name in self.ignore_classes:
            if name not in self.class_names:
                raise SchemaError(
                    f"ignored class {name!r} is not a class; known: {', '.join(self.class_names)}"
                )
        cm.flags.writeable = False
        object.__setattr__(self, "confusion", cm)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "ignore_classes", tuple(self.ignore_classes))

    @classmethod
    def from_confusion(
        cls,
        confusion: npt.ArrayLike,
        class_names: Sequence[str],
        *,
        ignore_classes: Sequence[str] = (),
    ) -> PixelMetrics:
        """Build metrics from a confusion matrix and class names.

        Args:
            confusion: ``(C, C)`` counts, rows = truth, columns = prediction.
            class_names: ``C`` class names.
            ignore_classes: Names excluded from the means.

        Raises:
            InputError: When the matrix does not fit the names.
            SchemaError: When an ignored class is not in ``class_names``.
        """
        return cls(tuple(class_names), np.asarray(confusion), tuple(ignore_classes))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def pixel_count(self) -> int:
        """Pixels counted (all classes, ignore pixels excluded)."""
        return int(self.confusion.sum())

    @cached_property
    def true_positives(self) -> npt.NDArray[np.int64]:
        """Per-class true positives (the diagonal)."""
        return np.diagonal(self.confusion).astype(np.int64)

    @cached_property
    def support(self) -> npt.NDArray[np.int64]:
        """Per-class truth pixel counts (row sums)."""
        return self.confusion.sum(axis=1)

    @cached_property
    def predicted(self) -> npt.NDArray[np.int64]:
        """Per-class predicted pixel counts (column sums)."""
        return self.confusion.sum(axis=0)

    @cached_property
    def precision(self) -> FloatArray:
        """Per-class precision ``TP / predicted`` (NaN when never predicted)."""
        return _ratio(self.true_positives.astype(float), self.predicted.astype(float))

    @cached_property
    def recall(self) -> FloatArray:
        """Per-class recall ``TP / support`` (NaN when absent from the truth)."""
        return _ratio(self.true_positives.astype(float), self.support.astype(float))

    @cached_property
    def f1(self) -> FloatArray:
        """Per-class F1 ``2TP / (support + predicted)`` (NaN when absent from both)."""
        tp2 = 2.0 * self.true_positives.astype(np.float64)
        return _ratio(tp2, (self.support + self.predicted).astype(np.float64))

    @cached_property
    def iou(self) -> FloatArray:
        """Per-class IoU ``TP / (support + predicted - TP)`` (NaN when absent from both)."""
        tp = self.true_positives
        return _ratio(tp.astype(float), (self.support + self.predicted - tp).astype(float))

    @property
    def overall_accuracy(self) -> float:
        """Correct pixels / counted pixels over all classes (NaN when nothing was counted)."""
        total = self.pixel_count
        return float(self.true_positives.sum()) / total if total else math.nan

    @cached_property
    def _scored(self) -> npt.NDArray[np.bool_]:
        return np.array([n not in self.ignore_classes for n in self.class_names], dtype=bool)

    @property
    def miou(self) -> float:
        """Mean IoU over defined, non-ignored classes (NaN when there is none)."""
        return _nanmean(self.iou[self._scored])

    @property
    def mean_f1(self) -> float:
        """Mean F1 over defined, non-ignored classes (NaN when there is none)."""
        return _nanmean(self.f1[self._scored])

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form; undefined values are ``None``."""
        classes = []
        for i, name in enumerate(self.class_names):
            classes.append(
                {
                    "name": name,
                    "precision": _json_float(self.precision[i]),
                    "recall": _json_float(self.recall[i]),
                    "f1": _json_float(self.f1[i]),
                    "iou": _json_float(self.iou[i]),
                    "support": int(self.support[i]),
                    "predicted": int(self.predicted[i]),
                    "in_means": bool(self._scored[i]),
                }
            )
        return {
            "overall_accuracy": _json_float(self.overall_accuracy),
            "miou": _json_float(self.miou),
            "mean_f1": _json_float(self.mean_f1),
            "pixel_count": self.pixel_count,
            "ignore_classes": list(self.ignore_classes),
            "classes": classes,
            "confusion_matrix": self.confusion.tolist(),
        }

    def format_table(self) -> str:
        """A readable table: per-class precision, recall, F1, IoU (in %), then OA and means."""

        def pct(x: float) -> str:
            return "    -" if math.isnan(x) else f"{100 * x:5.2f}"

        width = max(12, *(len(n) for n in self.class_names)) + 2
        header = f"{'class':<{width}}{'prec%':>8}{'rec%':>8}{'F1%':>8}{'IoU%':>8}{'pixels':>14}"
        lines = [header, "-" * len(header)]
        for i, name in enumerate(self.class_names):
            label = name if self._scored[i] else f"{name}*"
            lines.append(
                f"{label:<{width}}{pct(self.precision[i]):>8}{pct(self.recall[i]):>8}"
                f"{pct(self.f1[i]):>8}{pct(self.iou[i]):>8}{int(self.support[i]):>14,}"
            )
        lines.append("-" * len(header))
        lines.append(f"{'OA':<{width}}{pct(self.overall_accuracy):>8}")
        lines.append(f"{'mean F1':<{width}}{pct(self.mean_f1):>8}")
        lines.append(f"{'mIoU':<{width}}{pct(self.miou):>8}")
        lines.append(f"{'pixels':<{width}}{self.pixel_count:>8,}")
        if self.ignore_classes:
            lines.append("* not in the means")
        return "\n".join(lines)
