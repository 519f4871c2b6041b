"""Incremental feature writers: GeoPackage layers (append per batch) or GeoParquet files.

Features are buffered per layer and flushed every ``batch`` features, so the writer holds
at most one batch per layer in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio.raw
import shapely
from rasterio.crs import CRS

__all__ = ["FeatureSink"]

GeomType = Literal["Polygon", "LineString"]

UNDEFINED_SRS = (
    'LOCAL_CS["Undefined SRS",LOCAL_DATUM["unknown",32767],UNIT["unknown",0],'
    'AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
)
"""The GeoPackage's own "Undefined SRS" (srs_id 99999): what GDAL writes for a layer without a
CRS, and what readers take as no CRS. Given explicitly, pyogrio does not warn that the CRS
is missing (geoseg says so itself, once, in its own words)."""


class _Layer:
    def __init__(self, name: str, geometry_type: GeomType, fields: dict[str, str]) -> None:
        self.name = name
        self.geometry_type = geometry_type
        self.fields = fields  # name -> "str" | "float"
        self.geoms: list[bytes] = []  # WKB
        self.values: dict[str, list[object]] = {f: [] for f in fields}
        self.count = 0
        self.created = False
        self.parquet: pq.ParquetWriter | None = None


class FeatureSink:
    """Writes features layer by layer into one GeoPackage or a folder of GeoParquet files.

    Args:
        path: The (temporary) output: a ``.gpkg`` file, or a directory for ``parquet``
            (one ``<layer>.parquet`` per layer).
        fmt: ``gpkg`` or ``parquet``.
        crs: CRS of the geometries (the raster's).
        batch: Features per flush. The first flush of a GeoPackage layer creates it and
            GDAL builds its spatial index in bulk; later flushes append, and every appended
            feature updates the index by trigger (2.7x slower on 92 000 polygons): the larger
            the batch, the more features take the fast path (50 000 polygons are about 20 MB).
        metadata: Key/values stored with each layer (GeoPackage metadata or Parquet
            key-value metadata).
    """

    def __init__(
        self,
        path: Path,
        fmt: Literal["gpkg", "parquet"],
        crs: CRS | None,
        *,
        batch: int = 50_000,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt
        self.crs = crs
        self.batch = batch
        self.metadata = metadata or {}
        self.layers: dict[str, _Layer] = {}
        if fmt == "parquet":
            path.mkdir(parents=True, exist_ok=True)

    def layer(self, name: str, geometry_type: GeomType, fields: dict[str, str]) -> None:
        """Declare a layer (it is written even if it gets no feature)."""
        self.layers[name] = _Layer(name, geometry_type, fields)

    def add_many(self, name: str, geoms: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Queue features of one layer.

        Args:
            name: The layer.
            geoms: WKB geometries (bytes), or shapely geometries.
            values: Attribute arrays aligned with ``geoms``.
        """
        if len(geoms) and not isinstance(geoms[0], bytes):
            geoms = shapely.to_wkb(geoms, output_dimension=2)
        lyr = self.layers[name]
        lyr.geoms.extend(geoms.tolist())
        for f in lyr.fields:
            col = values.get(f)
            lyr.values[f].extend([None] * len(geoms) if col is None else col.tolist())
        if len(lyr.geoms) >= self.batch:
            self._flush(lyr)

    def close(self) -> dict[str, int]:
        """Flush everything; returns the feature count per layer."""
        for lyr in self.layers.values():
            self._flush(lyr, final=True)
            if lyr.parquet is not None:
                lyr.parquet.close()
                lyr.parquet = None
        return {n: lyr.count for n, lyr in self.layers.items()}

    def _arrays(self, lyr: _Layer) -> list[np.ndarray]:
        out = []
        for f, kind in lyr.fields.items():
            vals = lyr.values[f]
            if kind == "str":
                out.append(np.asarray(vals, dtype=object))
            else:
                out.append(
                    np.asarray([np.nan if v is None else float(v) for v in vals], dtype=np.float64)  # type: ignore[arg-type]
                )
        return out

    def _flush(self, lyr: _Layer, *, final: bool = False) -> None:
        if not lyr.geoms and (lyr.created or not final):
            return
        wkb = lyr.geoms
        if self.fmt == "gpkg":
            self._flush_gpkg(lyr, np.asarray(wkb, dtype=object))
        else:
            self._flush_parquet(lyr, list(wkb))
        lyr.count += len(lyr.geoms)
        lyr.geoms = []
        lyr.values = {f: [] for f in lyr.fields}
        lyr.created = True

    def _flush_gpkg(self, lyr: _Layer, wkb: np.ndarray) -> None:
        pyogrio.raw.write(
            str(self.path),
            geometry=wkb,
            field_data=self._arrays(lyr),
            fields=list(lyr.fields),
            layer=lyr.name,
            driver="GPKG",
            geometry_type=lyr.geometry_type,
            crs=self.crs.to_wkt() if self.crs is not None else UNDEFINED_SRS,
            append=lyr.created,
            layer_metadata=None if lyr.created else self.metadata or None,
            layer_options={"SPATIAL_INDEX": "YES"}
            | ({} if self.crs is not None else {"SRID": "99999"}),
        )

    def _geo_metadata(self, lyr: _Layer) -> bytes:
        col: dict[str, object] = {
            "encoding": "WKB",
            "geometry_types": [lyr.geometry_type],
        }
        if self.crs is not None:
            import pyproj

            col["crs"] = pyproj.CRS.from_user_input(self.crs.to_wkt()).to_json_dict()
        else:
            col["crs"] = None
        return json.dumps(
            {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col}}
        ).encode()

    def _flush_parquet(self, lyr: _Layer, wkb: list[bytes]) -> None:
        arrays: list[pa.Array] = []
        names: list[str] = []
        for (f, kind), arr in zip(lyr.fields.items(), self._arrays(lyr), strict=False):
            arrays.append(pa.array(arr, type=pa.string() if kind == "str" else pa.float64()))
            names.append(f)
        arrays.append(pa.array(wkb, type=pa.binary()))
        names.append("geometry")
        table = pa.Table.from_arrays(arrays, names=names)
        if lyr.parquet is None:
            meta = {b"geo": self._geo_metadata(lyr)}
            meta.update({k.encode(): v.encode() for k, v in self.metadata.items()})
            schema = table.schema.with_metadata(meta)
            lyr.parquet = pq.ParquetWriter(self.path / f"{lyr.name}.parquet", schema)
        lyr.parquet.write_table(table.cast(lyr.parquet.schema))
