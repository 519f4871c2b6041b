"""The tile store on disk: its options file, the chips' records, the index, chip reads.

See :mod:`geoseg.tiles` for the layout of a store.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg._io import (
    atomic_path,
    ignoring,
)
from geoseg.errors import InputError
from geoseg.options import ChipCompression, TileOptions
from geoseg.raster.tags import ChipTags
from geoseg.schema import IGNORE, ClassSchema

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "CHIP_COMPRESSION",
    "CONTACT_BAND",
    "LABEL_BAND",
    "STORE_VERSION",
    "ChipRecord",
    "ChipTargets",
    "chip_has_contact",
    "chip_name",
    "read_chip",
    "read_chip_masked",
    "read_chip_targets",
    "read_meta",
    "read_store",
    "record_from_chip",
    "store_contact",
    "store_meta",
    "write_index",
]

CHIP_COMPRESSION: tuple[str, ...] = get_args(ChipCompression)
"""GeoTIFF compressions a chip store may use."""

logger = logging.getLogger("geoseg.tiles")

STORE_VERSION = 1
LABEL_BAND = "label"
CONTACT_BAND = "contact"
"""The chip band of the contact target (after ``label``): 0/1, 255 where the scene is nodata."""


@dataclass(frozen=True)
class ChipRecord:
    """One row of the index."""

    path: str
    scene: str
    col_off: int
    row_off: int
    width: int
    height: int
    valid_fraction: float
    histogram: tuple[int, ...]
    ignored: int
    footprint: tuple[float, float, float, float]
    crs: str
    contact: int = -1
    """Contact pixels of the chip's ``contact`` band; -1 when it has none."""


def store_meta(opts: TileOptions, bands: Sequence[str], schema: ClassSchema, labels: bool) -> dict:
    """The options file (``tiles.json``) of a store cut with ``opts``.

    A store with a contact target records ``"contact": {"width_m": ..., "footprints": ...,
    "layer": ...}`` (:func:`store_contact`); a store without one has no ``contact`` key.
    """
    from geoseg import __version__

    meta = {
        "format": "geoseg-tiles",
        "version": STORE_VERSION,
        "size": opts.size,
        "overlap": opts.chip_overlap,
        "min_valid": opts.min_valid,
        "compress": opts.compress,
        "bands": list(bands),
        "labels": labels,
        "schema": schema.to_dict(),
        "geoseg_version": __version__,
    }
    if opts.footprints is not None:
        meta["contact"] = {
            "width_m": opts.contact_width,
            "footprints": str(Path(opts.footprints).resolve()),
            "layer": opts.footprints_layer,
        }
    return meta


def store_contact(meta: dict) -> bool:
    """Whether a store's options (``tiles.json``) say that its chips have a contact target."""
    return isinstance(meta.get("contact"), dict)


def chip_name(scene: str, window: Window) -> str:
    return f"chips/{scene}/{scene}_r{int(window.row_off)}_c{int(window.col_off)}.tif"


