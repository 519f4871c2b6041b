"""Overviews of class rasters, computed here rather than by GDAL's MODE resampling.

A class COG's overviews hold, at each level, the **mode of the 2 x 2 pixels of the level
below** (the full-resolution raster for the first level): the class most of the four valid
pixels hold, a tie going to the first of them in reading order (top-left, top-right,
bottom-left, bottom-right); four nodata pixels give nodata, and nodata never outvotes a
class. Like GDAL's MODE, an overview pixel is always a class that exists below it, never an
average of classes. There are as many levels as GDAL's COG driver makes (halving until the
raster fits in one COG tile); a level's pixel covers exactly 2 x 2 pixels of the level below.

Why not GDAL's ``OVERVIEW_RESAMPLING=MODE``: it builds a histogram per output pixel and
cost 23 CPU-ms per Mpx of a 36 Mpx class map (2-core Xeon), most of what writing a
prediction cost; this costs about 5 (most 2 x 2 cells hold one class and are taken as they
are) and the COG driver then copies the levels (``OVERVIEWS=FORCE_USE_EXISTING``).

:func:`write_mode_overviews` streams a staged class GeoTIFF in strips (memory: a strip of
the scene's width) into one GeoTIFF per level, and :func:`vrt_with_overviews` hands the
levels to GDAL as the overviews of the staged file (a VRT's ``<Overview>`` elements).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

__all__ = ["mode_2x2", "overview_factors", "vrt_with_overviews", "write_mode_overviews"]

_STRIP_ROWS = 1024
"""Rows of the full-resolution raster read at a time (rounded up to the coarsest factor)."""


def overview_factors(width: int, height: int, blocksize: int) -> list[int]:
    """The overview factors: as many levels as GDAL's COG driver makes for this size.

    The driver halves the size (rounding down) until both sides fit in one ``blocksize``
    tile: a 6000 x 6000 raster with 512 tiles gets 2, 4, 8 and 16. (A level's pixel covers
    exactly ``f x f`` pixels; its size rounds up, as ``gdaladdo``'s do.)
    """
    factors: list[int] = []
    w, h, f = width, height, 1
    while w > blocksize or h > blocksize:
        f, w, h = f * 2, w // 2, h // 2
        factors.append(f)
    return factors


def mode_2x2(x: npt.NDArray[np.uint8], nodata: int) -> npt.NDArray[np.uint8]:
    """The mode of each 2 x 2 cell of ``x`` (see the module docs for ties and nodata).

    Args:
        x: (h, w) classes; odd sides are padded with ``nodata``.
        nodata: The value no class takes.

    Returns:
        (ceil(h / 2), ceil(w / 2)) uint8.
    """
    h, w = x.shape
    if h % 2 or w % 2:
        padded = np.full((h + h % 2, w + w % 2), nodata, dtype=np.uint8)
        padded[:h, :w] = x
        x = padded
    x = np.ascontiguousarray(x, dtype=np.uint8)
    width = x.shape[1]
    # each 2-pixel pair as one 16-bit word: (top-left, top-right) over (bottom-left, bottom-right)
    pairs = x.view("<u2")  # little-endian on any machine: the low byte is the left pixel
    top, bottom = pairs[0::2], pairs[1::2]
    out = (top & 0xFF).astype(np.uint8)  # the top-left pixel, in native order
    mixed = top != bottom
    mixed |= (top >> 8) != out
    idx = np.flatnonzero(mixed)
    if idx.size == 0:
        return out
    # the few cells that do not hold one class: vote
    rows, cols = np.divmod(idx, out.shape[1])
    base = 2 * rows * width + 2 * cols
    flat = x.reshape(-1)
    votes = [flat[base], flat[base + 1], flat[base + width], flat[base + width + 1]]
    counts = []
    for i, v in enumerate(votes):
        n = np.ones(v.shape, dtype=np.uint8)
        for j, u in enumerate(votes):
            if j != i:
                n += v == u
        n[v == nodata] = 0
        counts.append(n)
    best, most = votes[0], counts[0]
    for v, n in zip(votes[1:], counts[1:], strict=True):
        better = n > most  # strictly: a tie keeps the earlier pixel
        best = np.where(better, v, best)
        most = np.maximum(most, n)
    out.reshape(-1)[idx] = best
    return out


def write_mode_overviews(
    stage: Path, factors: Sequence[int], folder: Path, profile: Mapping[str, object]
) -> list[Path]:
    """Write the mode overviews of the class raster ``stage``, one GeoTIFF per factor.

    Args:
        stage: The full-resolution class raster (one uint8 band with a nodata value).
        factors: Powers of two, ascending from 2 (:func:`overview_factors`).
        folder: Where the level files go (``ovr_F.tif``).
        profile: GTiff creation options for the level files (tiling, compression).

    Returns:
        The level files, in the order of ``factors``.
    """
    if not factors:
        return []
    with rasterio.open(stage) as src:
        width, height, nodata = src.width, src.height, int(src.nodata)
        crs, transform = src.crs, src.transform
        coarsest = factors[-1]
        strip = -(-_STRIP_ROWS // coarsest) * coarsest
        paths = [folder / f"ovr_{f}.tif" for f in factors]
        outs = [
            rasterio.open(
                p,
                "w",
                **{
                    **profile,
                    "driver": "GTiff",
                    "count": 1,
                    "dtype": "uint8",
                    "nodata": nodata,
                    "width": -(-width // f),
                    "height": -(-height // f),
                    "crs": crs,
                    "transform": transform @ Affine.scale(f),
                },
            )
            for p, f in zip(paths, factors, strict=True)
        ]
        try:
            for r0 in range(0, height, strip):
                level = src.read(1, window=Window(0, r0, width, min(strip, height - r0)))
                for f, out in zip(factors, outs, strict=True):
                    level = mode_2x2(level, nodata)
                    out.write(level, 1, window=Window(0, r0 // f, level.shape[1], level.shape[0]))
        finally:
            for out in outs:
                out.close()
    return paths


def vrt_with_overviews(stage: Path, levels: Sequence[Path], vrt: Path) -> None:
    """Write ``vrt``: ``stage`` with ``levels`` as its overviews.

    Georeferencing, colours and tags are those of ``stage``; GDAL's COG driver copies the
    levels with ``OVERVIEWS=FORCE_USE_EXISTING``.
    """
    rasterio.shutil.copy(stage, vrt, driver="VRT")
    tree = ET.parse(vrt)
    band = tree.getroot().find("VRTRasterBand")
    assert band is not None  # a VRT copy of a one-band raster has one
    for path in levels:
        ov = ET.SubElement(band, "Overview")
        ET.SubElement(ov, "SourceFilename", relativeToVRT="0").text = str(path)
        ET.SubElement(ov, "SourceBand").text = "1"
    tree.write(vrt, encoding="unicode")
