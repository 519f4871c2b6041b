"""Benchmark: block-wise vectorization against the naive whole-raster approach.

:func:`bench_vectorize` writes a synthetic ``size`` x ``size`` class map
(:func:`synthetic_class_map`: a tiled GeoTIFF generated block by block, parcels of classes,
rectangular buildings that cross block borders, 1 % speckle), then runs, in the same run and
each in a fresh child process so that its peak memory is its own:

* ``geoseg``: :func:`geoseg.vectorize.vectorize_raster` (buildings + roads, GeoPackage);
* ``naive``: read the whole raster, ``rasterio.features.shapes`` per class, shapely
  polygons, one GeoPackage write per layer (what most scripts do).

Each child imports only what its approach needs and reports its wall time, its peak RSS
(``VmHWM``, reset by ``exec``) and, for geoseg, the peak RSS of its largest worker process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.errors import InputError

__all__ = ["ApproachResult", "VectorizeBenchReport", "bench_vectorize", "synthetic_class_map"]


@dataclass(frozen=True)
class ApproachResult:
    """One approach's measurements.

    Attributes:
        seconds: Wall time of the vectorization (imports excluded).
        mpx_s: Raster megapixels per second.
        peak_rss_mb: Peak resident memory of the child process (MiB).
        peak_worker_rss_mb: Peak resident memory of its largest worker process (MiB);
            None without worker processes (the naive approach, geoseg with one worker).
        layers: Features per layer.
    """

    seconds: float
    mpx_s: float
    peak_rss_mb: float
    peak_worker_rss_mb: float | None
    layers: dict[str, int]

    def line(self, name: str) -> str:
        """One summary line."""
        worker = (
            ""
            if self.peak_worker_rss_mb is None
            else f", largest worker {self.peak_worker_rss_mb:.0f} MiB"
        )
        counts = ", ".join(f"{k} {v}" for k, v in self.layers.items())
        return (
            f"{name:<7}: {self.mpx_s:9.2f} Mpx/s ({self.seconds:.1f} s), peak RSS "
            f"{self.peak_rss_mb:.0f} MiB{worker}; {counts}"
        )


@dataclass(frozen=True)
class VectorizeBenchReport:
    """geoseg's vectorization and the naive approach on one synthetic class map.

    Attributes:
        size: Raster edge in pixels.
        block_size: geoseg's block size.
        workers: geoseg's workers.
        megapixels: Raster megapixels.
        geoseg: :func:`geoseg.vectorize.vectorize_raster`.
        naive: Whole-raster ``rasterio.features.shapes`` + shapely.
    """

    size: int
    block_size: int
    workers: int
    megapixels: float
    geoseg: ApproachResult
    naive: ApproachResult

    def summary(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        return [
            f"class map {self.size}x{self.size} px ({self.megapixels:.1f} Mpx), geoseg block "
            f"{self.block_size}, {self.workers} worker(s)",
            self.geoseg.line("geoseg"),
            self.naive.line("naive"),
            f"geoseg / naive: {self.geoseg.mpx_s / self.naive.mpx_s:.2f}x the speed, "
            f"{self.geoseg.peak_rss_mb / self.naive.peak_rss_mb:.2f}x the peak RSS",
        ]


def _hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    h = (a.astype(np.uint64) * np.uint64(73856093)) ^ (b.astype(np.uint64) * np.uint64(19349663))
    h ^= np.uint64(seed * 83492791 + 1)
    h = (h ^ (h >> np.uint64(13))) * np.uint64(0x5BD1E995)
    return h ^ (h >> np.uint64(15))


def synthetic_class_map(path: Path, size: int, *, seed: int = 0, block: int = 1024) -> Path:
    """Write a ``size`` x ``size`` Potsdam-like class map, block by block (bounded memory)."""
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": "uint8",
        "nodata": 255,
        "crs": "EPSG:32633",
        "transform": Affine(0.05, 0, 360000.0, 0, -0.05, 5810000.0),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
    }
    rng = np.random.default_rng(seed)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, block):
            for c in range(0, size, block):
                h, w = min(block, size - r), min(block, size - c)
                yy, xx = np.mgrid[r : r + h, c : c + w]
                # Parcels 150-250 px of ground classes (roads = impervious 0, vegetation...).
                ground = np.array([0, 2, 3, 0, 5], dtype=np.uint8)
                parcel = _hash(xx // 211, yy // 173, seed) % np.uint64(len(ground))
                out = ground[parcel.astype(np.int64)]
                # Buildings: a rectangle in most 120 x 100 cells, offset so they straddle.
                cx, cy = (xx + 37) // 120, (yy + 53) // 100
                hc = _hash(cx, cy, seed + 1)
                x0 = (hc % np.uint64(50)).astype(np.int64)
                y0 = ((hc >> np.uint64(8)) % np.uint64(40)).astype(np.int64)
                bw = 20 + ((hc >> np.uint64(16)) % np.uint64(60)).astype(np.int64)
                bh = 20 + ((hc >> np.uint64(24)) % np.uint64(50)).astype(np.int64)
                lx, ly = (xx + 37) % 120, (yy + 53) % 100
                inside = (lx >= x0) & (lx < x0 + bw) & (ly >= y0) & (ly < y0 + bh)
                inside &= (hc >> np.uint64(32)) % np.uint64(5) != 0
                out[inside] = 1
                noise = rng.random((h, w)) < 0.01
                out[noise] = rng.integers(0, 6, int(noise.sum()), dtype=np.uint8)
                dst.write(out, 1, window=Window(c, r, w, h))
    return path


# The children: each a fresh interpreter that imports only what its approach needs, and
# prints one JSON line. Peak RSS is VmHWM (reset by exec), ru_maxrss where there is none.
_PEAK = """
import resource
def peak_mb():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