def read_meta(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "geoseg-tiles" else None


def record_from_chip(root: Path, path: str) -> ChipRecord:
    """The index row of a chip written earlier, from its tags."""
    with rasterio.open(root / path) as ds:
        chip = ChipTags.from_tags(ds.tags())
        col, row, w, h = chip.window
        return ChipRecord(
            path=path,
            scene=chip.scene,
            col_off=col,
            row_off=row,
            width=w,
            height=h,
            valid_fraction=chip.valid_fraction,
            histogram=chip.histogram,
            ignored=chip.ignored,
            footprint=tuple(ds.bounds),
            crs=ds.crs.to_string() if ds.crs else "",
            contact=-1 if chip.contact is None else chip.contact,
        )


def chip_has_contact(path: str | os.PathLike[str]) -> bool:
    """Whether a chip file has a ``contact`` band (its band descriptions; header only)."""
    with rasterio.open(path) as ds:
        return CONTACT_BAND in ds.descriptions


def write_index(
    records: Sequence[ChipRecord], path: Path, *, num_classes: int, crs: str | None = None
) -> None:
    """Write the chip index as a GeoPackage (layer ``chips``), atomically.

    Footprints are stored in the first chip's CRS (``crs`` when there is no chip); each row
    keeps its own CRS in ``crs``. An index without a CRS (scenes without one) is written
    without pyogrio's warning about it.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely
    from pyproj import CRS, Transformer

    rows = []
    geoms = []
    crs0 = (records[0].crs if records else crs) or None
    # typed columns, so that an index without rows reads back as one with rows
    kinds = {"str": "object", "int": "int64", "float": "float64"}
    dtypes = {
        f.name: kinds[str(f.type)]
        for f in fields(ChipRecord)
        if f.name not in ("footprint", "histogram")
    }
    dtypes |= {f"class_{i}": "int64" for i in range(num_classes)}
    for r in records:
        left, bottom, right, top = r.footprint
        geom = shapely.box(left, bottom, right, top)
        if crs0 and r.crs and r.crs != crs0:
            tr = Transformer.from_crs(CRS(r.crs), CRS(crs0), always_xy=True)
            geom = shapely.transform(geom, lambda xy, tr=tr: np.column_stack(tr.transform(*xy.T)))
        d = asdict(r)
        d.pop("footprint")
        hist = d.pop("histogram")
        for i in range(num_classes):
            d[f"class_{i}"] = int(hist[i]) if i < len(hist) else 0
        rows.append(d)
        geoms.append(geom)
    frame = pd.DataFrame(rows, columns=list(dtypes)).astype(dtypes)
    gdf = gpd.GeoDataFrame(frame, geometry=geoms, crs=crs0)
    with (
        atomic_path(path, overwrite=True) as tmp,
        ignoring(UserWarning, message="'crs' was not provided"),
    ):
        gdf.to_file(tmp, layer="chips", driver="GPKG", engine="pyogrio")


def read_store(root: str | os.PathLike[str]) -> tuple[dict, gpd.GeoDataFrame]:
    """The store's options (``tiles.json``) and index.

    Raises:
        InputError: ``root`` is not a geoseg tile store.
    """
    import geopandas as gpd

    root = Path(root)
    meta = read_meta(root / "tiles.json")
    if meta is None or not (root / "index.gpkg").exists():
        raise InputError(
            f"{root}: not a geoseg tile store (no tiles.json/index.gpkg); make one with "
            "`geoseg tile`"
        )
    return meta, gpd.read_file(root / "index.gpkg", layer="chips", engine="pyogrio")


@dataclass(frozen=True)
class ChipTargets:
    """A chip as read: image bands, validity and its targets.

    Attributes:
        image: float32 ``(C, h, w)`` image bands.
        valid: bool ``(h, w)``: the chip's dataset mask.
        labels: uint8 ``(h, w)`` classes, 255 = ignore (and wherever invalid); None without
            a ``label`` band.
        contact: uint8 ``(h, w)`` contact target 0/1, 255 = ignore (and wherever invalid);
            None without a ``contact`` band.
        names: The image band names.
    """

    image: np.ndarray
    valid: np.ndarray
    labels: np.ndarray | None
    contact: np.ndarray | None
    names: list[str]


def read_chip_targets(path: str | os.PathLike[str]) -> ChipTargets:
    """Read a chip with its targets (the ``label`` and ``contact`` bands, when present)."""
    with rasterio.open(path) as ds:
        names = [d or f"band{i}" for i, d in enumerate(ds.descriptions, start=1)]
        data = ds.read(out_dtype=np.float32)
        valid = ds.dataset_mask() > 0
    targets: dict[str, np.ndarray] = {}
    for band in (CONTACT_BAND, LABEL_BAND):  # stored last: label, then contact
        if names and names[-1] == band:
            targets[band] = np.where(valid, data[-1], IGNORE).astype(np.uint8)
            data, names = data[:-1], names[:-1]
    return ChipTargets(
        image=data,
        valid=valid,
        labels=targets.get(LABEL_BAND),
        contact=targets.get(CONTACT_BAND),
        names=names,
    )


def read_chip_masked(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Read a chip: image bands (float32), validity, labels (uint8, 255 = ignore) or None, names.

    A ``contact`` band is not an image band: it is left out (see :func:`read_chip_targets`).
    """
    chip = read_chip_targets(path)
    return chip.image, chip.valid, chip.labels, chip.names


def read_chip(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a chip: image bands (float32), labels (uint8, 255 = ignore) or None, band names."""
    data, _, lab, names = read_chip_masked(path)
    return data, lab, names
