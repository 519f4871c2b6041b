"""The ground surface under a DSM, for the derived nDSM (pure: no files, no scenes).

When a scene has a DSM but no nDSM file, its nDSM is ``max(0, DSM - ground)``. The ground
surface is estimated once per scene on a coarse grid (cells of about 1 m, aligned to the
image grid so that every window sees the same values): the minimum DSM per cell, a
grey-scale opening (minimum then maximum filter) over a square of ``2 * GROUND_RADIUS_M``
(50 m), a 7-cell mean filter, and bilinear interpolation back to pixel centres. Buildings
narrower than 50 m vanish from the ground estimate; on wider ones the nDSM underestimates
roof height towards their centre. The coarse grid is small (a 24000 x 24000 scene at 5 cm is
1200 x 1200 cells).

:func:`estimate_ground` computes a :class:`Ground` from a DSM reader (a callable that reads
one window); :func:`cached_ground` keeps one estimate per key (per scene) however many
threads ask for it at once. :class:`geoseg.raster.Scene` wires the two together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg.grid import GeoBox, metres_per_unit

__all__ = [
    "GROUND_CELL_M",
    "GROUND_RADIUS_M",
    "GROUND_SMOOTH_CELLS",
    "DsmReader",
    "Ground",
    "GroundPatch",
    "cached_ground",
    "clear_ground_cache",
    "estimate_ground",
    "interpolate_columns",
    "linear_taps",
]

# Log lines name the package, the public face (as geoseg.train, geoseg.vectorize do).
logger = logging.getLogger("geoseg.raster")

GROUND_CELL_M = 1.0
GROUND_RADIUS_M = 25.0
GROUND_SMOOTH_CELLS = 3

DsmReader = Callable[[Window], tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]]
"""Reads a window of the DSM on the scene grid: heights (h, w) and where they are valid."""


@dataclass
class Ground:
    """Coarse ground surface of a scene, sampled at any window's pixel centres.

    Attributes:
        factor: Scene pixels per coarse cell along each axis.
        grid: Coarse cells; NaN where no valid DSM.
    """

    factor: int
    grid: npt.NDArray[np.float32]

    def sample(self, window: Window) -> npt.NDArray[np.float32]:
        """Bilinear ground heights at the window's pixel centres (edges clamped).

        Separable: the coarse rows are interpolated first (a small array), then the
        columns; the same values as ``scipy.ndimage.map_coordinates(order=1,
        mode="nearest")`` at a fraction of its cost.
        """
        return self.patch(window).sample()

    def patch(self, window: Window) -> GroundPatch:
        """What :meth:`sample` needs for ``window``, small: interpolated coarse rows and taps."""
        h, w = int(window.height), int(window.width)
        f = self.factor
        r0, r1, tr = linear_taps(
            (np.arange(h) + int(window.row_off) + 0.5) / f - 0.5, self.grid.shape[0]
        )
        c0, c1, tc = linear_taps(
            (np.arange(w) + int(window.col_off) + 0.5) / f - 0.5, self.grid.shape[1]
        )
        lo = int(c0.min()) if w else 0
        hi = int(c1.max()) + 1 if w else 0  # only the coarse columns the window needs
        g = self.grid[:, lo:hi]
        rows = (g[r0].astype(np.float64) * (1.0 - tr)[:, None] + g[r1] * tr[:, None]).astype(
            np.float32
        )
        return GroundPatch(
            rows=rows,
            c0=(c0 - lo).astype(np.int64),
            c1=(c1 - lo).astype(np.int64),
            tc=tc.astype(np.float32),
        )


@dataclass(frozen=True)
class GroundPatch:
    """The ground under one window, before its last (column) interpolation.

    ``ground[r, c] = rows[r, c0[c]] + (rows[r, c1[c]] - rows[r, c0[c]]) * tc[c]``: a few KB
    that a model runner sends to its device with the DSM, where the nDSM is made.

    Attributes:
        rows: (h, k) float32: the coarse columns, interpolated at the window's rows.
        c0: (w,) left coarse column of each pixel column.
        c1: (w,) right coarse column.
        tc: (w,) float32 weight of the right one.
    """

    rows: npt.NDArray[np.float32]
    c0: npt.NDArray[np.int64]
    c1: npt.NDArray[np.int64]
    tc: npt.NDArray[np.float32]

    def sample(self) -> npt.NDArray[np.float32]:
        """The ground heights (h, w) float32."""
        return interpolate_columns(self.rows, self.c0, self.c1, self.tc)


def interpolate_columns(rows: Any, c0: Any, c1: Any, tc: Any) -> Any:
    """``rows[:, c0] + (rows[:, c1] - rows[:, c0]) * tc`` in float32, numpy or torch alike.

    The one formula of the ground's last interpolation: the host (numpy) and a model's
    device (torch) get the same bits.
    """
    out = rows[:, c0]  # (h, w), a new array
    out += (rows[:, c1] - out) * tc
    return out


def linear_taps(
    x: npt.NDArray[np.float64], n: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Indices and weight of linear interpolation at ``x`` on ``n`` samples.

    Returns the left and right sample indices and the right sample's weight, with ``x``
    clamped to ``[0, n - 1]``.
    """
    x = np.clip(x, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(x).astype(np.intp), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, x - i0


_CACHE: dict[Hashable, Ground] = {}
_LOCK = threading.Lock()
_ESTIMATING: dict[Hashable, threading.Lock] = {}


def cached_ground(key: Hashable, estimate: Callable[[], Ground]) -> Ground:
    """The ground of ``key``, calling ``estimate()`` only when no thread has cached it yet.

    One estimate runs per key, however many threads ask at once; estimates of other keys
    never wait for it. The cache holds at most 17 grounds (it is emptied when full).

    Args:
        key: Identifies the DSM and grid, e.g. (DSM path, image path, DSM mtime).
        estimate: Computes the ground (e.g. :func:`estimate_ground` bound to a scene).
    """
    with _LOCK:  # held only to look up: other scenes never wait for an estimate
        g = _CACHE.get(key)
        if g is not None:
            return g
        estimating = _ESTIMATING.setdefault(key, threading.Lock())
    with estimating:  # one estimate per scene, however many blocks ask at once
        with _LOCK:
            g = _CACHE.get(key)
        if g is None:
            g = estimate()
            with _LOCK:
                if len(_CACHE) > 16:
                    _CACHE.clear()
                _CACHE[key] = g
                _ESTIMATING.pop(key, None)
    return g


def clear_ground_cache() -> None:
    """Forget every cached ground (the next read of a derived nDSM estimates it again)."""
    with _LOCK:
        _CACHE.clear()


def estimate_ground(geobox: GeoBox, read_dsm: DsmReader, *, name: str) -> Ground:
    """Estimate the ground surface of a scene (see the module docs for the method).

    Args:
        geobox: The scene grid.
        read_dsm: Reads the DSM over a window of ``geobox`` (boundless: pixels outside are
            invalid). Called strip by strip, so memory is one strip.
        name: The DSM's name for log messages (its path).

    Returns:
        The coarse ground; all NaN when the DSM has no valid pixel.
    """
    from scipy.ndimage import distance_transform_edt, maximum_filter, minimum_filter, uniform_filter

    gb = geobox
    res_m = gb.resolution[0] * metres_per_unit(gb)
    f = max(1, round(GROUND_CELL_M / res_m))
    cell_m = f * res_m
    radius = max(1, round(GROUND_RADIUS_M / cell_m))
    ch, cw = -(-gb.height // f), -(-gb.width // f)
    coarse = np.full((ch, cw), np.nan, dtype=np.float32)
    # Stream the DSM in strips of whole coarse rows; memory: one strip.
    strip = max(1, 2048 // f) * f
    for r0 in range(0, gb.height, strip):
        h = min(strip, gb.height - r0)
        dsm, ok = read_dsm(Window(0, r0, cw * f, -(-h // f) * f))
        np.copyto(dsm, np.float32(np.nan), where=~ok)
        hc = dsm.shape[0] // f
        # min over each cell's rows (a contiguous reduction), then over its columns; fmin
        # skips NaN (a cell without a valid pixel stays NaN)
        rows = np.fmin.reduce(dsm.reshape(hc, f, cw * f), axis=1)
        coarse[r0 // f : r0 // f + hc] = np.fmin.reduce(rows.reshape(hc, cw, f), axis=2)
    bad = ~np.isfinite(coarse)
    if bad.all():
        logger.warning("%s: the DSM has no valid pixel; nDSM is all nodata", name)
        return Ground(f, np.full((ch, cw), np.nan, dtype=np.float32))
    if bad.any():
        idx = distance_transform_edt(bad, return_distances=False, return_indices=True)
        coarse = coarse[tuple(idx)]
    size = 2 * radius + 1
    opened = maximum_filter(
        minimum_filter(coarse, size=size, mode="nearest"), size=size, mode="nearest"
    )
    ground = uniform_filter(opened, size=2 * GROUND_SMOOTH_CELLS + 1, mode="nearest")
    return Ground(f, ground.astype(np.float32))