_GEOSEG = (
    _PEAK
    + """
import json, sys, time
import pyogrio  # the writer, imported before the clock as in the naive child
from geoseg.vectorize import VectorizeOptions, vectorize_raster
t = time.perf_counter()
rep = vectorize_raster(sys.argv[1], sys.argv[2], options=VectorizeOptions(
    block_size=int(sys.argv[3]), workers=int(sys.argv[4]), overwrite=True,
    min_building_area=0.0))  # the same polygons as the naive way: every one
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "layers": rep.layers, "peak_mb": peak_mb(),
                  "peak_mb_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""
)

_NAIVE = (
    _PEAK
    + """
import json, sys, time
import numpy as np, rasterio, rasterio.features, shapely, pyogrio.raw
t = time.perf_counter()
with rasterio.open(sys.argv[1]) as src:
    a = src.read(1); tr = src.transform; crs = src.crs.to_wkt()
layers = {}
for name, k in (("buildings", 1), ("roads", 0)):
    geoms = [shapely.geometry.shape(g) for g, v in
             rasterio.features.shapes(a, mask=a == k, connectivity=4, transform=tr)]
    arr = np.asarray(geoms, dtype=object)
    pyogrio.raw.write(sys.argv[2], geometry=shapely.to_wkb(arr), field_data=[shapely.area(arr)],
                      fields=["area_m2"], layer=name, driver="GPKG", geometry_type="Polygon",
                      crs=crs, append=False)
    layers[name] = len(geoms)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "layers": layers, "peak_mb": peak_mb(),
                  "peak_mb_worker": None}))
"""
)


def _run_child(name: str, code: str, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise InputError(
            f"the {name} vectorize measurement failed (exit {proc.returncode}): {tail[0]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench_vectorize(
    *,
    size: int = 20000,
    block_size: int = 2048,
    workers: int = 2,
    seed: int = 0,
    cache: str | os.PathLike[str] | None = None,
) -> VectorizeBenchReport:
    """Measure geoseg's block-wise vectorization and the naive approach on one raster.

    Args:
        size: Raster edge in pixels (e.g. 20000).
        block_size: geoseg's block size.
        workers: geoseg's workers.
        seed: Synthetic data seed.
        cache: Folder for the class map (reused when present) and the outputs (default: a
            temporary folder removed afterwards).

    Returns:
        Per approach: seconds, Mpx/s, peak RSS of the process and, for geoseg, of its largest
        worker, and feature counts.

    Raises:
        InputError: ``size`` below 64, or a child process failed.
    """
    if size < 64:
        raise InputError(f"--size {size}: a bench class map needs at least 64 px")
    own_cache = cache is None
    root = Path(tempfile.mkdtemp(prefix="geoseg-bench-")) if cache is None else Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    try:
        raster = root / f"classes_{size}_s{seed}.tif"
        if not raster.exists():
            tmp = raster.with_name(f".{raster.name}.partial")
            synthetic_class_map(tmp, size, seed=seed)
            tmp.replace(raster)
        mpx = size * size / 1e6
        results: dict[str, ApproachResult] = {}
        for name, code, args in (
            ("geoseg", _GEOSEG, (str(block_size), str(workers))),
            ("naive", _NAIVE, ()),
        ):
            target = root / f"{name}_{size}.gpkg"
            target.unlink(missing_ok=True)
            res = _run_child(name, code, str(raster), str(target), *args)
            target.unlink(missing_ok=True)
            seconds = float(res["seconds"])
            worker = res["peak_mb_worker"]  # 0 when geoseg ran without worker processes
            results[name] = ApproachResult(
                seconds=seconds,
                mpx_s=mpx / seconds,
                peak_rss_mb=float(res["peak_mb"]),
                peak_worker_rss_mb=float(worker) if worker else None,
                layers={str(k): int(v) for k, v in res["layers"].items()},
            )
        return VectorizeBenchReport(
            size=size,
            block_size=block_size,
            workers=workers,
            megapixels=mpx,
            geoseg=results["geoseg"],
            naive=results["naive"],
        )
    finally:
        if own_cache:
            shutil.rmtree(root, ignore_errors=True)
