"""Benchmark: block-wise vectorization against the naive whole-raster approach.

:func:`bench_vectorize` writes a synthetic ``size`` x ``size`` class map (tiled GeoTIFF,
generated block by block: parcels of classes, rectangular buildings that cross block
borders, 1 % speckle), then runs, each in a fresh subprocess so that peak memory
(``ru_maxrss``) is its own:

* ``geoseg``: :func:`geoseg.vectorize.vectorize_raster` (buildings + roads, GeoPackage);
* ``naive``: read the whole raster, ``rasterio.features.shapes`` per class, shapely
  polygons, one GeoPackage write per layer (what most scripts do).

Run it with ``python -c "from geoseg.vectorize._bench import bench_vectorize as b;
print(b(20000, 'bench'))"``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

__all__ = ["bench_vectorize", "synthetic_class_map"]


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


_GEOSEG = """
import json, resource, sys, time
from geoseg.vectorize import VectorizeOptions, vectorize_raster
t = time.perf_counter()
rep = vectorize_raster(sys.argv[1], sys.argv[2], options=VectorizeOptions(
    block_size=int(sys.argv[3]), workers=int(sys.argv[4]), overwrite=True))
print(json.dumps({"seconds": time.perf_counter() - t, "layers": rep.layers,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_mb_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "max_pending": rep.max_pending}))
"""

_NAIVE = """
import json, resource, sys, time
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
print(json.dumps({"seconds": time.perf_counter() - t, "layers": layers,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench_vectorize(
    size: int, workdir: Path, *, block_size: int = 2048, workers: int = 2, seed: int = 0
) -> dict[str, object]:
    """Measure geoseg's block-wise vectorization and the naive approach on one raster.

    Args:
        size: Raster edge in pixels (e.g. 20000).
        workdir: Where the raster and outputs go.
        block_size: geoseg block size.
        workers: geoseg threads.
        seed: Synthetic data seed.

    Returns:
        ``{"size", "megapixels", "geoseg": {...}, "naive": {...}}`` with, per method,
        seconds, Mpx/s, peak resident memory in MB (``peak_mb``: the main process;
        ``peak_mb_worker``: the largest worker process, geoseg only) and feature counts.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    raster = workdir / f"classes_{size}.tif"
    if not raster.exists():
        synthetic_class_map(raster, size, seed=seed)
    mpx = size * size / 1e6
    out: dict[str, object] = {"size": size, "megapixels": mpx}
    for name, code, args in (
        ("geoseg", _GEOSEG, (str(block_size), str(workers))),
        ("naive", _NAIVE, ()),
    ):
        target = workdir / f"{name}_{size}.gpkg"
        target.unlink(missing_ok=True)
        res = _run(code, str(raster), str(target), *args)
        res["mpx_per_s"] = mpx / float(str(res["seconds"]))
        out[name] = res
    return out
