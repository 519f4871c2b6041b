"""Rendering a layout to arrays: labels, heights (ground, roofs, crowns), image, noBoundary labels.

Pure numpy: noise, blur, ground, hillshade, cast shadows and boundary erosion; no I/O.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.crs import CRS
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from geoseg.schema import IGNORE
from geoseg.synth._objects import TREE, VEG, Layout
from geoseg.synth._records import (
    CRS_EPSG,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    BuildingTruth,
    RoadTruth,
    SynthScene,
)

_GROUND_KEY = (0x67726F75, 0x6E64)  # a separate random stream for the seed-wide terrain

_NB_RADIUS = 3  # noBoundary: pixels within this many pixels of a class boundary are ignored


def render(
    lay: Layout,
    rng: np.random.Generator,
    *,
    size: int,
    res: float,
    transform: Affine,
    seed: int,
) -> SynthScene:
    """Rasterize ``lay`` once into object ids and derive labels, heights and the image.

    ``rng`` continues the scene's random stream after the layout; the ground comes from its
    own stream of ``seed`` (see :func:`_ground`).
    """
    from rasterio.features import rasterize

    objs = lay.ordered()
    x0, y0 = transform.c, transform.f

    def to_map(g: BaseGeometry) -> BaseGeometry:
        return affinity.affine_transform(g, [1.0, 0.0, 0.0, -1.0, x0, y0])

    shape = (size, size)
    n = len(objs) + 1
    id_dtype = np.uint16 if n < 65535 else np.int32
    pairs = [(to_map(o.geom), i + 1) for i, o in enumerate(objs) if not o.geom.is_empty]
    ids = (
        rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype=id_dtype)
        if pairs
        else np.zeros(shape, dtype=id_dtype)
    )

    # Lookup tables indexed by object id; id 0 is the grass background.
    cls_lut = np.array([VEG] + [o.cls for o in objs], dtype=np.uint8)
    colour_lut = np.array([lay.ground] + [o.colour for o in objs], dtype=np.float32)
    height_lut = np.array([0.0] + [o.height for o in objs], dtype=np.float32)
    grain_lut = np.array([0.1] + [o.grain for o in objs], dtype=np.float32)
    clump_lut = np.array([0.08] + [o.clump for o in objs], dtype=np.float32)
    hue_lut = np.array([1.0] + [o.hue for o in objs], dtype=np.float32)
    hue_rgbi = (7.0, 3.0, 0.0, -8.0)  # a yellower / less infrared shift per unit of hue noise

    labels = cls_lut[ids]

    # Heights above ground.
    f_low = _value_noise(rng, shape, max(2, round(3.0 / res)))  # brightness / grass height
    ndsm = height_lut[ids]
    grass = np.clip(0.22 + 0.15 * f_low, 0.0, 0.5)
    np.copyto(ndsm, grass, where=labels == VEG)
    del grass
    for i, o in enumerate(objs, start=1):
        if o.roof is not None:
            _gable(ndsm, ids, i, o.geom.bounds, o.roof, res)
    tree_mask = labels == TREE
    for o in lay.trees:
        if o.crown is not None:
            _crown(ndsm, tree_mask, o.geom.bounds, o.crown, res)
    ground = _ground(seed, transform, size)
    dsm = ground + ndsm
    del ground

    # Image: albedo x (1 + texture) x shading x shadow, plus a vegetation hue shift, blurred.
    white = rng.standard_normal(shape, dtype=np.float32)
    f_clump = _value_noise(rng, shape, max(2, round(0.5 / res)))
    hue = hue_lut[ids] * _value_noise(rng, shape, max(2, round(12.0 / res)))
    mult = grain_lut[ids] * white
    del white
    mult += clump_lut[ids] * f_clump
    del f_clump
    mult += 1.0
    mult += 0.06 * f_low
    del f_low
    mult *= _hillshade(ndsm, res)
    mult *= 1.0 - 0.55 * shadow(ndsm, res)
    image = np.empty((4, *shape), dtype=np.uint8)
    for b in range(4):
        band = colour_lut[:, b][ids] * mult
        if hue_rgbi[b]:
            band += np.float32(hue_rgbi[b]) * hue
        band = _blur(band, 0.6)
        band += 0.5
        np.clip(band, 0, 255, out=band)
        image[b] = band
    del mult, hue

    crs = CRS.from_epsg(CRS_EPSG)
    buildings = tuple(
        BuildingTruth(_as_polygon(to_map(b.poly)), round(b.height, 2), b.roof)
        for b in lay.buildings
    )
    roads = tuple(RoadTruth(_as_polygon(to_map(r.surface)), round(r.width, 2)) for r in lay.roads)
    return SynthScene(
        transform=transform,
        crs=crs,
        image=image,
        dsm=dsm.astype(np.float32, copy=False),
        ndsm=ndsm,
        labels=labels,
        labels_no_boundary=_erode_boundaries(labels, _NB_RADIUS),
        buildings=buildings,
        roads=roads,
    )


def _as_polygon(g: BaseGeometry) -> Polygon:
    if not isinstance(g, Polygon):  # pragma: no cover - layouts only make polygons
        raise TypeError(f"expected a Polygon, got {g.geom_type}")
    return g


def _window(
    bounds: tuple[float, float, float, float], res: float, shape: tuple[int, int]
) -> tuple[slice, slice, npt.NDArray[np.float32], npt.NDArray[np.float32]] | None:
    """Pixel window of local bounds, with the local coordinates of its pixel centres."""
    u0, v0, u1, v1 = bounds
    c0, c1 = max(0, math.floor(u0 / res)), min(shape[1], math.ceil(u1 / res) + 1)
    r0, r1 = max(0, math.floor(v0 / res)), min(shape[0], math.ceil(v1 / res) + 1)
    if c0 >= c1 or r0 >= r1:
        return None
    us = ((np.arange(c0, c1) + 0.5) * res).astype(np.float32)[None, :]
    vs = ((np.arange(r0, r1) + 0.5) * res).astype(np.float32)[:, None]
    return slice(r0, r1), slice(c0, c1), us, vs


def _gable(
    ndsm: npt.NDArray[np.float32],
    ids: npt.NDArray[Any],
    oid: int,
    bounds: tuple[float, float, float, float],
    roof: tuple[float, float, float, float, float, float],
    res: float,
) -> None:
    """Gabled roof heights on the pixels of object ``oid``: eave at the sides, ridge on the axis."""
    win = _window(bounds, res, ndsm.shape)
    if win is None:
        return
    rows, cols, us, vs = win
    cx, cy, ang, hw, eave, ridge = roof
    dist = np.abs(-(us - cx) * math.sin(ang) + (vs - cy) * math.cos(ang))
    height = eave + (ridge - eave) * np.clip(1.0 - dist / hw, 0.0, 1.0)
    mine = ids[rows, cols] == oid
    ndsm[rows, cols][mine] = height[mine]


def _crown(
    ndsm: npt.NDArray[np.float32],
    tree_mask: npt.NDArray[np.bool_],
    bounds: tuple[float, float, float, float],
    crown: tuple[float, float, float, float],
    res: float,
) -> None:
    """A dome over a crown's tree pixels; overlapping crowns keep the higher surface."""
    win = _window(bounds, res, ndsm.shape)
    if win is None:
        return
    rows, cols, us, vs = win
    cx, cy, radius, height = crown
    rel = np.hypot(us - cx, vs - cy) / (radius + res)
    dome = height * (0.55 + 0.45 * np.sqrt(np.clip(1.0 - rel * rel, 0.0, 1.0)))
    sel = tree_mask[rows, cols] & (rel < 1.0)
    sub = ndsm[rows, cols]
    sub[sel] = np.maximum(sub[sel], dome[sel])


