"""GDAL VRT files: the one home for writing them.

A VRT is a small XML file that GDAL reads as a raster made of other rasters' pixels. geoseg
writes two kinds: a STAC item's band files stacked into one image (:mod:`.stac`) and many
files placed side by side into one mosaic (:mod:`.mosaic`). Both describe their bands as
:class:`VrtBand` values made of :class:`VrtSource` placements, turn them into XML with
:func:`vrt_xml` and write it once, named by its content, to a cache folder with
:func:`write_vrt` (``$GEOSEG_VRT_CACHE``, else ``$GEOSEG_STAC_CACHE``, else
``<tmp>/geoseg-vrt``). A :class:`~geoseg.raster.SceneSpec` then stays a set of paths that
any process can open. Each source records its size, type and block size, so opening the VRT
reads nothing from the sources until pixels are read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from geoseg._io import atomic_path
from geoseg.errors import InputError
from geoseg.raster.remote import RasterPath, file_stamp, is_remote, url_of

__all__ = [
    "GDAL_TYPES",
    "VrtBand",
    "VrtSource",
    "gdal_type",
    "vrt_cache_dir",
    "vrt_xml",
    "write_vrt",
]

logger = logging.getLogger("geoseg.raster")

GDAL_TYPES = {
    "uint8": "Byte",
    "int8": "Int8",
    "uint16": "UInt16",
    "int16": "Int16",
    "uint32": "UInt32",
    "int32": "Int32",
    "float32": "Float32",
    "float64": "Float64",
}
"""numpy pixel type name -> GDAL data type name, for the types a VRT band may have."""

_ENV_CACHE = ("GEOSEG_VRT_CACHE", "GEOSEG_STAC_CACHE")


def gdal_type(dtype: str, path: RasterPath) -> str:
    """The GDAL type name of numpy ``dtype``.

    Raises:
        InputError: The type has no VRT equivalent here (``path`` is named).
    """
    name = np.dtype(dtype).name
    if name not in GDAL_TYPES:
        raise InputError(f"{url_of(path)}: unsupported pixel type {name}")
    return GDAL_TYPES[name]


@dataclass(frozen=True)
class VrtSource:
    """One band of one file, placed whole at (``col``, ``row``) of the VRT.

    Attributes:
        path: The file (local path or GDAL path string).
        band: 1-based band index in the file.
        width: The file's width in pixels.
        height: The file's height in pixels.
        dtype: The band's numpy pixel type name.
        block: The band's internal block shape (rows, cols).
        col: Column of the file's first pixel in the VRT.
        row: Row of the file's first pixel in the VRT.
    """

    path: RasterPath
    band: int
    width: int
    height: int
    dtype: str
    block: tuple[int, int]
    col: int = 0
    row: int = 0

    @classmethod
    def of(
        cls,
        ds: rasterio.DatasetReader,
        band: int,
        *,
        col: int = 0,
        row: int = 0,
        path: RasterPath | None = None,
    ) -> VrtSource:
        """Band ``band`` of the open dataset ``ds`` (at ``path``), placed at (``col``, ``row``).

        ``path`` defaults to the dataset's name, made absolute when local.
        """
        by, bx = ds.block_shapes[band - 1]
        if path is None:
            path = ds.name if is_remote(ds.name) else Path(ds.name).resolve()
        return cls(
            path=path,
            band=band,
            width=ds.width,
            height=ds.height,
            dtype=np.dtype(ds.dtypes[band - 1]).name,
            block=(int(by), int(bx)),
            col=col,
            row=row,
        )


@dataclass(frozen=True)
class VrtBand:
    """One band of a VRT: its type, name, nodata value and sources (later ones on top).

    Attributes:
        dtype: numpy pixel type name of the band.
        sources: Where its pixels come from; pixels no source covers read as ``nodata``
            (0 without one).
        description: The band's name (its description), or empty.
        nodata: The band's nodata value, or None.
    """

    dtype: str
    sources: tuple[VrtSource, ...]
    description: str = ""
    nodata: float | None = None


def _source_xml(s: VrtSource) -> list[str]:
    gtype = gdal_type(s.dtype, s.path)
    by, bx = s.block
    return [
        "    <SimpleSource>",
        f'      <SourceFilename relativeToVRT="0">{escape(str(s.path))}</SourceFilename>',
        f"      <SourceBand>{s.band}</SourceBand>",
        f'      <SourceProperties RasterXSize="{s.width}" RasterYSize="{s.height}" '
        f'DataType="{gtype}" BlockXSize="{bx}" BlockYSize="{by}"/>',
        f'      <SrcRect xOff="0" yOff="0" xSize="{s.width}" ySize="{s.height}"/>',
        f'      <DstRect xOff="{s.col}" yOff="{s.row}" xSize="{s.width}" ySize="{s.height}"/>',
        "    </SimpleSource>",
    ]


def vrt_xml(
    *,
    width: int,
    height: int,
    transform: Affine | None,
    crs: CRS | None,
    bands: Sequence[VrtBand],
) -> str:
    """The XML of a VRT of ``width`` x ``height`` pixels on ``transform``/``crs``.

    Raises:
        InputError: A band's pixel type has no VRT equivalent.
    """
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if crs is not None:
        lines.append(f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>')
    if transform is not None:
        gt = ", ".join(repr(float(v)) for v in transform.to_gdal())
        lines.append(f"  <GeoTransform>{gt}</GeoTransform>")
    for i, band in enumerate(bands, start=1):
        where = band.sources[0].path if band.sources else "VRT"
        lines.append(f'  <VRTRasterBand dataType="{gdal_type(band.dtype, where)}" band="{i}">')
        if band.description:
            lines.append(f"    <Description>{escape(band.description)}</Description>")
        if band.nodata is not None:
            lines.append(f"    <NoDataValue>{band.nodata!r}</NoDataValue>")
        for s in band.sources:
            lines += _source_xml(s)
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def vrt_cache_dir() -> Path:
    """Where VRTs are written: ``$GEOSEG_VRT_CACHE``, ``$GEOSEG_STAC_CACHE`` or a temp folder."""
    for var in _ENV_CACHE:
        env = os.environ.get(var)
        if env:
            return Path(env)
    return Path(tempfile.gettempdir()) / "geoseg-vrt"


def write_vrt(
    xml: str,
    *,
    name: str,
    folder: str | os.PathLike[str] | None = None,
    sources: Sequence[RasterPath] = (),
) -> Path:
    """Write ``xml`` once as ``{folder}/{name}-{digest}.vrt`` and return its path.

    The digest covers the XML and the (inode, size, mtime) of the local ``sources``: a
    changed source file gives a new VRT (so caches keyed by the VRT's path see the change),
    the same content the same file, written once.

    Args:
        xml: The VRT's XML (:func:`vrt_xml`).
        name: A file-name-safe stem.
        folder: Cache folder; default :func:`vrt_cache_dir`.
        sources: The files the VRT reads.
    """
    digest = hashlib.sha256(xml.encode())
    for p in sources:
        if not is_remote(p):
            digest.update(repr(file_stamp(p)).encode())
    where = Path(folder) if folder is not None else vrt_cache_dir()
    vrt = where / f"{name}-{digest.hexdigest()[:16]}.vrt"
    if not vrt.exists():
        where.mkdir(parents=True, exist_ok=True)
        with atomic_path(vrt, overwrite=True) as tmp:
            Path(tmp).write_text(xml, encoding="utf-8")
        logger.debug("wrote %s", vrt)
    return vrt
