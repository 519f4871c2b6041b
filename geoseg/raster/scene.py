"""Scenes: image, elevation and label sources aligned onto one grid, read window by window.

A :class:`SceneSpec` is a picklable description (paths and names) that crosses process
boundaries; :meth:`SceneSpec.open` gives a :class:`Scene` holding open datasets for one
thread or process.

Every source is aligned onto the image grid:

* equal grids are read directly;
* the same CRS and pixel size with a whole-pixel offset (Potsdam's DSM 03_13, one pixel
  narrower) is read through a shifted window;
* anything else (another resolution, extent or CRS) is resampled on the fly through a
  ``WarpedVRT`` (bilinear for elevation, nearest for labels).

Reads are boundless: pixels outside a source are filled and marked invalid.

nDSM. When a scene has a DSM but no nDSM file, the nDSM is derived as
``max(0, DSM - ground)``, with the ground surface estimated once per scene by
:mod:`geoseg.raster.ground` (a coarse opening of the DSM, about 50 m wide).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from geoseg._io import ignoring
from geoseg.errors import (
    BandMismatchError,
    CRSMismatchError,
    GeosegError,
    GridMismatchError,
    InputError,
    first_line,
)
from geoseg.grid import GeoBox
from geoseg.raster.ground import Ground, cached_ground, estimate_ground
from geoseg.schema import IGNORE, ClassSchema, load_schema

__all__ = [
    "DEFAULT_MODEL_BANDS",
    "Scene",
    "SceneBlock",
    "SceneSpec",
    "gdal_call",
    "gdal_message",
    "open_raster",
]

# Log lines name the package, the public face (as geoseg.train, geoseg.vectorize do).
logger = logging.getLogger("geoseg.raster")

RGB = ("red", "green", "blue")
RGBIR = ("red", "green", "blue", "nir")
DEFAULT_MODEL_BANDS = ("red", "green", "blue", "nir", "ndsm")
"""Bands a model sees by default: image bands and the nDSM (never absolute DSM heights)."""

_ELEVATION = ("dsm", "ndsm")
_T = TypeVar("_T")
_BAND_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class SceneSpec:
    """Where a scene's sources are; picklable, opened with :meth:`open`.

    Attributes:
        id: Scene id (Potsdam tile id like ``2_10``, or the image file stem).
        image: Image GeoTIFF (its grid is the scene grid).
        dsm: Absolute-height DSM, any grid that overlaps the image.
        ndsm: Relative-height nDSM file; derived from ``dsm`` when absent.
        labels: Label raster: colour-coded RGB or 1-band class indices.
        image_bands: Names of the image's bands, in file order. Default: the band
            descriptions when they are all set, else red, green, blue[, nir].
        schema: Class schema name or file (used to decode labels).
    """

    id: str
    image: Path
    dsm: Path | None = None
    ndsm: Path | None = None
    labels: Path | None = None
    image_bands: tuple[str, ...] | None = None
    schema: str = "potsdam"

    def open(self) -> Scene:
        """Open the sources and check them (see :class:`Scene`)."""
        return Scene(self)


@dataclass(frozen=True)
class SceneBlock:
    """One window of a scene.

    Attributes:
        data: float32 (bands, rows, cols); invalid pixels are 0.
        valid: bool (rows, cols); False where any requested band is nodata, NaN, infinite
            or outside.
        bands: Band names of ``data``.
        window: The window read (may extend past the scene).
    """

    data: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    bands: tuple[str, ...]
    window: Window


def open_raster(path: Path, what: str) -> rasterio.DatasetReader:
    """Open a raster checked up front (``what`` names it in messages).

    It must exist, GDAL must read it and its last pixel (a truncated file fails here, not
    mid-run), its pixels must not be complex. Call it where inputs are checked: a raster
    without a geotransform (labels may have none) is opened with rasterio's warning silenced.

    Raises:
        InputError: One line naming ``path`` and what is wrong.
    """
    if not path.exists():
        raise InputError(f"{path}: {what} file not found; check the path")
    with ignoring(NotGeoreferencedWarning):
        ds = gdal_call(
            lambda: rasterio.open(path),
            lambda m: InputError(
                f"{path}: not a readable raster ({m}); give a GeoTIFF or another GDAL raster"
            ),
        )
    try:
        with rasterio.Env():  # GDAL's complaints go to logging, not straight to stderr
            gdal_call(
                lambda: ds.read(1, window=Window(ds.width - 1, ds.height - 1, 1, 1)),
                lambda m: InputError(
                    f"{path}: the raster is truncated or corrupt ({m}); re-copy or re-export it"
                ),
            )
    except InputError:
        ds.close()
        raise
    if any(np.dtype(dt).kind == "c" for dt in ds.dtypes):
        ds.close()
        raise InputError(f"{path}: complex pixel type {ds.dtypes[0]} is not supported")
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


def _is_georeferenced(ds: rasterio.DatasetReader) -> bool:
    return ds.crs is not None and not ds.transform.is_identity


def _north_up(t: Affine) -> bool:
    """Whether ``t`` has no rotation or shear term (within 1e-9 of the pixel size)."""
    tol = 1e-9 * max(abs(t.a), abs(t.e))
    return abs(t.b) <= tol and abs(t.d) <= tol


def _bounds(ds: rasterio.DatasetReader) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of the four transformed corners, for any affine grid."""
    t, w, h = ds.transform, ds.width, ds.height
    xs, ys = zip(*(t @ (c, r) for c in (0, w) for r in (0, h)), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def _grid(ds: rasterio.DatasetReader) -> GeoBox:
    return GeoBox(ds.width, ds.height, ds.transform, ds.crs)


class _Source:
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
        self.path = Path(ds.name)
        self.indexes = list(indexes)
        self.nodata = ds.nodata
        self.what = what
        self.offset: tuple[int, int] | None = None  # (col, row) shift into the source
        self._vrt: WarpedVRT | None = None
        self.reader: rasterio.DatasetReader | WarpedVRT = ds
        src_georef = _is_georeferenced(ds)
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
        if same_res and _north_up(st) and _north_up(gt):
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
        self, window: Window, fill: float
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Read ``window`` (scene pixel space) boundless: (bands, h, w) float32 and inside-mask."""
        assert self.offset is not None
        h, w = int(window.height), int(window.width)
        out = np.full((len(self.indexes), h, w), fill, dtype=np.float32)
        inside = np.zeros((h, w), dtype=bool)
        r0 = int(window.row_off) + self.offset[1]
        c0 = int(window.col_off) + self.offset[0]
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.reader.height), min(c0 + w, self.reader.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return out, inside
        arr = gdal_call(
            lambda: self.reader.read(self.indexes, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0)),
            lambda m: InputError(
                f"{self.path}: reading pixels failed ({m}); the file is truncated or corrupt: "
                "re-copy or re-export it"
            ),
        )
        dst = (slice(None), slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        out[dst] = arr
        inside[dst[1:]] = True
        return out, inside

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        self.ds.close()


class Scene:
    """An opened scene: aligned sources, named bands, windowed reads.

    Use as a context manager, or call :meth:`close`. Not thread-safe: give each thread or
    process its own (``spec.open()``).

    Raises:
        InputError: A source is not a readable raster, is truncated, or has a bad dtype.
        CRSMismatchError: The image has no CRS.
        BandMismatchError: The image's band count does not match its band names.
        GridMismatchError: A source does not overlap the image, or an ungeoreferenced
            label file differs in size.
    """

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        self.schema: ClassSchema = load_schema(spec.schema)
        self._sources: list[_Source] = []
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise

    def _open_all(self) -> None:
        spec = self.spec
        img = open_raster(spec.image, "image")
        try:
            names = self._check_image(img)
        except BaseException:
            img.close()
            raise
        self.geobox = _grid(img)
        # Split the image's bands into plain bands and elevation bands stored in it.
        plain = [(i + 1, n) for i, n in enumerate(names) if n not in _ELEVATION]
        self._image = _Source(
            img,
            self.geobox,
            indexes=[i for i, _ in plain],
            resampling=Resampling.nearest,
            what="image",
        )
        self._sources.append(self._image)
        self._image_names = tuple(n for _, n in plain)
        self._dsm: _Source | None = None
        self._ndsm: _Source | None = None
        for elev in _ELEVATION:
            if elev in names:
                idx = names.index(elev) + 1
                src = _Source(
                    img, self.geobox, indexes=[idx], resampling=Resampling.bilinear, what=elev
                )
                src.nodata = img.nodatavals[idx - 1]
                setattr(self, f"_{elev}", src)
        for elev, path in (("dsm", spec.dsm), ("ndsm", spec.ndsm)):
            if path is None:
                continue
            ds = open_raster(path, elev.upper())
            if ds.count != 1:
                c = ds.count
                ds.close()
                raise BandMismatchError(
                    f"{path}: a {elev.upper()} must have 1 band, this file has {c}; "
                    "extract the elevation band"
                )
            src = _Source(ds, self.geobox, indexes=[1], resampling=Resampling.bilinear, what=elev)
            self._sources.append(src)
            setattr(self, f"_{elev}", src)
        self._labels: _Source | None = None
        if spec.labels is not None:
            ds = open_raster(spec.labels, "label")
            if ds.count not in (1, 3, 4) or np.dtype(ds.dtypes[0]) != np.uint8:
                c, dt = ds.count, ds.dtypes[0]
                ds.close()
                raise BandMismatchError(
                    f"{spec.labels}: labels must be uint8 with 1 band (class indices) or 3 "
                    f"bands (RGB colour codes); this file has {c} band(s) of {dt}"
                )
            self._labels = _Source(
                ds,
                self.geobox,
                indexes=[1] if ds.count == 1 else [1, 2, 3],
                resampling=Resampling.nearest,
                what="label",
            )
            self._sources.append(self._labels)
        bands = list(self._image_names)
        if self._dsm is not None:
            bands.append("dsm")
        if self._dsm is not None or self._ndsm is not None:
            bands.append("ndsm")
        self.band_names: tuple[str, ...] = tuple(bands)

    def _check_image(self, img: rasterio.DatasetReader) -> tuple[str, ...]:
        """The image's band names, once its CRS, grid and pixel type are usable."""
        spec = self.spec
        if img.crs is None:
            raise CRSMismatchError(
                f"{spec.image}: the image has no CRS; assign one (e.g. gdal_edit.py -a_srs "
                "EPSG:32633 FILE) or use a georeferenced export"
            )
        t = img.transform
        if not _north_up(t):  # chips, footprints and blocks are axis-aligned windows
            raise InputError(
                f"{spec.image}: rotated or sheared geotransform (b={t.b:.6g}, d={t.d:.6g}) is "
                f"not supported; warp it to a north-up grid first, e.g. gdalwarp {spec.image} "
                "out.tif"
            )
        names = _image_band_names(img, spec.image_bands)
        if not {np.dtype(dt).kind for dt in img.dtypes} <= {"u", "i", "f"}:
            raise InputError(f"{spec.image}: unsupported pixel type {img.dtypes[0]}")
        return names

    # -- properties -------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Scene id."""
        return self.spec.id

    @property
    def has_labels(self) -> bool:
        """Whether the scene has a label source."""
        return self._labels is not None

    def check_bands(self, bands: Sequence[str]) -> None:
        """Raise :class:`BandMismatchError` naming every band the scene lacks."""
        missing = [b for b in bands if b not in self.band_names]
        if missing:
            raise BandMismatchError(
                f"{self.spec.image}: scene {self.id!r} lacks band(s) {', '.join(missing)} "
                f"(it has {', '.join(self.band_names)}); "
                + (
                    "give a DSM with --dsm"
                    if set(missing) & set(_ELEVATION)
                    else "name the image bands with --band-names"
                )
            )

    # -- reads ------------------------------------------------------------------------

    def read(self, window: Window, *, bands: Sequence[str] | None = None) -> SceneBlock:
        """Read ``bands`` (default: all) over ``window``, boundless.

        Args:
            window: Pixel window on the scene grid; may extend past the edges.
            bands: Band names to read, in the order wanted.

        Returns:
            A :class:`SceneBlock`; invalid pixels are 0 in ``data`` and False in ``valid``.
        """
        names = tuple(bands) if bands is not None else self.band_names
        self.check_bands(names)
        h, w = int(window.height), int(window.width)
        data = np.zeros((len(names), h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        img_wanted = [n for n in names if n in self._image_names]
        if img_wanted:
            arr, inside = self._image.read(window, fill=0.0)
            nod = self._image.nodata
            ok = inside & np.isfinite(arr).all(axis=0)
            if nod is not None and not math.isnan(nod):
                ok &= ~(arr == nod).all(axis=0)
            valid &= ok
            for n in img_wanted:
                data[names.index(n)] = arr[self._image_names.index(n)]
        if "dsm" in names:
            assert self._dsm is not None
            dsm, ok = self._read_elev(self._dsm, window)
            data[names.index("dsm")] = dsm
            valid &= ok
        if "ndsm" in names:
            ndsm, ok = self._read_ndsm(window)
            data[names.index("ndsm")] = ndsm
            valid &= ok
        data[:, ~valid] = 0.0  # every non-finite value is invalid, so none is left
        return SceneBlock(data=data, valid=valid, bands=names, window=window)

    def _read_elev(
        self, src: _Source, window: Window
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        arr, inside = src.read(window, fill=math.nan)
        a = arr[0]
        ok = inside & np.isfinite(a)
        if src.nodata is not None and not math.isnan(src.nodata):
            ok &= a != src.nodata
        return a, ok

    def _read_ndsm(self, window: Window) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        if self._ndsm is not None:
            return self._read_elev(self._ndsm, window)
        assert self._dsm is not None
        dsm, ok = self._read_elev(self._dsm, window)
        ground = self._ground().sample(window)
        ok &= np.isfinite(ground)
        nd = np.where(ok, np.maximum(dsm - ground, 0.0), 0.0).astype(np.float32)
        return nd, ok

    def _ground(self) -> Ground:
        """The scene's ground estimate, computed once per DSM file (see ``raster.ground``)."""
        src = self._dsm
        assert src is not None
        key = (str(src.path), str(self.spec.image), src.path.stat().st_mtime)
        return cached_ground(
            key,
            lambda: estimate_ground(
                self.geobox, lambda window: self._read_elev(src, window), name=str(src.path)
            ),
        )

    def read_labels(self, window: Window) -> tuple[npt.NDArray[np.uint8], int]:
        """Class indices over ``window`` (255 = ignore/outside) and the count of unknown colours.

        Colour-coded labels are decoded with the scene's schema; colours not in it become 255.

        Raises:
            InputError: The scene has no labels.
        """
        if self._labels is None:
            raise InputError(f"scene {self.id!r} has no labels; give a label file")
        arr, inside = self._labels.read(window, fill=0)
        if arr.shape[0] == 1:
            idx = arr[0].astype(np.uint8)
            idx[(idx >= len(self.schema)) & (idx != IGNORE)] = IGNORE
            unknown = 0
        else:
            idx, _ = self.schema.decode(arr.astype(np.uint8))
            unknown = int(np.count_nonzero((idx == IGNORE) & inside))
        idx[~inside] = IGNORE
        return idx, unknown

    def close(self) -> None:
        """Close every dataset."""
        seen: set[int] = set()
        for s in self._sources:
            if id(s.ds) not in seen:
                seen.add(id(s.ds))
                s.close()
        self._sources = []

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _image_band_names(ds: rasterio.DatasetReader, names: Sequence[str] | None) -> tuple[str, ...]:
    path = ds.name
    if names is not None:
        names = tuple(n.strip().lower() for n in names)
        if len(names) != ds.count:
            raise BandMismatchError(
                f"{path}: {len(names)} band names given ({', '.join(names)}) but the file has "
                f"{ds.count} bands; give one name per band"
            )
    else:
        desc = [(d or "").strip().lower() for d in ds.descriptions]
        if all(desc) and all(_BAND_RE.match(d) for d in desc) and len(set(desc)) == len(desc):
            names = tuple(desc)
        elif ds.count == 3:
            names = RGB
        elif ds.count == 4:
            # Potsdam tags IR as alpha: it is data, read it as the nir band.
            if ds.colorinterp[3] == ColorInterp.alpha:
                logger.debug("%s: band 4 is tagged alpha; reading it as nir data", path)
            names = RGBIR
        else:
            raise BandMismatchError(
                f"{path}: expected 3 (RGB) or 4 (RGB+IR) image bands, found {ds.count}; "
                "name the bands with --band-names (e.g. red,green,blue,nir,dsm)"
            )
    if len(set(names)) != len(names):
        raise BandMismatchError(f"{path}: band names must be unique, got {', '.join(names)}")
    return tuple(names)
