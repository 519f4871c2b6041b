"""Raster paths beyond local files: remote COGs and other GDAL virtual paths.

A raster path is a local :class:`~pathlib.Path` or, for a file GDAL reaches itself, a
GDAL path string: ``/vsicurl/https://...``, ``/vsis3/bucket/key.tif``, ``/vsimem/...``. A
plain ``http(s)://`` URL becomes ``/vsicurl/`` + URL and ``s3://`` becomes ``/vsis3/``.
Strings are kept as such: :class:`~pathlib.Path` would fold the ``//`` of a URL.

:func:`remote_env` is the GDAL configuration every dataset is opened under: no directory
listing on open (one request, not a crawl of the folder), any extension allowed and a
block cache, so that windowed reads fetch only the blocks they touch.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import rasterio

__all__ = [
    "REMOTE_GDAL_CONFIG",
    "RasterPath",
    "file_stamp",
    "is_remote",
    "is_url",
    "path_stem",
    "raster_path",
    "remote_env",
    "url_of",
]

RasterPath = Path | str
"""A local file, or a GDAL path string (``/vsicurl/https://...``) for a remote file."""

REMOTE_GDAL_CONFIG: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.vrt,.jp2,.img,.ovr",
    "VSI_CACHE": "TRUE",
    "GDAL_HTTP_MAX_RETRY": "2",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}
"""GDAL options under which rasters are opened (harmless for local files)."""

_URL_PREFIXES = ("http://", "https://", "s3://", "gs://")


def is_url(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is a URL (``http(s)://``, ``s3://``, ``gs://``)."""
    return isinstance(value, str) and value.lower().startswith(_URL_PREFIXES)


def is_remote(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` names a file GDAL reaches itself (a URL or a ``/vsi...`` path)."""
    return isinstance(value, str) and (is_url(value) or value.startswith("/vsi"))


def raster_path(value: str | os.PathLike[str]) -> RasterPath:
    """``value`` as a raster path: a GDAL path string when remote, else a local Path.

    >>> raster_path("https://example.com/a.tif")
    '/vsicurl/https://example.com/a.tif'
    >>> raster_path("s3://bucket/a.tif")
    '/vsis3/bucket/a.tif'
    """
    if isinstance(value, str):
        low = value.lower()
        if low.startswith(("http://", "https://")):
            return "/vsicurl/" + value
        if low.startswith("s3://"):
            return "/vsis3/" + value[5:]
        if low.startswith("gs://"):
            return "/vsigs/" + value[5:]
        if value.startswith("/vsi"):
            return value
    return Path(value)


def url_of(path: RasterPath) -> str:
    """The URL behind a ``/vsicurl/`` path (else ``path`` as a string)."""
    s = str(path)
    return s[len("/vsicurl/") :] if s.startswith("/vsicurl/") else s


def path_stem(path: RasterPath) -> str:
    """The file stem of a local path or of a URL's path (its query string dropped)."""
    if isinstance(path, Path):
        return path.stem
    return PurePosixPath(urlsplit(url_of(path)).path).stem


def file_stamp(path: RasterPath) -> tuple[int, int, int]:
    """(inode, size, mtime_ns) of a local file; zeros for a remote one.

    Remote files are taken as unchanged for the life of a process (a cache key, not a
    change detector).
    """
    if is_remote(path):
        return (0, 0, 0)
    st = os.stat(path)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def remote_env() -> rasterio.Env:
    """A :class:`rasterio.Env` with :data:`REMOTE_GDAL_CONFIG` (options already set win)."""
    options = {k: v for k, v in REMOTE_GDAL_CONFIG.items() if k not in os.environ}
    return rasterio.Env(**options)
