"""STAC items as scenes: band assets picked by name, stacked into one image.

A STAC Item (a JSON file or URL) lists its files as assets. :func:`stac_scene` picks the
image bands among them, by asset key (``red``, ``nir``, ``coastal``...) or by the asset's
``eo:bands`` common name or name, and the ``dsm``/``ndsm``/``labels`` assets by key.
Relative hrefs resolve against the item's location; ``http(s)://`` hrefs are read through
GDAL's ``/vsicurl/`` (only the blocks needed are fetched).

The image bands, one file each (or bands of a multi-band asset), are stacked into one GDAL
VRT whose band descriptions are the band names: a small XML file written to a cache folder
(one per item content, see :mod:`geoseg.raster.vrt`), so that a
:class:`~geoseg.raster.SceneSpec` stays a set of paths that any process can open. The VRT
records each source's size and type, so opening it fetches nothing until pixels are read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from geoseg.errors import BandMismatchError, GridMismatchError, InputError
from geoseg.raster.remote import RasterPath, is_url, path_stem, raster_path, url_of
from geoseg.raster.scene import SceneSpec
from geoseg.raster.source import open_raster
from geoseg.raster.vrt import VrtBand, VrtSource, vrt_xml, write_vrt

__all__ = [
    "BAND_KEYS",
    "ELEVATION_ASSETS",
    "LABEL_ASSETS",
    "StacBand",
    "is_stac_item",
    "pick_bands",
    "stac_scene",
    "stack_vrt",
]

logger = logging.getLogger("geoseg.raster")

ELEVATION_ASSETS = ("dsm", "ndsm")
"""Asset keys read as the scene's elevation files."""
LABEL_ASSETS = ("labels", "label")
"""Asset keys read as the scene's label raster."""

BAND_KEYS = frozenset(
    "coastal blue green yellow red rededge red_edge nir nir2 nir08 nir09 pan cirrus "
    "swir swir16 swir22 lwir lwir11 lwir12".split()
)
"""Asset keys taken as band names even when ``eo:bands`` names the band otherwise."""

_SKIP_ROLES = {"thumbnail", "overview", "metadata", "visual"}
_RASTER_EXT = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@dataclass(frozen=True)
class StacBand:
    """One image band of an item.

    Attributes:
        name: Band name (``red``...).
        asset: The asset key it comes from.
        path: The asset's raster path (local Path or ``/vsicurl/`` string).
        index: 1-based band index inside the asset's file.
    """

    name: str
    asset: str
    path: RasterPath
    index: int = 1


