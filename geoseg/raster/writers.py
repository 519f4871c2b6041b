"""Cloud-Optimized GeoTIFF writers for class and probability rasters.

A writer takes an iterable of ``(window, array)`` blocks in any order and size, so that a
whole scene never sits in memory. The blocks go into a tiled staging GeoTIFF beside the
output; GDAL's COG driver then copies it into a Cloud-Optimized GeoTIFF with internal
tiling and overviews (streamed by GDAL, bounded memory). The COG is written under a
temporary name and renamed into place only when complete.

Class rasters (``uint8``, nodata 255) carry:

* a colour table (the schema's colours, 255 transparent) inside the TIFF;
* class names as GDAL **category names** and a thematic **raster attribute table**
  (Value, Class, Red, Green, Blue). GeoTIFF has no tag for either, so GDAL keeps them in
  the PAM sidecar ``<file>.tif.aux.xml``, which is written next to the COG. QGIS labels
  the paletted renderer's classes with the category names when it opens the file
  (``QgsGdalProviderBase::colorTable``), and shows the attribute table (QGIS >= 3.30).
  Copy the ``.aux.xml`` along with the ``.tif``; without it the colours remain but the names
  are lost;
* a QGIS style ``{stem}.qml`` beside the file (:func:`geoseg.raster.qml.class_qml`), which
  QGIS loads on open: its legend lists exactly the schema's classes with their names and
  colours, not the 256 slots of the colour table;
* overviews by mode (a class that exists, never an average of classes), computed by
  :mod:`geoseg.raster.overviews` (``--co OVERVIEW_RESAMPLING=...`` hands them to GDAL);
* provenance tags (``GEOSEG_*``, see :mod:`geoseg.raster.tags`) in the TIFF's GDAL metadata.

Probability rasters hold one ``uint8`` band per class (``round(255 * p)``), named by the
band descriptions; invalid pixels are 0 and masked out by an internal per-dataset mask
(255 is a valid probability, so it cannot serve as nodata). Their overviews average. A
model's extra output (building contact) is written the same way, one band named by it
(:func:`write_probability_band`). Both get a QGIS style ``{stem}.qml`` beside them: the first
band as a pseudocolour ramp over 0..255 (:func:`geoseg.raster.qml.probability_qml`).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError  # what rasterio.shutil.copy raises on a GDAL error
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg._io import atomic_path, check_output, remove_stale_temporaries
from geoseg.errors import OutputError
from geoseg.grid import GeoBox
from geoseg.raster.overviews import overview_factors, vrt_with_overviews, write_mode_overviews
from geoseg.raster.qml import class_qml, probability_qml, qml_path
from geoseg.raster.tags import write_tags
from geoseg.schema import IGNORE, ClassSchema

__all__ = [
    "COG_BLOCKSIZE",
    "class_pam_xml",
    "write_classes",
    "write_probabilities",
    "write_probability_band",
]

# Log lines name the package, the public face (as geoseg.train, geoseg.vectorize do).
logger = logging.getLogger("geoseg.raster")

COG_BLOCKSIZE = 512
"""Internal tile edge of the COGs written here."""

_STAGE_OPTIONS = {
    "tiled": True,
    "blockxsize": 256,
    "blockysize": 256,
    "compress": "zstd",
    "zstd_level": 1,
    "bigtiff": "if_safer",
}

# GDAL raster attribute table enums (gdal.h): GDALRATFieldType and GDALRATFieldUsage.
_GFT_INTEGER, _GFT_STRING = 0, 2
_GFU_NAME, _GFU_MINMAX, _GFU_RED, _GFU_GREEN, _GFU_BLUE = 2, 5, 6, 7, 8


def class_pam_xml(schema: ClassSchema) -> str:
    """The GDAL PAM document (``.aux.xml``) naming the classes of band 1.

    It holds the category names (index = class value) and a thematic raster attribute
    table with the value, name and colour of each class.
    """
    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for name in schema.classes:
        ET.SubElement(cats, "Category").text = name
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    fields = [
        ("Value", _GFT_INTEGER, _GFU_MINMAX),
        ("Class", _GFT_STRING, _GFU_NAME),
        ("Red", _GFT_INTEGER, _GFU_RED),
        ("Green", _GFT_INTEGER, _GFU_GREEN),
        ("Blue", _GFT_INTEGER, _GFU_BLUE),
    ]
    for i, (name, ftype, usage) in enumerate(fields):
        fd = ET.SubElement(rat, "FieldDefn", index=str(i))
        ET.SubElement(fd, "Name").text = name
        ET.SubElement(fd, "Type").text = str(ftype)
        ET.SubElement(fd, "Usage").text = str(usage)
    for i, (name, colour) in enumerate(zip(schema.classes, schema.colours, strict=True)):
        row = ET.SubElement(rat, "Row", index=str(i))
        for v in (i, name, *colour):
            ET.SubElement(row, "F").text = str(v)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_classes(
    path: str | os.PathLike[str],
    blocks: Iterable[tuple[Window, npt.NDArray[np.uint8]]],
    *,
    geobox: GeoBox,
    schema: ClassSchema,
    tags: Mapping[str, str] | None = None,
    overwrite: bool = False,
    creation_options: Sequence[tuple[str, str]] = (),
    staged: Callable[[], None] | None = None,
) -> Path:
    """Write a class raster COG from blocks (see the module docs for what it carries).

    Args:
        path: Output ``.tif``; its PAM sidecar ``.tif.aux.xml`` and its QGIS style
            ``{stem}.qml`` are written beside it.
        blocks: ``(window, classes)`` with classes (h, w) uint8, 255 = nodata; together
            they should cover the grid (uncovered pixels stay nodata).
        geobox: The output grid (CRS, transform, size).
        schema: Class names and colours.
        tags: Dataset metadata (e.g. provenance) to store in the file.
        overwrite: Replace an existing output.
        creation_options: Extra COG creation options ``(KEY, VALUE)``.
        staged: Called once every block is written, before the COG is made (e.g. to write
            a sidecar that must exist before the output does).

    Returns:
        The output path.

    Raises:
        OutputExistsError: The output exists and ``overwrite`` is false.
    """
    final = check_output(path, overwrite=overwrite)

    def fill(ds: rasterio.io.DatasetWriter) -> None:
        # The colour table must be set before any pixel is written (TIFF photometric tag).
        ds.write_colormap(1, schema.colormap())
        ds.set_band_description(1, "class")
        for window, arr in blocks:
            ds.write(arr, 1, window=window)

    _write_cog(
        final,
        fill,
        geobox=geobox,
        count=1,
        nodata=IGNORE,
        tags=tags,
        class_map=True,
        staged=staged,
        overwrite=overwrite,
        creation_options=creation_options,
        pam=class_pam_xml(schema),
        qml=class_qml(schema),
    )
    return final


def write_probabilities(
    path: str | os.PathLike[str],
    blocks: Iterable[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    *,
    geobox: GeoBox,
    schema: ClassSchema,
    tags: Mapping[str, str] | None = None,
    overwrite: bool = False,
    creation_options: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write a per-class probability COG (uint8, 0..255) from blocks.

    Args:
        path: Output ``.tif``.
        blocks: ``(window, probs, valid)``: probs (C, h, w) uint8, valid (h, w) bool.
        geobox: The output grid.
        schema: Class names (the band descriptions).
        tags: Dataset metadata.
        overwrite: Replace an existing output.
        creation_options: Extra COG creation options ``(KEY, VALUE)``.

    Returns:
        The output path.

    Raises:
        OutputExistsError: The output exists and ``overwrite`` is false.
    """
    return _write_probability_bands(
        path,
        blocks,
        geobox=geobox,
        names=schema.classes,
        tags=tags,
        overwrite=overwrite,
        creation_options=creation_options,
    )


