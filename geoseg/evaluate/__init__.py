"""Scoring predictions against a reference: pixels, objects, the reports.

* :mod:`geoseg.evaluate.pixels`: confusion matrices, the ISPRS eroded-boundary mask and the
  scores derived from them (OA, per-class IoU and F1, mIoU); pure numpy.
* :mod:`geoseg.evaluate.objects`: object (building) precision, recall and F1 by the
  SpaceNet greedy IoU matching rule; pure shapely/geopandas. Imported on demand (it loads
  pandas), so it is not re-exported here.
* :mod:`geoseg.evaluate.roads`: road network metrics of centre-lines: APLS (SpaceNet; its
  graph math in :mod:`geoseg.evaluate.apls`) and length precision / recall within a buffer;
  pure shapely/scipy.
* :func:`evaluate_rasters`, :func:`evaluate_vectors` and :func:`evaluate_roads`
  (:mod:`geoseg.evaluate._run`): the same on files, raster blocks streamed, polygon and
  line layers read and aligned.
* :mod:`geoseg.evaluate.report`: the JSON report and the ``--min-*`` judge.

Example:
    >>> from geoseg.evaluate import evaluate_rasters
    >>> m = evaluate_rasters("pred.tif", "truth.tif", eroded=3)  # doctest: +SKIP
    >>> print(m.format_table())  # doctest: +SKIP
"""

from __future__ import annotations

from geoseg.evaluate._run import evaluate_rasters, evaluate_roads, evaluate_vectors
from geoseg.evaluate.pixels import PixelMetrics, boundary_mask, confusion_matrix
from geoseg.evaluate.report import below_minimum, write_report

__all__ = [
    "PixelMetrics",
    "below_minimum",
    "boundary_mask",
    "confusion_matrix",
    "evaluate_rasters",
    "evaluate_roads",
    "evaluate_vectors",
    "write_report",
]
