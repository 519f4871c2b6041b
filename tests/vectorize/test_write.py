"""geoseg.vectorize._write: the feature sink appends in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely


@pytest.mark.parametrize("fmt", ["gpkg", "parquet"])
def test_sink_appends_in_batches(tmp_path: Path, fmt: str) -> None:
    import geopandas as gpd
    from rasterio.crs import CRS

    from geoseg.vectorize._write import FeatureSink

    path = tmp_path / ("s.gpkg" if fmt == "gpkg" else "s")
    sink = FeatureSink(path, fmt, CRS.from_epsg(32633), batch=3)  # type: ignore[arg-type]
    sink.layer("boxes", "Polygon", {"class": "str", "area_m2": "float"})
    sink.layer("empty", "Polygon", {"class": "str", "area_m2": "float"})
    boxes = np.asarray([shapely.box(i, 0, i + 1, 1 + i) for i in range(10)], dtype=object)
    for chunk in np.array_split(np.arange(10), 4):
        sink.add_many(
            "boxes",
            boxes[chunk],
            {
                "class": np.full(len(chunk), "b", dtype=object),
                "area_m2": shapely.area(boxes[chunk]),
            },
        )
    assert sink.close() == {"boxes": 10, "empty": 0}
    if fmt == "gpkg":
        df = pyogrio.read_dataframe(path, layer="boxes")
        assert pyogrio.read_info(path, layer="empty")["features"] == 0
    else:
        df = gpd.read_parquet(path / "boxes.parquet")
        assert len(gpd.read_parquet(path / "empty.parquet")) == 0
    assert df.crs.to_epsg() == 32633
    assert sorted(df.area_m2) == sorted(shapely.area(boxes))
    assert shapely.equals(shapely.union_all(df.geometry.values), shapely.union_all(boxes))


@pytest.mark.parametrize("fmt", ["gpkg", "parquet"])
def test_sink_without_crs_writes_no_crs_and_warns_nothing(tmp_path: Path, fmt: str) -> None:
    """pyogrio warned "'crs' was not provided" (issue 11, class 7); warnings are errors here."""
    import geopandas as gpd

    from geoseg.vectorize._write import FeatureSink

    path = tmp_path / ("s.gpkg" if fmt == "gpkg" else "s")
    sink = FeatureSink(path, fmt, None, batch=2)  # type: ignore[arg-type]
    sink.layer("boxes", "Polygon", {"class": "str"})
    boxes = np.asarray([shapely.box(i, 0, i + 1, 1) for i in range(5)], dtype=object)
    sink.add_many("boxes", boxes, {"class": np.full(5, "b", dtype=object)})
    assert sink.close() == {"boxes": 5}
    if fmt == "gpkg":
        assert pyogrio.read_info(path, layer="boxes")["crs"] is None
        df = pyogrio.read_dataframe(path, layer="boxes")
    else:
        df = gpd.read_parquet(path / "boxes.parquet")
    assert df.crs is None and len(df) == 5