def write_probability_band(
    path: str | os.PathLike[str],
    blocks: Iterable[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    *,
    geobox: GeoBox,
    name: str,
    tags: Mapping[str, str] | None = None,
    overwrite: bool = False,
    creation_options: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write a one-band probability COG (uint8, 0..255), as :func:`write_probabilities` does.

    Args:
        path: Output ``.tif``.
        blocks: ``(window, probs, valid)``: probs (h, w) or (1, h, w) uint8, valid (h, w).
        geobox: The output grid.
        name: The band description (e.g. ``contact``).
        tags: Dataset metadata.
        overwrite: Replace an existing output.
        creation_options: Extra COG creation options ``(KEY, VALUE)``.

    Returns:
        The output path.

    Raises:
        OutputExistsError: The output exists and ``overwrite`` is false.
    """
    return _write_probability_bands(
        path,
        blocks,
        geobox=geobox,
        names=(name,),
        tags=tags,
        overwrite=overwrite,
        creation_options=creation_options,
    )


def _write_probability_bands(
    path: str | os.PathLike[str],
    blocks: Iterable[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.bool_]]],
    *,
    geobox: GeoBox,
    names: Sequence[str],
    tags: Mapping[str, str] | None,
    overwrite: bool,
    creation_options: Sequence[tuple[str, str]],
) -> Path:
    """Probability bands (uint8, 0..255) named ``names``, masked where not valid, as a COG."""
    final = check_output(path, overwrite=overwrite)

    def fill(ds: rasterio.io.DatasetWriter) -> None:
        for i, name in enumerate(names, start=1):
            ds.set_band_description(i, name)
        ds.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (len(names) - 1)
        for window, probs, valid in blocks:
            ds.write(probs.reshape(len(names), *probs.shape[-2:]), window=window)
            ds.write_mask(np.where(valid, np.uint8(255), np.uint8(0)), window=window)

    _write_cog(
        final,
        fill,
        geobox=geobox,
        count=len(names),
        nodata=None,
        tags=tags,
        class_map=False,
        overwrite=overwrite,
        creation_options=creation_options,
        pam=None,
        qml=probability_qml(),
    )
    return final


def _write_cog(
    final: Path,
    fill: object,
    *,
    geobox: GeoBox,
    count: int,
    nodata: int | None,
    tags: Mapping[str, str] | None,
    class_map: bool,
    overwrite: bool,
    creation_options: Sequence[tuple[str, str]],
    pam: str | None,
    qml: str | None,
    staged: Callable[[], None] | None = None,
) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final, stages=True)
    stage_dir = Path(tempfile.mkdtemp(prefix=f".{final.stem}.", suffix=".stage", dir=final.parent))
    try:
        stage = stage_dir / "stage.tif"
        profile: dict[str, object] = {
            "driver": "GTiff",
            "width": geobox.width,
            "height": geobox.height,
            "count": count,
            "dtype": "uint8",
            "crs": geobox.crs,
            "transform": geobox.transform,
            **_STAGE_OPTIONS,
        }
        if class_map:
            # a class map is staged uncompressed (1 byte per pixel): written, read for its
            # overviews and copied without a codec pass each time
            del profile["compress"], profile["zstd_level"]
        if nodata is not None:
            profile["nodata"] = nodata
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            # Tiles never written are filled with the nodata value by GDAL.
            with rasterio.open(stage, "w", **profile) as ds:
                fill(ds)  # type: ignore[operator]
                if tags:
                    write_tags(ds, tags)
            if staged is not None:
                staged()
            options = {
                "BLOCKSIZE": str(COG_BLOCKSIZE),
                # ZSTD level 1: writes a prediction's map 1.4-2.7x faster than DEFLATE for
                # files 1.1-1.6x larger (measured on 36 Mpx class maps); every GDAL since
                # 2.3 (QGIS 3) reads it. ``--co COMPRESS=DEFLATE`` for older readers.
                "COMPRESS": "ZSTD",
                "LEVEL": "1",
                # a class map's overviews hold a class that exists (made by geoseg below unless
                # the user's options say otherwise), probabilities average
                "OVERVIEW_RESAMPLING": "MODE" if class_map else "AVERAGE",
                "BIGTIFF": "IF_SAFER",
                # Compression and overviews on every core: this copy is the serial tail of
                # a prediction (override with creation option NUM_THREADS).
                "NUM_THREADS": "ALL_CPUS",
            }
            user = {k.upper(): v for k, v in creation_options}
            if "COMPRESS" in user and "LEVEL" not in user:
                del options["LEVEL"]  # the level was ZSTD's: another method keeps its own
            options.update(user)
            source = stage
            blocksize = str(options["BLOCKSIZE"])
            if (
                class_map
                and blocksize.isdigit()
                and not {"OVERVIEWS", "OVERVIEW_RESAMPLING"} & user.keys()
            ):
                # mode overviews made here (raster.overviews), copied by the COG driver
                factors = overview_factors(geobox.width, geobox.height, int(blocksize))
                levels = write_mode_overviews(stage, factors, stage_dir, _STAGE_OPTIONS)
                source = stage_dir / "stage.vrt"
                vrt_with_overviews(stage, levels, source)
                options["OVERVIEWS"] = "FORCE_USE_EXISTING"
            with atomic_path(final, overwrite=overwrite) as tmp:
                rasterio.shutil.copy(source, tmp, driver="COG", **options)
                # the sidecars, written before the COG appears: .aux.xml and the QGIS style
                _sidecar(final.with_name(final.name + ".aux.xml"), pam, encoding=None)
                _sidecar(qml_path(final), qml, encoding="utf-8")
    except (OSError, RasterioError, CPLE_BaseError) as exc:
        full = _device_full(exc, final)
        if full is None:
            raise
        raise full from None
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    logger.info("%s: wrote %dx%d COG (%d band(s))", final, geobox.width, geobox.height, count)


_FULL_ERRNOS = {errno.ENOSPC, errno.EIO, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NEARLY_FULL = 1 << 20
"""Bytes free under which a failed GDAL write is taken for a full device."""


def _device_full(exc: Exception, final: Path) -> OutputError | None:
    """An OutputError when writing ``final`` failed because its device is full, else None.

    GDAL reports a full disk as a generic write error without ``errno``; it is recognised by
    the space left on the device, measured before the temporary files are removed.
    """
    full = isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS
    if not full:
        try:
            full = shutil.disk_usage(final.parent).free < _NEARLY_FULL
        except OSError:
            return None
    if not full:
        return None
    what = "an I/O error on the device" if getattr(exc, "errno", None) == errno.EIO else None
    return OutputError(
        f"{final}: {what or 'no space left on device'} while writing it; free space and run "
        "again (finished work is kept)"
    )


def _sidecar(path: Path, text: str | None, *, encoding: str | None) -> None:
    """Write a COG's sidecar file atomically (it belongs to the COG), or remove a stale one."""
    if text is not None:
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(text, encoding=encoding)
    elif path.exists():
        path.unlink()