def is_stac_item(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` (a path or URL) names a JSON file, taken as a STAC item."""
    s = os.fspath(value)
    path = urlsplit(s).path if is_url(s) else s
    return path.lower().endswith(".json")


def _band_name(value: str) -> str:
    """A band name from an asset key or ``eo:bands`` name: lower case, ``_`` separated."""
    return re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")


def _load(source: str) -> dict[str, Any]:
    if is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=60) as resp:
                text = resp.read().decode("utf-8")
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"{source}: cannot read the STAC item ({exc}); check the URL and that the "
                "server is reachable"
            ) from None
    else:
        p = Path(source)
        if not p.is_file():
            raise InputError(f"{source}: STAC item file not found; check the path")
        text = p.read_text(encoding="utf-8")
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON ({exc}); give a STAC Item file") from None
    if not isinstance(item, dict) or item.get("type") != "Feature":
        kind = item.get("type") if isinstance(item, dict) else type(item).__name__
        raise InputError(
            f"{source}: not a STAC Item (type {kind!r}); give one item (a Feature), not a "
            "collection or a search result"
        )
    if not isinstance(item.get("assets"), dict) or not item["assets"]:
        raise InputError(f"{source}: the STAC item has no assets")
    return item


def _href(source: str, href: str) -> RasterPath:
    """An asset's href as a raster path, relative ones resolved against the item."""
    if href.startswith("file://"):
        href = urlsplit(href).path
    if is_url(href) or href.startswith("/vsi"):
        return raster_path(href)
    if is_url(source):
        return raster_path(urljoin(source, href))
    p = Path(href)
    return p if p.is_absolute() else (Path(source).resolve().parent / p).resolve()


def _asset_bands(key: str, asset: dict[str, Any]) -> list[str]:
    """The band names of an asset's file, in order.

    A one-band asset is named by its key when the key is a band name (``red``, ``nir2``),
    else by its ``eo:bands`` common name, else that band's name, else its key.
    """
    meta = asset.get("eo:bands") or asset.get("bands") or []
    names = []
    for b in meta if isinstance(meta, list) else []:
        if isinstance(b, dict):
            name = b.get("common_name") or b.get("eo:common_name") or b.get("name") or ""
            names.append(_band_name(str(name)))
    own = _band_name(key)
    if len(names) > 1:
        return names
    if own in BAND_KEYS or not names or not names[0]:
        return [own]
    return names


def _is_raster(asset: dict[str, Any]) -> bool:
    roles = set(asset.get("roles") or [])
    if roles & _SKIP_ROLES and "data" not in roles:
        return False
    media = str(asset.get("type") or "")
    href = urlsplit(str(asset.get("href", ""))).path.lower()
    return "tiff" in media or "jp2" in media or href.endswith(_RASTER_EXT)


def pick_bands(
    source: str, item: dict[str, Any], bands: Sequence[str] | None = None
) -> tuple[list[StacBand], dict[str, RasterPath]]:
    """The image bands of ``item`` and its extra assets (``dsm``, ``ndsm``, ``labels``).

    Args:
        source: Where the item is (relative hrefs resolve against it).
        item: The parsed item.
        bands: Image band names to take, in order; default: every band asset, item order.

    Raises:
        BandMismatchError: A band in ``bands`` is in no asset, or the item has no band.
    """
    found: dict[str, StacBand] = {}
    extra: dict[str, RasterPath] = {}
    multi: list[StacBand] = []
    for key, asset in item["assets"].items():
        if not isinstance(asset, dict) or "href" not in asset or not _is_raster(asset):
            continue
        path = _href(source, str(asset["href"]))
        name = _band_name(key)
        if name in ELEVATION_ASSETS:
            extra[name] = path
            continue
        if name in LABEL_ASSETS:
            extra["labels"] = path
            continue
        names = _asset_bands(key, asset)
        if len(names) == 1:
            found.setdefault(names[0], StacBand(names[0], key, path))
        else:
            multi += [StacBand(n, key, path, i + 1) for i, n in enumerate(names) if n]
    for b in multi:  # bands of a multi-band asset fill what no one-band asset gives
        found.setdefault(b.name, b)
    if bands is None:
        chosen = list(found.values())
    else:
        wanted = [_band_name(b) for b in bands]
        missing = [b for b in wanted if b not in found]
        if missing:
            raise BandMismatchError(
                f"{source}: no asset for band(s) {', '.join(missing)} (the item has "
                f"{', '.join(found) or 'none'}); name bands by asset key or eo:bands name"
            )
        chosen = [found[b] for b in wanted]
    if not chosen:
        raise BandMismatchError(
            f"{source}: the STAC item has no image band asset (GeoTIFF assets keyed by band "
            "name such as red, nir, or with eo:bands)"
        )
    return chosen, extra


def stack_vrt(bands: Sequence[StacBand], *, what: str) -> str:
    """The XML of a VRT stacking ``bands`` (one grid for all) in order, named by band.

    Raises:
        GridMismatchError: Two band files differ in size, transform or CRS.
        InputError: A band file is not a readable raster.
    """
    out: list[VrtBand] = []
    grid: tuple[Any, ...] | None = None
    first = ""
    for band in bands:
        with open_raster(band.path, f"{what} band {band.name!r}") as ds:
            this = (ds.width, ds.height, tuple(ds.transform)[:6], ds.crs)
            if grid is None:
                grid, first, transform, crs = this, url_of(band.path), ds.transform, ds.crs
            elif this != grid:
                raise GridMismatchError(
                    f"{url_of(band.path)}: band {band.name!r} of {what} is on another grid "
                    f"({ds.width}x{ds.height}, {ds.crs}) than {first} ({grid[0]}x{grid[1]}, "
                    f"{grid[3]}); resample the band assets onto one grid, or pick bands of one "
                    "resolution with --band-names"
                )
            src = VrtSource.of(ds, band.index, path=band.path)
            nodata = ds.nodatavals[band.index - 1]
            out.append(VrtBand(src.dtype, (src,), description=band.name, nodata=nodata))
    if grid is None:
        raise InputError(f"{what}: no band to stack")
    return vrt_xml(width=grid[0], height=grid[1], transform=transform, crs=crs, bands=out)


def stac_scene(
    source: str | os.PathLike[str],
    *,
    bands: Sequence[str] | None = None,
    schema: str = "potsdam",
    cache_dir: str | os.PathLike[str] | None = None,
) -> SceneSpec:
    """The scene of a STAC item: its band assets stacked into one VRT image.

    Args:
        source: The item: a JSON file or an ``http(s)://`` URL.
        bands: Image band names to take, in order (asset keys or ``eo:bands`` names);
            default: every band asset in item order.
        schema: Class schema of the labels.
        cache_dir: Where the VRT is written; default
            :func:`~geoseg.raster.vrt.vrt_cache_dir`. The file is named by its content:
            written once.

    Returns:
        A :class:`SceneSpec` with id = the item id, image = the VRT, and the item's
        ``dsm``/``ndsm``/``labels`` assets.

    Raises:
        InputError: The item cannot be read, is not a STAC Item, or a band file is not
            a readable raster.
        BandMismatchError: A wanted band has no asset.
        GridMismatchError: The band files are not on one grid.
    """
    src = os.fspath(source)
    item = _load(src)
    chosen, extra = pick_bands(src, item, bands)
    item_id = _band_name(str(item.get("id") or path_stem(raster_path(src)))) or "item"
    xml = stack_vrt(chosen, what=f"STAC item {src}")
    vrt = write_vrt(xml, name=item_id, folder=cache_dir)
    logger.info(
        "%s: STAC item %s, bands %s -> %s",
        src,
        item_id,
        ", ".join(f"{b.name} ({b.asset})" for b in chosen),
        vrt,
    )
    return SceneSpec(
        id=str(item.get("id") or item_id),
        image=vrt,
        dsm=extra.get("dsm"),
        ndsm=extra.get("ndsm"),
        labels=extra.get("labels"),
        image_bands=tuple(b.name for b in chosen),
        schema=schema,
    )