def _value_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: int
) -> npt.NDArray[np.float32]:
    """Smooth noise (about unit variance): a coarse random grid upsampled bilinearly."""
    grid = rng.standard_normal((shape[0] // cell + 1, shape[1] // cell + 1), dtype=np.float32)
    return _upsample(grid * np.float32(1.5), cell, shape)


def _upsample(
    grid: npt.NDArray[np.float32], f: int, shape: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Bilinear upsampling by an integer factor, with broadcasting instead of gathers.

    Cell ``k`` of ``grid`` covers output pixels ``k*f .. k*f+f-1`` (its centre lies within
    half a pixel of theirs). The output has ``shape``; cells beyond the grid repeat the edge.
    """
    h, w = shape
    need_r, need_c = -(-h // f) + 2, -(-w // f) + 2
    pad_r, pad_c = max(0, need_r - grid.shape[0] - 1), max(0, need_c - grid.shape[1] - 1)
    g = np.pad(grid, ((1, pad_r), (1, pad_c)), mode="edge")
    wt = np.arange(f, dtype=np.float32) / np.float32(f)
    off = (f + 1) // 2  # output pixel j samples grid position (j + 0.5) / f - 0.5 (+-0.5 px)
    gh, gw = g.shape
    # Columns first, on the small grid; then rows, whose inner loops run over whole rows.
    cols = g[:, :-1, None] * (1 - wt) + g[:, 1:, None] * wt
    cols = np.ascontiguousarray(cols.reshape(gh, (gw - 1) * f)[:, off : off + w])
    out = np.empty((gh - 1, f, w), dtype=np.float32)
    np.multiply(cols[:-1, None, :], (1 - wt)[None, :, None], out=out)
    out += cols[1:, None, :] * wt[None, :, None]
    return out.reshape((gh - 1) * f, w)[off : off + h]


def _blur(x: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Separable 3-tap Gaussian blur (edges repeat), much faster than a general filter."""
    side = math.exp(-0.5 / (sigma * sigma))
    w0, w1 = np.float32(1 / (1 + 2 * side)), np.float32(side / (1 + 2 * side))
    y = x * w0
    y[:, 1:] += w1 * x[:, :-1]
    y[:, :-1] += w1 * x[:, 1:]
    y[:, 0] += w1 * x[:, 0]
    y[:, -1] += w1 * x[:, -1]
    z = y * w0
    z[1:] += w1 * y[:-1]
    z[:-1] += w1 * y[1:]
    z[0] += w1 * y[0]
    z[-1] += w1 * y[-1]
    return z


def _ground(seed: int, transform: Affine, size: int) -> npt.NDArray[np.float32]:
    """Terrain 30..45 m: a sum of long waves in map coordinates, seeded by ``seed`` only.

    ``sin(kx*x + ky*y + p)`` is separable into row and column vectors, so each wave costs
    two outer products and neighbouring scenes continue each other seamlessly.
    """
    g = np.random.default_rng((seed, *_GROUND_KEY))
    out = np.full((size, size), g.uniform(34.0, 40.0), dtype=np.float32)
    centres = np.arange(size, dtype=np.float64) + 0.5
    x = transform.c + transform.a * centres
    y = transform.f + transform.e * centres
    for amp, lo, hi in ((2.5, 1200.0, 2500.0), (1.0, 300.0, 700.0), (0.35, 70.0, 150.0)):
        theta = g.uniform(0, 2 * math.pi)
        k = 2 * math.pi / g.uniform(lo, hi)
        phase = g.uniform(0, 2 * math.pi)
        ax = k * math.cos(theta) * x + phase
        by = k * math.sin(theta) * y
        sx, cx = (amp * np.sin(ax)).astype(np.float32), (amp * np.cos(ax)).astype(np.float32)
        sy, cy = np.sin(by).astype(np.float32), np.cos(by).astype(np.float32)
        out += cy[:, None] * sx[None, :]
        out += sy[:, None] * cx[None, :]
    np.clip(out, 30.0, 45.0, out=out)
    return out


def _sun() -> tuple[float, float, float, float]:
    az, el = math.radians(SUN_AZIMUTH_DEG), math.radians(SUN_ELEVATION_DEG)
    return math.sin(az), math.cos(az), math.sin(el), math.cos(el)


def _hillshade(ndsm: npt.NDArray[np.float32], res: float) -> npt.NDArray[np.float32]:
    """Relative illumination of the surface (1 on flat ground): shades roof sides and crowns."""
    s_az, c_az, s_el, c_el = _sun()
    d_row, d_col = np.gradient(ndsm)
    gx = np.divide(d_col, res, dtype=np.float32)  # east
    del d_col
    gn = np.divide(d_row, -res, dtype=np.float32)  # north
    del d_row
    num = np.add(s_el, -c_el * (s_az * gx + c_az * gn), dtype=np.float32)
    gx *= gx
    gn *= gn
    gx += gn
    gx += 1.0
    np.sqrt(gx, out=gx)
    gx *= s_el
    num /= gx
    return np.clip(num, 0.55, 1.35, out=num)


def shadow(ndsm: npt.NDArray[np.float32], res: float) -> npt.NDArray[np.float32]:
    """Cast-shadow strength 0..1, from a sweep towards the sun at about 20 cm resolution.

    A low-resolution cell is in shadow when some cell towards the sun rises above the ray
    from it to the sun: ``max_k(low[p + k*step] - k*drop) > low[p]``.
    """
    from scipy.ndimage import gaussian_filter

    s_az, c_az, s_el, c_el = _sun()
    h, w = ndsm.shape
    f = max(1, round(0.2 / res))
    low = ndsm[::f, ::f].copy()  # block maxima
    for i in range(f):
        for j in range(f):
            part = ndsm[i::f, j::f]
            np.maximum(
                low[: part.shape[0], : part.shape[1]],
                part,
                out=low[: part.shape[0], : part.shape[1]],
            )
    hl, wl = low.shape
    drop = f * res * s_el / c_el  # ray rise per low-res step
    acc = low.copy()
    steps = min(math.ceil(float(low.max() - low.min()) / drop), 4 * max(hl, wl))
    for k in range(1, steps + 1):
        dc, dr = round(k * s_az), round(-k * c_az)  # towards the sun
        if abs(dr) >= hl or abs(dc) >= wl:
            break
        src = low[max(dr, 0) : hl + min(dr, 0), max(dc, 0) : wl + min(dc, 0)]
        dst = acc[max(-dr, 0) : hl + min(-dr, 0), max(-dc, 0) : wl + min(-dc, 0)]
        np.maximum(dst, src - np.float32(k * drop), out=dst)
    strength = np.clip((acc - low - 0.25) / 0.5, 0.0, 1.0).astype(np.float32)
    strength = gaussian_filter(strength, 0.7)
    return _upsample(strength, f, (h, w)) if f > 1 else strength


def _erode_boundaries(labels: npt.NDArray[np.uint8], radius: int) -> npt.NDArray[np.uint8]:
    """Labels with every pixel that has a pixel of another class within ``radius`` px set to IGNORE.

    This is each class eroded with a disc of ``radius`` (centre-to-centre distance), as the
    ISPRS ``noBoundary`` labels; a straight boundary becomes a band ``2 * radius`` px wide.
    """
    h, w = labels.shape
    band = np.zeros(labels.shape, dtype=np.bool_)
    for dy in range(radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or (dy == 0 and dx <= 0):
                continue  # half of the disc: each pair of pixels is compared once
            if dy >= h or abs(dx) >= w:
                continue
            a = (slice(0, h - dy), slice(max(0, -dx), w - max(0, dx)))
            b = (slice(dy, h), slice(max(0, dx), w - max(0, -dx)))
            diff = labels[a] != labels[b]
            band[a] |= diff
            band[b] |= diff
    out = labels.copy()
    out[band] = IGNORE
    return out
