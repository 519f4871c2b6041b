"""One raster source aligned onto a scene grid, and the guarded GDAL calls of every reader.

:class:`Source` reads some bands of a dataset on the scene's grid: directly when the grids
are equal, through a shifted window for a whole-pixel offset, or through a ``WarpedVRT``
otherwise; reads are boundless (pixels outside are filled and marked invalid).
:func:`open_raster` and :func:`gdal_call` turn GDAL failures into one-line geoseg errors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg._io import ignoring
from geoseg.errors import CRSMismatchError, GeosegError, GridMismatchError, InputError, first_line
from geoseg.grid import GeoBox
from geoseg.raster.remote import RasterPath, is_remote, raster_path, remote_env, url_of

__all__ = [
    "Source",
    "check_on_grid",
    "gdal_call",
    "gdal_message",
    "grid_of",
    "is_georeferenced",
    "north_up",
    "open_raster",
]

logger = logging.getLogger("geoseg.raster")

_T = TypeVar("_T")


def open_raster(path: RasterPath, what: str) -> rasterio.DatasetReader:
    """Open a raster checked up front (``what`` names it in messages).

    It must exist, GDAL must read it and its last pixel (a truncated file fails here, not
    mid-run), its pixels must not be complex. Call it where inputs are checked: a raster
    without a geotransform (labels may have none) is opened with rasterio's warning silenced.
    ``path`` may be a remote GDAL path (``/vsicurl/https://...``; a plain URL is turned into
    one): it is opened under :func:`~geoseg.raster.remote.remote_env`, and only the blocks
    read are fetched.

    Raises:
        InputError: One line naming ``path`` (the URL) and what is wrong.
    """
    if isinstance(path, str):
        path = raster_path(path)
    remote = is_remote(path)
    if not remote and not Path(path).exists():
        raise InputError(f"{path}: {what} file not found; check the path")
    name = url_of(path)
    fix = (
        "check the URL and that the server is reachable and serves a GeoTIFF"
        if remote
        else "give a GeoTIFF or another GDAL raster"
    )
    with ignoring(NotGeoreferencedWarning), remote_env():
        ds = gdal_call(
            lambda: rasterio.open(path),
            lambda m: InputError(f"{name}: not a readable raster ({m}); {fix}"),
        )
    try:
        with remote_env():  # GDAL's complaints go to logging, not straight to stderr
            gdal_call(
                lambda: ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1)),
                lambda m: InputError(
                    f"{name}: the raster is truncated or corrupt ({m}); re-copy or re-export it"
                ),
            )
    except InputError:
        ds.close()
        raise
    if any(np.dtype(dt).kind == "c" for dt in ds.dtypes):
        ds.close()
        raise InputError(f"{name}: complex pixel type {ds.dtypes[0]} is not supported")
    return ds


def gdal_call(call: Callable[[], _T], fail: Callable[[str], GeosegError]) -> _T:
    """``call()``; a rasterio failure raises ``fail(message)``, with no GDAL error chained.

    Dask (tblib) cannot pickle GDAL's errors back from a task: it would send a bare
    ``Exception(repr)`` instead of the geoseg error.
    """
    try:
        return call()
    except RasterioError as exc:
        message = gdal_message(exc)
    raise fail(message)


def gdal_message(exc: Exception) -> str:
    """The first line of a rasterio error, or of the GDAL error behind a generic one."""
    cause = exc.__cause__
    if "See previous exception" in str(exc) and isinstance(cause, Exception):
        return first_line(cause)
    return first_line(exc)


def is_georeferenced(ds: rasterio.DatasetReader) -> bool:
    """Whether ``ds`` has a CRS and a real (not identity) geotransform."""
    return ds.crs is not None and not ds.transform.is_identity


def north_up(t: Affine) -> bool:
    """Whether ``t`` has no rotation or shear term (within 1e-9 of the pixel size)."""
    tol = 1e-9 * max(abs(t.a), abs(t.e))
    return abs(t.b) <= tol and abs(t.d) <= tol


def check_on_grid(
    ds: rasterio.DatasetReader,
    path: RasterPath,
    *,
    what: str,
    width: int,
    height: int,
    transform: Affine,
    hint: str,
) -> None:
    """Refuse a raster that is not on a class raster's pixel grid (size and transform).

    Raises:
        GridMismatchError: ``{path}: {what} grid ... differs from the class raster's ...;
            {hint}``.
    """
    if (ds.width, ds.height) != (width, height) or not ds.transform.almost_equals(transform):
        got = f"{ds.width}x{ds.height} {tuple(ds.transform)[:6]}"
        raise GridMismatchError(
            f"{path}: {what} grid {got} differs from the class raster's {width}x{height} "
            f"{tuple(transform)[:6]}; {hint}"
        )


def _bounds(ds: rasterio.DatasetReader) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the four transformed corners, for any affine grid."""
    t, w, h = ds.transform, ds.width, ds.height
    xs, ys = zip(*(t @ (c, r) for c in (0, w) for r in (0, h)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def grid_of(ds: rasterio.DatasetReader) -> GeoBox:
    """The pixel grid of ``ds``."""
    return GeoBox(ds.width, ds.height, ds.transform, ds.crs)


class Source:
    """One dataset (some of its bands) aligned onto the scene grid."""

    def __init__(
        self,
        ds: rasterio.DatasetReader,
        grid: GeoBox,
        *,
        indexes: Sequence[int],
        resampling: Resampling,
        what: str,
    ) -> None:
        self.ds = ds
        self.path: RasterPath = raster_path(ds.name)
        self.indexes = list(indexes)
        self.nodata = ds.nodata
        self.what = what
        self.offset: tuple[int, int] | None = None  # (col, row) shift into the source
        self._vrt: WarpedVRT | None = None
        self.reader: rasterio.DatasetReader | WarpedVRT = ds
        src_georef = is_georeferenced(ds)
        if not src_georef:
            if (ds.width, ds.height) != (grid.width, grid.height):
                raise GridMismatchError(
                    f"{self.path}: {what} has no georeferencing and its size "
                    f"{ds.width}x{ds.height} differs from the image's {grid.width}x{grid.height}; "
                    "give a georeferenced file or one of the image's size"
                )
            self.offset = (0, 0)
            return
        if grid.crs is None:
            raise CRSMismatchError(f"{self.path}: cannot align {what} to an image without a CRS")
        self._check_overlap(ds, grid)
        if ds.crs != grid.crs:
            self._warp(grid, resampling)
            return
        st, gt = ds.transform, grid.transform
        same_res = math.isclose(st.a, gt.a, rel_tol=1e-9) and math.isclose(st.e, gt.e, rel_tol=1e-9)
        if same_res and north_up(st) and north_up(gt):
            col = (gt.c - st.c) / st.a
            row = (gt.f - st.f) / st.e
            if abs(col - round(col)) < 1e-3 and abs(row - round(row)) < 1e-3:
                self.offset = (round(col), round(row))
                return
        self._warp(grid, resampling)

    def _check_overlap(self, ds: rasterio.DatasetReader, grid: GeoBox) -> None:
        # Not ds.bounds: a rotated source (warped, so supported) must not reach affine's
        # deprecated ``*`` that rasterio uses for it.
        left, bottom, right, top = gdal_call(
            lambda: transform_bounds(ds.crs, grid.crs, *_bounds(ds)),
            lambda m: CRSMismatchError(
                f"{self.path}: cannot transform {self.what} bounds from {ds.crs} to {grid.crs} "
                f"({m})"
            ),
        )
        gl, gb, gr, gtop = grid.bounds
        if left >= gr or right <= gl or bottom >= gtop or top <= gb:
            raise GridMismatchError(
                f"{self.path}: {self.what} does not overlap the image (its bounds "
                f"{tuple(round(v, 2) for v in (left, bottom, right, top))} vs image "
                f"{tuple(round(v, 2) for v in (gl, gb, gr, gtop))} in {grid.crs}); "
                "pair each image with the file of the same area"
            )

    def _warp(self, grid: GeoBox, resampling: Resampling) -> None:
        float_src = np.dtype(self.ds.dtypes[0]).kind == "f"
        nodata = self.nodata if self.nodata is not None else (math.nan if float_src else None)
        kwargs: dict[str, object] = {}
        if nodata is not None:
            kwargs["nodata"] = nodata
            kwargs["src_nodata"] = self.nodata if self.nodata is not None else nodata
        self._vrt = WarpedVRT(
            self.ds,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=resampling,
            **kwargs,
        )
        self.reader = self._vrt
        self.offset = (0, 0)
        self.nodata = nodata
        logger.info("%s: %s resampled onto the image grid", self.path, self.what)

    def read(
        self, window: Window, fill: float, dtype: npt.DTypeLike = np.float32
    ) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.bool_]]:
        """Read ``window`` (scene pixel space) boundless: (bands, h, w) ``dtype``, inside-mask."""
        assert self.offset is not None
        h, w = int(window.height), int(window.width)
        r0 = int(window.row_off) + self.offset[1]
        c0 = int(window.col_off) + self.offset[0]
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.reader.height), min(c0 + w, self.reader.width)
        dst = (slice(None), slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        whole = dst[1] == slice(0, h) and dst[2] == slice(0, w)
        shape = (len(self.indexes), h, w)
        # a window inside the source is read over every pixel: no fill pass
        out = np.empty(shape, dtype=dtype) if whole else np.full(shape, fill, dtype=dtype)
        if rr1 <= rr0 or cc1 <= cc0:
            return out, np.zeros((h, w), dtype=bool)
        inside = np.ones((h, w), dtype=bool) if whole else np.zeros((h, w), dtype=bool)
        arr = gdal_call(  # straight into ``out`` when the window lies inside: no second copy
            lambda: self.reader.read(
                self.indexes,
                window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0),
                out=out if whole else None,
            ),
            lambda m: InputError(
                f"{self.path}: reading pixels failed ({m}); the file is truncated or corrupt: "
                "re-copy or re-export it"
            ),
        )
        if not whole:
            out[dst] = arr
            inside[dst[1:]] = True
        return out, inside

    @property
    def dtype(self) -> np.dtype[np.generic]:
        """The pixel type that holds every band read (their common type)."""
        return np.result_type(*(self.ds.dtypes[i - 1] for i in self.indexes))

    def close(self) -> None:
        """Close the dataset (and its warped view)."""
        if self._vrt is not None:
            self._vrt.close()
        self.ds.close()
