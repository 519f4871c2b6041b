"""Benchmarks: developer tools behind ``geoseg bench``, not part of the product.

* :mod:`~geoseg.bench.predict`: :func:`bench_predict` (model, read and end-to-end
  prediction throughput) and :func:`measure_predict_memory` (peak RSS of a prediction in
  a child process), on the synthetic scene of :mod:`~geoseg.bench.scene`;
* :mod:`~geoseg.bench.train`: :func:`bench_train` (training step, data loader and epoch
  throughput);
* :mod:`~geoseg.bench.quality`: :func:`bench_quality` (train within a time budget on
  synthetic scenes, score unseen ones);
* :mod:`~geoseg.bench.vectorize`: :func:`bench_vectorize` (geoseg's block-wise
  vectorization against the naive whole-raster approach).

The benchmarks call public helpers of the product only, so that they time the code that
runs (:mod:`geoseg._torch`, :mod:`geoseg.train`, :mod:`geoseg.predict`,
:mod:`geoseg.vectorize`).
"""

from __future__ import annotations

from geoseg.bench.predict import (
    BenchReport,
    MemoryReport,
    bench_predict,
    measure_predict_memory,
)
from geoseg.bench.quality import QualityReport, bench_quality
from geoseg.bench.scene import bench_scene, tiny_model
from geoseg.bench.train import TrainBenchReport, bench_store, bench_train
from geoseg.bench.vectorize import VectorizeBenchReport, bench_vectorize, synthetic_class_map

__all__ = [
    "BenchReport",
    "MemoryReport",
    "QualityReport",
    "TrainBenchReport",
    "VectorizeBenchReport",
    "bench_predict",
    "bench_quality",
    "bench_scene",
    "bench_store",
    "bench_train",
    "bench_vectorize",
    "measure_predict_memory",
    "synthetic_class_map",
    "tiny_model",
]
