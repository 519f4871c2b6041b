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

import contextlib
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.windows import Window

from geoseg.errors import (
    BandMismatchError,
    CRSMismatchError,
    InputError,
)
from geoseg.raster.ground import Ground, GroundPatch, cached_ground, estimate_ground
from geoseg.raster.remote import RasterPath, file_stamp
from geoseg.raster.source import Source, grid_of, north_up, open_raster
from geoseg.raster.spill import find_spill, spilling
from geoseg.schema import IGNORE, ClassSchema, load_schema

__all__ = [
    "DEFAULT_MODEL_BANDS",
    "RawBlock",
    "Scene",
    "SceneBlock",
    "SceneSpec",
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

    A path is a local :class:`~pathlib.Path` or a GDAL path string to a remote file
    (``/vsicurl/https://...``, see :mod:`geoseg.raster.remote`).

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
    image: RasterPath
    dsm: RasterPath | None = None
    ndsm: RasterPath | None = None
    labels: RasterPath | None = None
    image_bands: tuple[str, ...] | None = None
    schema: str = "potsdam"

    def open(self) -> Scene:
        """Open the sources and check them (see :class:`Scene`)."""
        return Scene(self)


@dataclass(frozen=True)
class RawBlock:
    """One window of a scene as stored (what a model runner sends to its device).

    Attributes:
        image: The requested image bands (k, rows, cols) in the image's pixel type.
        elevation: The requested elevation bands (e, rows, cols) float32.
        valid: bool (rows, cols), as in :class:`SceneBlock`.
        bands: The requested band names, in order.
        sources: For each requested band, ``("image", i)`` or ``("elevation", i)``: where it
            is; ``("dsm-ground", i)``: the nDSM is ``max(0, elevation[i] - ground)``.
        ground: The ground under the window when a band is ``"dsm-ground"``, else None.
    """

    image: npt.NDArray[np.generic]
    elevation: npt.NDArray[np.float32]
    valid: npt.NDArray[np.bool_]
    bands: tuple[str, ...]
    sources: tuple[tuple[str, int], ...]
    ground: GroundPatch | None = None

    @cached_property
    def all_valid(self) -> bool:
        """Whether every pixel is valid (computed once: readers skip the mask then)."""
        return bool(self.valid.all())


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
        self._sources: list[Source] = []
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
        self.geobox = grid_of(img)
        # Split the image's bands into plain bands and elevation bands stored in it.
        plain = [(i + 1, n) for i, n in enumerate(names) if n not in _ELEVATION]
        self._image = Source(
            img,
            self.geobox,
            indexes=[i for i, _ in plain],
            resampling=Resampling.nearest,
            what="image",
        )
        self._sources.append(self._image)
        self._image_names = tuple(n for _, n in plain)
        self._dsm: Source | None = None
        self._ndsm: Source | None = None
        for elev in _ELEVATION:
            if elev in names:
                idx = names.index(elev) + 1
                src = Source(
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
            src = Source(ds, self.geobox, indexes=[1], resampling=Resampling.bilinear, what=elev)
            self._sources.append(src)
            setattr(self, f"_{elev}", src)
        self._labels: Source | None = None
        if spec.labels is not None:
            ds = open_raster(spec.labels, "label")
            if ds.count not in (1, 3, 4) or np.dtype(ds.dtypes[0]) != np.uint8:
                c, dt = ds.count, ds.dtypes[0]
                ds.close()
                raise BandMismatchError(
                    f"{spec.labels}: labels must be uint8 with 1 band (class indices) or 3 "
                    f"bands (RGB colour codes); this file has {c} band(s) of {dt}"
                )
            self._labels = Source(
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
        if not north_up(t):  # chips, footprints and blocks are axis-aligned windows
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
        """Read ``bands`` (default: all) over ``window``, boundless, as float32.

        Args:
            window: Pixel window on the scene grid; may extend past the edges.
            bands: Band names to read, in the order wanted.

        Returns:
            A :class:`SceneBlock`; invalid pixels are 0 in ``data`` and False in ``valid``.
        """
        raw = self.read_raw(window, bands=bands)
        data = np.empty((len(raw.bands), *raw.valid.shape), dtype=np.float32)
        for k, (kind, i) in enumerate(raw.sources):
            data[k] = raw.image[i] if kind == "image" else raw.elevation[i]
        data[:, ~raw.valid] = 0.0  # every non-finite value is invalid, so none is left
        return SceneBlock(data=data, valid=raw.valid, bands=raw.bands, window=window)

    def read_raw(
        self,
        window: Window,
        *,
        bands: Sequence[str] | None = None,
        derive_ndsm: bool = True,
    ) -> RawBlock:
        """Read ``bands`` over ``window``, boundless, image bands in their own pixel type.

        What a model runner sends to its device (a quarter of float32's bytes for uint8
        imagery): the image bands as stored, the elevation bands as float32, and one validity
        mask. Values of invalid pixels are unspecified. With ``derive_ndsm=False`` a derived
        nDSM is left to the reader's device: its band holds the DSM (source kind
        ``"dsm-ground"``) and :attr:`RawBlock.ground` the ground under the window.
        """
        names = tuple(bands) if bands is not None else self.band_names
        self.check_bands(names)
        h, w = int(window.height), int(window.width)
        valid = np.ones((h, w), dtype=bool)
        img_wanted = tuple(n for n in names if n in self._image_names)
        image: npt.NDArray[np.generic] = np.zeros((0, h, w), dtype=np.uint8)
        if img_wanted:
            keep = [self._image_names.index(n) for n in img_wanted]
            arr, inside = self._image.read(window, fill=0, dtype=self._image.dtype)
            image = arr if keep == list(range(arr.shape[0])) else arr[keep]
            nod = self._image.nodata
            valid &= inside
            if image.dtype.kind == "f":
                valid &= np.isfinite(arr).all(axis=0)
            if nod is not None and not math.isnan(nod):
                valid &= ~(arr == nod).all(axis=0)
        elev_wanted = tuple(n for n in names if n in _ELEVATION)
        elevs, kinds, ground = [], {}, None
        for n in elev_wanted:
            if n == "dsm":
                a, ok = self._read_dsm(window)
            elif not derive_ndsm and self._ndsm is None:
                ground = self._ground().patch(window)  # first: it spills the DSM
                a, ok = self._read_dsm(window)
                if np.isfinite(ground.rows).all():
                    kinds[n] = "dsm-ground"
                else:  # no ground under some pixels: they are invalid, found here
                    a, ok, ground = *self._read_ndsm(window), None
            else:
                a, ok = self._read_ndsm(window)
            elevs.append(a)
            valid &= ok
        elevation = (
            elevs[0][None] if len(elevs) == 1 else np.stack(elevs) if elevs else
            np.zeros((0, h, w), dtype=np.float32)
        )  # fmt: skip
        sources = tuple(
            ("image", img_wanted.index(n))
            if n in img_wanted
            else (kinds.get(n, "elevation"), elev_wanted.index(n))
            for n in names
        )
        return RawBlock(
            image=image,
            elevation=elevation,
            valid=valid,
            bands=names,
            sources=sources,
            ground=ground if kinds else None,
        )

    def _read_elev(
        self, src: Source, window: Window
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
        nd = self._ground().sample(window)  # a new array: made the nDSM in place
        dsm, ok = self._read_dsm(window)
        ok &= np.isfinite(nd)
        np.subtract(dsm, nd, out=nd)
        np.maximum(nd, 0.0, out=nd)  # invalid pixels keep any value: readers mask them
        return nd, ok

    def _dsm_key(self) -> tuple[str, str, float]:
        assert self._dsm is not None
        path = self._dsm.path
        return (str(path), str(self.spec.image), file_stamp(path)[2])

    def _read_dsm(self, window: Window) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The DSM over ``window``: from this process's decoded copy when there is one."""
        assert self._dsm is not None
        spill = find_spill(self._dsm_key())
        if spill is not None:
            with contextlib.suppress(OSError):  # removed meanwhile: read the file
                return spill.read(window)
        return self._read_elev(self._dsm, window)

    def _ground(self) -> Ground:
        """The scene's ground estimate, computed once per DSM file (see ``raster.ground``).

        The estimate reads the whole DSM: what it decodes is spilled to local disk
        (:mod:`geoseg.raster.spill`) for the block reads that follow.
        """
        src = self._dsm
        assert src is not None
        key = self._dsm_key()

        def estimate() -> Ground:
            size = (self.geobox.width, self.geobox.height)
            with spilling(key, *size, lambda window: self._read_elev(src, window)) as read:
                return estimate_ground(self.geobox, read, name=str(src.path))

        return cached_ground(key, estimate)

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
