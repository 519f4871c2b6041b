"""Many files as one scene: a VRT mosaic on their common pixel grid.

:func:`mosaic_scene` turns several scenes (tiles of a city, a folder of GeoTIFFs, the
scenes of a Potsdam folder) into ONE :class:`~geoseg.raster.SceneSpec` whose image is a
GDAL VRT placing every image file at its place on the union extent; their DSMs, nDSMs and
labels, when every part has them, get VRTs of their own. The scene is then read window by
window as any other: a prediction tiles across the file borders and blends there as
anywhere else, so the files' borders leave no seam, and memory stays bounded by the block
plan.

The files of one kind must share CRS, pixel size, band count and pixel types, and lie on
one pixel grid (whole-pixel offsets); anything else is refused, naming the file, before any
output. Pixels no file covers read as nodata (the files' nodata value; NaN for float
files without one, 0 for integer ones).

:func:`mosaic_parts` reads the files' places back from a mosaic's VRT, and
:func:`clip_classes` cuts a class map of the mosaic into one map per file (``--clip``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from geoseg._io import check_output
from geoseg.errors import BandMismatchError, CRSMismatchError, GridMismatchError, InputError
from geoseg.grid import GeoBox, block_windows
from geoseg.raster.remote import RasterPath, raster_path, url_of
from geoseg.raster.scene import SceneSpec
from geoseg.raster.source import is_georeferenced, north_up, open_raster
from geoseg.raster.tags import schema_from_tags
from geoseg.raster.vrt import VrtBand, VrtSource, vrt_xml, write_vrt
from geoseg.raster.writers import write_classes

__all__ = ["MosaicPart", "clip_classes", "clip_paths", "mosaic_parts", "mosaic_scene", "mosaic_vrt"]

logger = logging.getLogger("geoseg.raster")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FIX = (
    "warp the files onto one grid first, e.g. gdalwarp -t_srs EPSG:XXXX -tr RES RES -tap IN OUT.tif"
)


@dataclass(frozen=True)
class MosaicPart:
    """One file of a mosaic and where it lies.

    Attributes:
        path: The file.
        transform: Its pixel grid when it has no georeferencing of its own (a label file
            of its image's size takes its image's transform), else None.
        crs: The CRS that goes with ``transform``.
        size: (width, height) the file must have to take ``transform``.
    """

    path: RasterPath
    transform: Affine | None = None
    crs: CRS | None = None
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Header:
    path: RasterPath
    width: int
    height: int
    transform: Affine
    crs: CRS | None
    dtypes: tuple[str, ...]
    nodata: tuple[float | None, ...]
    descriptions: tuple[str, ...]
    sources: tuple[VrtSource, ...]


def _header(part: MosaicPart, what: str) -> _Header:
    with open_raster(part.path, what) as ds:
        if is_georeferenced(ds):
            transform, crs = ds.transform, ds.crs
        elif part.transform is not None and part.size in (None, (ds.width, ds.height)):
            transform, crs = part.transform, part.crs
        else:
            raise CRSMismatchError(
                f"{url_of(part.path)}: the {what} has no georeferencing and not its image's "
                "size, so its place in the mosaic is unknown; give georeferenced files"
            )
        if not north_up(transform):
            raise GridMismatchError(
                f"{url_of(part.path)}: rotated or sheared {what} cannot join a mosaic; {_FIX}"
            )
        return _Header(
            path=part.path,
            width=ds.width,
            height=ds.height,
            transform=transform,
            crs=crs,
            dtypes=tuple(np.dtype(d).name for d in ds.dtypes),
            nodata=tuple(ds.nodatavals),
            descriptions=tuple((d or "").strip() for d in ds.descriptions),
            sources=tuple(VrtSource.of(ds, b) for b in range(1, ds.count + 1)),
        )


def _offset(h: _Header, ref: _Header, what: str) -> tuple[int, int]:
    """(col, row) of ``h``'s first pixel on ``ref``'s grid, or a one-line refusal."""
    name, first = url_of(h.path), url_of(ref.path)
    if h.crs != ref.crs:
        raise CRSMismatchError(
            f"{name}: {what} CRS {h.crs} differs from {first}'s {ref.crs}; {_FIX}"
        )
    t, r = h.transform, ref.transform
    if not (math.isclose(t.a, r.a, rel_tol=1e-9) and math.isclose(t.e, r.e, rel_tol=1e-9)):
        raise GridMismatchError(
            f"{name}: {what} pixel size {t.a:g} x {-t.e:g} differs from {first}'s "
            f"{r.a:g} x {-r.e:g}; {_FIX}"
        )
    col, row = (t.c - r.c) / r.a, (t.f - r.f) / r.e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        raise GridMismatchError(
            f"{name}: {what} is not aligned to {first}'s pixel grid (offset {col:.3f}, "
            f"{row:.3f} px); {_FIX}"
        )
    if h.dtypes != ref.dtypes:
        raise BandMismatchError(
            f"{name}: {what} has {len(h.dtypes)} band(s) of {', '.join(h.dtypes)}, {first} "
            f"{len(ref.dtypes)} of {', '.join(ref.dtypes)}; give files with the same bands"
        )
    if h.nodata != ref.nodata:
        raise BandMismatchError(
            f"{name}: {what} nodata {h.nodata} differs from {first}'s {ref.nodata}; set one "
            "value, e.g. gdal_edit.py -a_nodata VALUE FILE"
        )
    named = [(a, b) for a, b in zip(h.descriptions, ref.descriptions, strict=True) if a and b]
    if any(a.lower() != b.lower() for a, b in named):
        raise BandMismatchError(
            f"{name}: {what} bands are {', '.join(h.descriptions)}, {first}'s "
            f"{', '.join(ref.descriptions)}; give files with the same bands in the same order"
        )
    return round(col), round(row)


def _covered(rects: Sequence[tuple[int, int, int, int]], width: int, height: int) -> bool:
    """Whether the rectangles (col, row, width, height) cover the whole extent."""
    xs = np.unique([0, width, *(c for c, _, w, _ in rects), *(c + w for c, _, w, _ in rects)])
    ys = np.unique([0, height, *(r for _, r, _, h in rects), *(r + h for _, r, _, h in rects)])
    cover: npt.NDArray[np.bool_] = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for c, r, w, h in rects:
        i0, i1 = np.searchsorted(ys, [r, r + h])
        j0, j1 = np.searchsorted(xs, [c, c + w])
        cover[i0:i1, j0:j1] = True
    return bool(cover.all())


def mosaic_vrt(
    parts: Sequence[MosaicPart],
    *,
    what: str,
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> RasterPath:
    """A VRT of ``parts`` side by side on their union extent (later files on top).

    Args:
        parts: The files, all on one pixel grid.
        what: What they are, for messages (``image``, ``DSM``...).
        name: Stem of the VRT's file name.
        cache_dir: Where the VRT is written (see :func:`geoseg.raster.vrt.write_vrt`).

    Returns:
        The VRT's path (the one file itself when there is only one).

    Raises:
        InputError: A file is unreadable.
        CRSMismatchError: A file has another CRS, or no georeferencing.
        GridMismatchError: A file has another pixel size or lies off the common grid.
        BandMismatchError: A file has other bands, pixel types or nodata values.
    """
    if not parts:
        raise InputError(f"mosaic {name!r}: no {what} file given")
    heads = [_header(p, what) for p in parts]
    if len(heads) == 1:
        return heads[0].path
    ref = heads[0]
    offsets = [_offset(h, ref, what) for h in heads]
    c0 = min(c for c, _ in offsets)
    r0 = min(r for _, r in offsets)
    width = max(c + h.width for (c, _), h in zip(offsets, heads, strict=True)) - c0
    height = max(r + h.height for (_, r), h in zip(offsets, heads, strict=True)) - r0
    rects = [(c - c0, r - r0, h.width, h.height) for (c, r), h in zip(offsets, heads, strict=True)]
    nodata = list(ref.nodata)
    if not _covered(rects, width, height) and any(v is None for v in nodata):
        nodata = [
            (math.nan if np.dtype(dt).kind == "f" else 0.0) if v is None else v
            for v, dt in zip(nodata, ref.dtypes, strict=True)
        ]
        logger.warning(
            "mosaic %s: the %s files leave gaps; pixels there read as nodata %s",
            name,
            what,
            nodata,
        )
    bands = [
        VrtBand(
            dtype,
            tuple(
                replace(s, col=rc[0], row=rc[1])
                for h, rc in zip(heads, rects, strict=True)
                for s in h.sources[b : b + 1]
            ),
            description=next((h.descriptions[b] for h in heads if h.descriptions[b]), ""),
            nodata=nodata[b],
        )
        for b, dtype in enumerate(ref.dtypes)
    ]
    transform = ref.transform @ Affine.translation(c0, r0)
    xml = vrt_xml(width=width, height=height, transform=transform, crs=ref.crs, bands=bands)
    vrt = write_vrt(xml, name=name, folder=cache_dir, sources=[h.path for h in heads])
    logger.info(
        "mosaic %s: %d %s files -> %d x %d px, %s", name, len(heads), what, width, height, vrt
    )
    return vrt


def mosaic_scene(
    specs: Sequence[SceneSpec],
    *,
    name: str = "mosaic",
    cache_dir: str | os.PathLike[str] | None = None,
) -> SceneSpec:
    """One scene of all ``specs``: their images (and DSMs, nDSMs, labels) as VRT mosaics.

    A DSM or nDSM is taken only when every part has one (else the scene would have holes in
    a band the model needs: refused); labels when every part has them (else left out, with
    a log line). Band names and the schema come from the parts, which must agree.

    Args:
        specs: The parts (each an image with its own files).
        name: The scene id (a file-name-safe name: letters, digits, ``_.-``).
        cache_dir: Where the VRTs are written (see :func:`geoseg.raster.vrt.write_vrt`).

    Raises:
        InputError: No part, a bad name, parts that disagree on band names or schema, or
            elevation given for some parts only.
        CRSMismatchError, GridMismatchError, BandMismatchError: See :func:`mosaic_vrt`.
    """
    if not _NAME.match(name):
        raise InputError(
            f"--mosaic {name!r}: a mosaic name is a file stem; use letters, digits, _ . -"
        )
    if not specs:
        raise InputError(f"mosaic {name!r}: no scene given; pass image files or folders")
    first = specs[0]
    for s in specs[1:]:
        if s.image_bands != first.image_bands or s.schema != first.schema:
            raise InputError(
                f"{url_of(s.image)}: band names or schema differ from {url_of(first.image)}'s; "
                "a mosaic's files must have the same bands"
            )
    image = mosaic_vrt([MosaicPart(s.image) for s in specs], what="image", name=name,
                       cache_dir=cache_dir)  # fmt: skip
    extra: dict[str, RasterPath | None] = {}
    grids: list[tuple[Affine, CRS, tuple[int, int]]] = []  # of the images, read once if needed
    for kind in ("dsm", "ndsm", "labels"):
        paths = [getattr(s, kind) for s in specs]
        have = [p is not None for p in paths]
        if not any(have):
            extra[kind] = None
            continue
        if not all(have):
            lacking = url_of(specs[have.index(False)].image)
            if kind == "labels":
                logger.info("mosaic %s: %s has no labels; the mosaic has none", name, lacking)
                extra[kind] = None
                continue
            raise InputError(
                f"{lacking}: has no {kind.upper()} while other files of mosaic {name!r} do; "
                f"give a {kind.upper()} for every file, or for none"
            )
        if not grids:
            for s in specs:
                with open_raster(s.image, "image") as ds:
                    grids.append((ds.transform, ds.crs, (ds.width, ds.height)))
        parts = [MosaicPart(p, *grid) for p, grid in zip(paths, grids, strict=True)]
        what = "label" if kind == "labels" else kind.upper()
        extra[kind] = mosaic_vrt(parts, what=what, name=f"{name}-{kind}", cache_dir=cache_dir)
    return SceneSpec(
        id=name,
        image=image,
        dsm=extra["dsm"],
        ndsm=extra["ndsm"],
        labels=extra["labels"],
        image_bands=first.image_bands,
        schema=first.schema,
    )


def mosaic_parts(vrt: RasterPath) -> list[tuple[str, Window]]:
    """The files of a mosaic VRT (:func:`mosaic_vrt`) and their windows in it.

    Returns:
        ``(id, window)`` per file, in VRT order; the id is the file stem (a Potsdam image's
        tile id, ``2_10``). Empty when ``vrt`` is not a VRT (a mosaic of one file).

    Raises:
        InputError: The VRT cannot be parsed.
    """
    from geoseg.raster.potsdam import stem_id  # potsdam imports this module

    if not str(vrt).lower().endswith(".vrt"):
        return []
    try:
        band = ET.parse(vrt).getroot().find("VRTRasterBand")
    except (ET.ParseError, OSError) as exc:
        raise InputError(f"{vrt}: not a readable VRT ({exc})") from None
    parts = []
    sources = [] if band is None else [e for e in band if e.tag.endswith("Source")]
    for src in sources:  # SimpleSource, ComplexSource (gdalbuildvrt with nodata)...
        name, rect = src.findtext("SourceFilename"), src.find("DstRect")
        if name is None or rect is None:
            continue
        win = Window(*(int(float(rect.get(k, "0"))) for k in ("xOff", "yOff", "xSize", "ySize")))
        parts.append((stem_id(raster_path(name)), win))
    return parts


def clip_paths(
    vrt: RasterPath, outdir: str | os.PathLike[str], *, overwrite: bool = False
) -> list[Path]:
    """The clip outputs :func:`clip_classes` writes: ``OUTDIR/{file id}_classes.tif``.

    Raises:
        OutputExistsError: One exists and ``overwrite`` is false.
    """
    paths = [Path(outdir) / f"{pid}_classes.tif" for pid, _ in mosaic_parts(vrt)]
    return [check_output(p, overwrite=overwrite) for p in paths]


def clip_classes(
    classes: str | os.PathLike[str],
    vrt: RasterPath,
    outdir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    block: int = 2048,
) -> list[Path]:
    """Cut a mosaic's class map into one class COG per file of the mosaic.

    Each file's extent is read from ``classes`` block by block (memory bounded by
    ``block``) and written as ``OUTDIR/{file id}_classes.tif`` with the map's schema,
    colours and tags: the same pixels as the mosaic map, on the file's own grid.

    Args:
        classes: The mosaic's class raster (``{mosaic}_classes.tif``).
        vrt: The mosaic's image VRT (where the files lie).
        outdir: Output folder.
        overwrite: Replace existing clips.
        block: Rows and columns read at a time.

    Raises:
        OutputExistsError: A clip exists and ``overwrite`` is false (before any is written).
    """
    parts = mosaic_parts(vrt)
    paths = clip_paths(vrt, outdir, overwrite=overwrite)
    with rasterio.open(classes) as ds:
        schema = schema_from_tags(ds, "potsdam")
        tags = ds.tags()
        for (_, win), path in zip(parts, paths, strict=True):
            geobox = GeoBox(int(win.width), int(win.height), ds.window_transform(win), ds.crs)
            blocks = (
                (w, ds.read(1, window=Window(win.col_off + w.col_off, win.row_off + w.row_off,
                                             w.width, w.height)))
                for w in block_windows(geobox.height, geobox.width, block)
            )  # fmt: skip
            write_classes(
                path, blocks, geobox=geobox, schema=schema, tags=tags, overwrite=overwrite
            )
            logger.info("clipped %s -> %s", classes, path)
    return paths
