"""Class rasters to clean, GIS-ready polygons (buildings, roads) and road centre-lines.

The raster is read block by block (worker processes; each opens the file itself) and
polygonized in pixel coordinates; polygons that cross internal block borders are joined
exactly (:mod:`geoseg.vectorize._polygonize`), so the output does not depend on the block
size. Block rows are consumed in order and only polygons touching the current border stay
in memory; final polygons are cleaned (:mod:`._clean`: hole filling, arc-wise
topology-preserving simplification), optionally regularized (:mod:`._regularize`),
measured and transformed to map coordinates (:mod:`._features`) and appended to the output
in batches (:mod:`._write`). :mod:`._run` drives these steps; :mod:`._options` holds the
option and report records.

Outputs:

* ``gpkg``: one GeoPackage with layers ``buildings``, ``roads`` (one per requested class)
  and ``road_centerlines`` (with ``centerlines``), and a default QGIS style per layer in
  its ``layer_styles`` table.
* ``parquet``: a directory with one GeoParquet file per layer, ``<layer>.parquet``.

Example:
    >>> from geoseg.vectorize import VectorizeOptions, vectorize_raster
    >>> vectorize_raster("classes.tif", "out.gpkg",
    ...                  options=VectorizeOptions(min_area=2.0))  # doctest: +SKIP
"""

from __future__ import annotations

from geoseg.vectorize._options import VectorizeOptions, VectorizeReport
from geoseg.vectorize._run import vectorize_raster

__all__ = ["VectorizeOptions", "VectorizeReport", "vectorize_raster"]
