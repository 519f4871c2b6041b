"""Synthetic Potsdam-like scenes: image, DSM, labels and true polygons from one geometry.

:func:`make_scene` builds one scene in memory (pure: no I/O): a layout of roads, pavements,
parking lots, buildings, trees, cars, clutter and grass patches drawn as shapely polygons,
rasterized once into an object-id raster from which the class labels, the DSM and the
image are all derived. :func:`synthesize` writes scenes in the ISPRS Potsdam folder layout
(``4_Ortho_RGBIR``, ``1_DSM``, ``5_Labels_all``, ``5_Labels_all_noBoundary``) plus the true
building and road polygons in ``truth.gpkg``, so that the Potsdam reader reads it unchanged.

Geometry is made in a local metric frame: ``u`` east and ``v`` south of the scene's
top-left corner (``u = col * res``, ``v = row * res``), and moved to map coordinates only
at the end. Every scene is determined by ``(seed, index)``; the ground surface depends on
the seed and map position only, so neighbouring scenes share continuous terrain.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from geoseg import __version__
from geoseg._io import atomic_path
from geoseg.errors import InputError
from geoseg.grid import GeoBox
from geoseg.schema import IGNORE, POTSDAM

__all__ = [
    "CRS_EPSG",
    "MAX_SIZE",
    "MIN_SIZE",
    "PIXEL_SIZE",
    "SUN_AZIMUTH_DEG",
    "SUN_ELEVATION_DEG",
    "BuildingTruth",
    "RoadTruth",
    "ScenePaths",
    "SynthResult",
    "SynthScene",
    "make_scene",
    "scene_id",
    "scene_transform",
    "synthesize",
]

logger = logging.getLogger(__name__)

PIXEL_SIZE = 0.05
"""Ground sample distance of synthetic scenes in metres (as ISPRS Potsdam)."""
CRS_EPSG = 32633
"""EPSG code of synthetic scenes (WGS 84 / UTM 33N, as ISPRS Potsdam)."""
MIN_SIZE = 64
"""Smallest scene edge in pixels."""
MAX_SIZE = 12000
"""Largest scene edge in pixels (twice a Potsdam tile; memory grows with its square)."""
SUN_AZIMUTH_DEG = 150.0
"""Sun azimuth, degrees clockwise from north: shadows fall to the north-north-west."""
SUN_ELEVATION_DEG = 55.0
"""Sun elevation in degrees: a shadow is ``height / tan(55°)`` ≈ 0.7 x the height long."""

_ORIGIN = (366000.0, 5808000.0)
_GROUND_KEY = (0x67726F75, 0x6E64)  # a separate random stream for the seed-wide terrain
_BLOCK = 608  # internal tiling of every raster, as the real files
_NB_RADIUS = 3  # noBoundary: pixels within this many pixels of a class boundary are ignored

_IMP = POTSDAM.index("impervious_surfaces")
_BLD = POTSDAM.index("building")
_VEG = POTSDAM.index("low_vegetation")
_TREE = POTSDAM.index("tree")
_CAR = POTSDAM.index("car")
_CLUT = POTSDAM.index("clutter")

Colour = tuple[float, float, float, float]  # R, G, B, IR
Pt = Sequence[float] | npt.NDArray[np.float64]  # a point (x, y) in local metres

# Albedos (R, G, B, IR) in digital numbers, before shading and texture.
_GRASS: tuple[Colour, ...] = (
    (92, 118, 68, 196),
    (108, 128, 76, 186),
    (134, 140, 92, 166),
    (76, 106, 62, 210),
    (148, 144, 104, 150),
)
_TREES: tuple[Colour, ...] = (
    (52, 78, 48, 182),
    (60, 86, 52, 192),
    (45, 68, 45, 170),
    (68, 90, 56, 196),
)
_ROOFS: dict[str, Colour] = {
    "red": (168, 80, 60, 118),
    "grey": (128, 128, 132, 104),
    "dark": (66, 66, 72, 70),
    "light": (204, 202, 196, 138),
    "brown": (122, 94, 74, 96),
}
_ASPHALT: Colour = (92, 92, 96, 78)
_PARKING: Colour = (106, 105, 108, 86)
_PAVEMENT: Colour = (154, 151, 146, 110)
_PLAZA: Colour = (180, 173, 162, 120)
_MARKING: Colour = (228, 228, 222, 196)
_CARS: tuple[Colour, ...] = (
    (228, 228, 226, 190),
    (28, 30, 34, 40),
    (164, 168, 172, 140),
    (98, 100, 104, 90),
    (172, 36, 32, 96),
    (34, 54, 140, 62),
    (38, 92, 58, 90),
    (204, 172, 62, 150),
)
_CAR_GLASS: Colour = (38, 44, 52, 44)
_CLUTTER: tuple[Colour, ...] = (
    (124, 84, 48, 110),
    (218, 120, 38, 150),
    (44, 84, 168, 86),
    (152, 128, 96, 130),
    (200, 196, 186, 170),
    (64, 58, 52, 60),
)
_CONTAINERS: tuple[Colour, ...] = (
    (62, 112, 64, 120),
    (152, 44, 38, 92),
    (52, 72, 142, 70),
    (134, 134, 124, 112),
)
_DIRT: tuple[Colour, ...] = ((146, 118, 86, 124), (170, 150, 120, 140), (110, 92, 72, 100))


# -- public records --------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildingTruth:
    """A true building footprint.

    Attributes:
        polygon: Footprint in map coordinates (EPSG:32633); may have holes (courtyards).
        height_m: Height above ground of the roof (the ridge for gabled roofs).
        roof: Roof form.
    """

    polygon: Polygon
    height_m: float
    roof: Literal["flat", "gabled"]


@dataclass(frozen=True)
class RoadTruth:
    """A true road surface (the carriageway, without pavements), clipped to its scene.

    Attributes:
        polygon: Surface in map coordinates (EPSG:32633).
        width_m: Carriageway width in metres.
    """

    polygon: Polygon
    width_m: float


@dataclass(frozen=True, eq=False)
class SynthScene:
    """One synthetic scene in memory.

    Attributes:
        transform: Pixel-to-map affine of the grid.
        crs: Coordinate reference system (EPSG:32633).
        image: ``(4, H, W)`` uint8 bands red, green, blue, IR.
        dsm: ``(H, W)`` float32 absolute heights in metres.
        ndsm: ``(H, W)`` float32 heights above ground in metres (``dsm`` minus the ground).
        labels: ``(H, W)`` uint8 class indices of the POTSDAM schema.
        labels_no_boundary: ``labels`` with pixels within 3 px of a class boundary set to
            255 (ignore), like the ISPRS ``noBoundary`` labels.
        buildings: True building footprints (rasterizing them gives exactly the building
            pixels of ``labels``).
        roads: True road surfaces (their pixels are impervious surfaces or cars).
    """

    transform: Affine
    crs: CRS
    image: npt.NDArray[np.uint8]
    dsm: npt.NDArray[np.float32]
    ndsm: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    labels_no_boundary: npt.NDArray[np.uint8]
    buildings: tuple[BuildingTruth, ...]
    roads: tuple[RoadTruth, ...]

    @property
    def geobox(self) -> GeoBox:
        """The scene's grid."""
        h, w = self.labels.shape
        return GeoBox(w, h, self.transform, self.crs)


@dataclass(frozen=True)
class ScenePaths:
    """The files of one written scene.

    Attributes:
        image: ``4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif``.
        dsm: ``1_DSM/dsm_potsdam_{rr}_{cc}.tif``.
        labels: ``5_Labels_all/top_potsdam_{r}_{c}_label.tif``.
        labels_no_boundary: ``5_Labels_all_noBoundary/top_potsdam_{r}_{c}_label_noBoundary.tif``.
    """

    image: Path
    dsm: Path
    labels: Path
    labels_no_boundary: Path


@dataclass(frozen=True)
class SynthResult:
    """What :func:`synthesize` wrote.

    Attributes:
        root: The output folder (Potsdam layout).
        scene_ids: Tile ids in order (``2_10``, ``2_11``, ...).
        paths: Files of each scene, by tile id.
        truth: ``truth.gpkg`` with layers ``buildings`` and ``roads``.
        manifest: ``synth.json``, the parameters that reproduce the folder.
    """

    root: Path
    scene_ids: tuple[str, ...]
    paths: Mapping[str, ScenePaths]
    truth: Path
    manifest: Path


# -- public functions ------------------------------------------------------------------------


def scene_id(index: int) -> str:
    """Potsdam-style tile id of scene ``index`` (0-based): ``2_10``, ``2_11``, ... ``3_10``."""
    row, col = _row_col(index)
    return f"{row}_{col}"


def scene_transform(index: int, size: int) -> Affine:
    """Transform of scene ``index`` of ``size`` px: scenes lie edge to edge on a grid."""
    row, col = _row_col(index)
    x0 = _ORIGIN[0] + (col - 10) * size * PIXEL_SIZE
    y0 = _ORIGIN[1] - (row - 2) * size * PIXEL_SIZE
    return Affine(PIXEL_SIZE, 0.0, x0, 0.0, -PIXEL_SIZE, y0)


def make_scene(*, size: int, seed: int, transform: Affine, index: int = 0) -> SynthScene:
    """Build one synthetic scene in memory (no I/O).

    The content is determined by ``(seed, index)``; ``make_scene(size=s, seed=k,
    transform=scene_transform(i, s), index=i)`` is scene ``i`` of ``synthesize(seed=k)``.

    Args:
        size: Scene edge in pixels (``MIN_SIZE``..``MAX_SIZE``).
        seed: Random seed (>= 0).
        transform: North-up transform with square pixels; its pixel size sets the metric
            scale (objects have real-world sizes in metres).
        index: Scene index, a second part of the seed.

    Returns:
        The scene's arrays and true polygons.

    Raises:
        InputError: A bad size, seed, index or transform.
    """
    _check_size_seed(size, seed)
    if index < 0:
        raise InputError(f"index={index}: a scene index must be >= 0")
    res = _check_transform(transform)
    rng = np.random.default_rng((seed, index))
    t0 = time.perf_counter()
    lay = _layout(rng, size * res)
    t1 = time.perf_counter()
    scene = _render(lay, rng, size=size, res=res, transform=transform, seed=seed)
    logger.debug(
        "scene %d (%d px): layout %.2f s, render %.2f s, %d objects",
        index,
        size,
        t1 - t0,
        time.perf_counter() - t1,
        len(lay.ordered()),
    )
    return scene


def synthesize(
    out_dir: str | os.PathLike[str],
    *,
    scenes: int,
    size: int,
    seed: int,
    overwrite: bool = False,
) -> SynthResult:
    """Write synthetic scenes in the ISPRS Potsdam folder layout.

    The whole folder is built under a temporary name beside ``out_dir`` and renamed into
    place at the end, so an interrupted run leaves nothing at ``out_dir``.

    Args:
        out_dir: The folder to create.
        scenes: Number of scenes (>= 1); scene ``i`` gets tile id ``{2 + i // 10}_{10 + i % 10}``.
        size: Scene edge in pixels (``MIN_SIZE``..``MAX_SIZE``; Potsdam tiles are 6000).
        seed: Random seed (>= 0); the same seed gives the same files.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        The written folder, its scene ids and file paths.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is false.
        InputError: A bad number of scenes, size or seed.
    """
    if scenes < 1:
        raise InputError(f"scenes={scenes}: the number of scenes must be >= 1")
    _check_size_seed(size, seed)
    final = Path(out_dir)
    ids = tuple(scene_id(i) for i in range(scenes))
    buildings: list[dict[str, Any]] = []
    roads: list[dict[str, Any]] = []
    with atomic_path(final, overwrite=overwrite) as tmp:
        tmp.mkdir()
        for i, sid in enumerate(ids):
            t0 = time.perf_counter()
            scene = make_scene(size=size, seed=seed, transform=scene_transform(i, size), index=i)
            _write_scene(tmp, sid, scene)
            buildings += [
                {"scene": sid, "height_m": b.height_m, "roof": b.roof, "geometry": b.polygon}
                for b in scene.buildings
            ]
            roads += [
                {"scene": sid, "width_m": r.width_m, "geometry": r.polygon} for r in scene.roads
            ]
            logger.info(
                "scene %s (%d x %d px): %d buildings, %d roads, %.1f s",
                sid,
                size,
                size,
                len(scene.buildings),
                len(scene.roads),
                time.perf_counter() - t0,
            )
            del scene
        _write_truth(tmp / "truth.gpkg", buildings, roads)
        manifest = {
            "generator": "geoseg.synth",
            "geoseg_version": __version__,
            "seed": seed,
            "scenes": scenes,
            "size": size,
            "scene_ids": list(ids),
            "pixel_size": PIXEL_SIZE,
            "crs": f"EPSG:{CRS_EPSG}",
            "sun_azimuth_deg": SUN_AZIMUTH_DEG,
            "sun_elevation_deg": SUN_ELEVATION_DEG,
        }
        (tmp / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return SynthResult(
        root=final,
        scene_ids=ids,
        paths={sid: _scene_paths(final, sid) for sid in ids},
        truth=final / "truth.gpkg",
        manifest=final / "synth.json",
    )


# -- validation and naming -------------------------------------------------------------------


def _row_col(index: int) -> tuple[int, int]:
    if index < 0:
        raise InputError(f"index={index}: a scene index must be >= 0")
    return 2 + index // 10, 10 + index % 10


def _check_size_seed(size: int, seed: int) -> None:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(
            f"size={size}: the scene size must be between {MIN_SIZE} and {MAX_SIZE} px"
        )
    if seed < 0:
        raise InputError(f"seed={seed}: the seed must be >= 0")


def _check_transform(transform: Affine) -> float:
    a, b, e, d = transform.a, transform.b, transform.e, transform.d
    if b != 0 or d != 0 or a <= 0 or e >= 0 or not math.isclose(a, -e, rel_tol=1e-9):
        raise InputError(
            f"transform {tuple(transform)[:6]}: synthetic scenes need a north-up grid with "
            "square pixels, e.g. Affine(0.05, 0, x0, 0, -0.05, y0)"
        )
    return float(a)


def _scene_paths(root: Path, sid: str) -> ScenePaths:
    r, c = (int(v) for v in sid.split("_"))
    return ScenePaths(
        image=root / "4_Ortho_RGBIR" / f"top_potsdam_{r}_{c}_RGBIR.tif",
        dsm=root / "1_DSM" / f"dsm_potsdam_{r:02d}_{c:02d}.tif",
        labels=root / "5_Labels_all" / f"top_potsdam_{r}_{c}_label.tif",
        labels_no_boundary=root
        / "5_Labels_all_noBoundary"
        / f"top_potsdam_{r}_{c}_label_noBoundary.tif",
    )


# -- layout (geometry in local metres) -------------------------------------------------------


@dataclass
class _Obj:
    """A drawable object: geometry in local metres and how it looks."""

    geom: BaseGeometry
    cls: int
    colour: Colour
    height: float = 0.0  # flat height above ground (m)
    grain: float = 0.03  # pixel-noise amplitude (relative)
    clump: float = 0.0  # metre-scale texture amplitude (relative)
    hue: float = 0.0  # low-frequency yellow/green shift (vegetation)
    roof: tuple[float, float, float, float, float, float] | None = None  # cx cy ang hw eave ridge
    crown: tuple[float, float, float, float] | None = None  # cx cy radius height


@dataclass
class _Road:
    centre: LineString  # centre line clipped to the scene
    angle: float
    width: float
    pave: float
    surface: Polygon  # carriageway
    outer: Polygon  # carriageway + pavements

    @property
    def d(self) -> npt.NDArray[np.float64]:
        return np.array([math.cos(self.angle), math.sin(self.angle)])

    @property
    def n(self) -> npt.NDArray[np.float64]:
        return np.array([-math.sin(self.angle), math.cos(self.angle)])

    def point(self, t: float) -> npt.NDArray[np.float64]:
        p = self.centre.interpolate(t)
        return np.array([p.x, p.y])


@dataclass
class _Building:
    poly: Polygon
    height: float
    roof: Literal["flat", "gabled"]


@dataclass
class _Layout:
    extent: float
    roads: list[_Road] = field(default_factory=list)
    buildings: list[_Building] = field(default_factory=list)
    veg: list[_Obj] = field(default_factory=list)
    paved: list[_Obj] = field(default_factory=list)
    surfaces: list[_Obj] = field(default_factory=list)
    marks: list[_Obj] = field(default_factory=list)
    clutter: list[_Obj] = field(default_factory=list)
    cars: list[_Obj] = field(default_factory=list)
    trees: list[_Obj] = field(default_factory=list)
    houses: list[_Obj] = field(default_factory=list)
    lots: list[Polygon] = field(default_factory=list)

    def ordered(self) -> list[_Obj]:
        """Objects in burn order: later ones cover earlier ones; buildings are never covered."""
        return (
            self.veg
            + self.paved
            + self.surfaces
            + self.marks
            + self.clutter
            + self.cars
            + self.trees
            + self.houses
        )


class _Obstacles:
    """Geometries to keep clear of, with a spatial index rebuilt on demand."""

    def __init__(self, geoms: Iterable[BaseGeometry] = ()) -> None:
        self._items: list[BaseGeometry] = [g for g in geoms if not g.is_empty]
        self._tree: shapely.STRtree | None = None

    def add(self, geom: BaseGeometry) -> None:
        self._items.append(geom)
        self._tree = None

    def hits(self, geom: BaseGeometry, distance: float = 0.0) -> bool:
        if not self._items:
            return False
        if self._tree is None:
            self._tree = shapely.STRtree(self._items)
        if distance > 0:
            idx = self._tree.query(geom, predicate="dwithin", distance=distance)
        else:
            idx = self._tree.query(geom, predicate="intersects")
        return len(idx) > 0


def _rect(c: Pt, length: float, width: float, angle: float) -> Polygon:
    """A rectangle centred at ``c``, ``length`` along ``angle``."""
    ca, sa = math.cos(angle), math.sin(angle)
    hl, hw = length / 2, width / 2
    pts = [(-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)]
    return Polygon([(c[0] + x * ca - y * sa, c[1] + x * sa + y * ca) for x, y in pts])


def _place(geom: BaseGeometry, c: Pt, angle: float) -> BaseGeometry:
    ca, sa = math.cos(angle), math.sin(angle)
    return affinity.affine_transform(geom, [ca, -sa, sa, ca, float(c[0]), float(c[1])])


def _blob(rng: np.random.Generator, c: Pt, radius: float) -> Polygon:
    """An irregular star-shaped polygon."""
    k = int(rng.integers(7, 12))
    ang = np.sort(rng.uniform(0, 2 * math.pi, k))
    rad = radius * rng.uniform(0.55, 1.0, k)
    return Polygon(np.column_stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)]))


def _jitter(rng: np.random.Generator, colour: Colour, amount: float = 0.08) -> Colour:
    f = rng.uniform(1 - amount, 1 + amount)
    r, g, b, ir = (float(np.clip(v * f + rng.normal(0, 3), 0, 255)) for v in colour)
    return (r, g, b, ir)


def _pick(rng: np.random.Generator, items: Sequence[Colour]) -> Colour:
    return items[int(rng.integers(len(items)))]


def _layout(rng: np.random.Generator, extent: float) -> _Layout:
    lay = _Layout(extent)
    scene = box(0, 0, extent, extent)
    _make_roads(rng, lay, scene)
    _make_lots(rng, lay)
    _make_buildings(rng, lay)
    _make_paths_and_grass(rng, lay)
    _make_road_cars(rng, lay)
    _make_trees(rng, lay)
    _make_clutter(rng, lay)
    return lay


def _make_roads(rng: np.random.Generator, lay: _Layout, scene: Polygon) -> None:
    big = lay.extent
    n = max(1, round(big / 90.0 * rng.uniform(0.7, 1.3)))
    theta0 = rng.uniform(0, math.pi)
    for k in range(n):
        for _ in range(25):
            if rng.random() < 0.2:
                ang = rng.uniform(0, math.pi)
            else:
                ang = theta0 + (k % 2) * math.pi / 2 + rng.normal(0, math.radians(4))
            d = np.array([math.cos(ang), math.sin(ang)])
            p = rng.uniform(0.15 * big, 0.85 * big, 2)
            width = rng.uniform(6.0, 14.0)
            pave = rng.uniform(1.5, 3.5)
            line = LineString([p - 2 * big * d, p + 2 * big * d])
            centre = line.intersection(scene)
            if not isinstance(centre, LineString) or centre.length < 0.3 * big:
                continue
            if any(_too_close(ang, width + 2 * pave, centre, r) for r in lay.roads):
                continue
            surface = line.buffer(width / 2, cap_style="flat").intersection(scene)
            outer = line.buffer(width / 2 + pave, cap_style="flat").intersection(scene)
            if not isinstance(surface, Polygon) or not isinstance(outer, Polygon):
                continue
            lay.roads.append(_Road(centre, ang, width, pave, surface, outer))
            break
    for r in lay.roads:
        lay.paved.append(_Obj(r.outer, _IMP, _jitter(rng, _PAVEMENT, 0.05), grain=0.03))
        lay.surfaces.append(_Obj(r.surface, _IMP, _jitter(rng, _ASPHALT, 0.06), grain=0.04))
    for r in lay.roads:
        marks = _road_markings(rng, r, [o.surface for o in lay.roads if o is not r])
        if not marks.is_empty:
            lay.marks.append(_Obj(marks, _IMP, _MARKING, grain=0.03))


def _too_close(ang: float, span: float, centre: LineString, other: _Road) -> bool:
    diff = abs((ang - other.angle + math.pi / 2) % math.pi - math.pi / 2)
    if diff >= math.radians(25):
        return False  # crossing roads are fine
    gap = 30.0 + (span + other.width + 2 * other.pave) / 2
    return bool(centre.distance(other.centre) < gap)


def _road_markings(
    rng: np.random.Generator, road: _Road, others: Sequence[Polygon]
) -> BaseGeometry:
    big = 2 * road.centre.length
    start = road.point(0.0)
    parts: list[BaseGeometry] = []
    if road.width >= 7.0:  # dashed centre line
        for t in np.arange(rng.uniform(0, 9.0), road.centre.length, 9.0):
            parts.append(_rect(road.point(float(t)), 3.0, 0.15, road.angle))
    for side in (-1.0, 1.0):  # solid edge lines
        off = start + side * (road.width / 2 - 0.35) * road.n
        line = LineString([off - big * road.d, off + big * road.d])
        parts.append(line.buffer(0.06, cap_style="flat"))
    marks = shapely.unary_union(parts).intersection(road.surface)
    if others:
        marks = marks.difference(shapely.unary_union([o.buffer(0.5) for o in others]))
    return marks


def _footprint(rng: np.random.Generator, a: float, b: float) -> tuple[Polygon, str]:
    """A footprint centred at the origin, ``a`` along x and ``b`` along y."""
    outer = box(-a / 2, -b / 2, a / 2, b / 2)
    feasible = {
        "rect": 0.45,
        "L": 0.22 if a >= 14 and b >= 14 else 0.0,
        "U": 0.15 if a >= 18 and b >= 12 else 0.0,
        "court": 0.18 if a >= 20 and b >= 20 else 0.0,
    }
    weights = np.array(list(feasible.values()))
    kind = list(feasible)[int(rng.choice(len(feasible), p=weights / weights.sum()))]
    if kind == "L":
        wa = rng.uniform(6.0, min(12.0, a - 6.0))
        wb = rng.uniform(6.0, min(12.0, b - 6.0))
        cut = box(-a / 2 + wa, -b / 2 + wb, a / 2 + 1, b / 2 + 1)
        poly = outer.difference(cut)
        sx, sy = (float(rng.choice([-1.0, 1.0])) for _ in range(2))
        return affinity.scale(poly, sx, sy, origin=(0, 0)), "L"
    if kind == "U":
        wing = rng.uniform(5.0, min(10.0, (a - 6.0) / 2))
        depth = rng.uniform(0.4, 0.7) * b
        notch = box(-a / 2 + wing, b / 2 - depth, a / 2 - wing, b / 2 + 1)
        poly = outer.difference(notch)
        sy = float(rng.choice([-1.0, 1.0]))
        return affinity.scale(poly, 1.0, sy, origin=(0, 0)), "U"
    if kind == "court":
        ring = rng.uniform(6.0, min(10.0, min(a, b) / 2 - 3.0))
        inner = box(-a / 2 + ring, -b / 2 + ring, a / 2 - ring, b / 2 - ring)
        return Polygon(outer.exterior.coords, [inner.exterior.coords[::-1]]), "court"
    return outer, "rect"


def _nearest_road_angle(roads: Sequence[_Road], c: Pt) -> float | None:
    if not roads:
        return None
    p = Point(c[0], c[1])
    return min(roads, key=lambda r: r.centre.distance(p)).angle


def _make_buildings(rng: np.random.Generator, lay: _Layout) -> None:
    big = lay.extent
    inner = box(0.5, 0.5, big - 0.5, big - 0.5)
    blocked = _Obstacles(
        [r.outer.buffer(1.0) for r in lay.roads] + [g.buffer(1.0) for g in lay.lots]
    )
    target = rng.uniform(0.18, 0.32) * big * big
    max_dim = float(np.clip(0.55 * big, 8.0, 40.0))
    built = 0.0
    attempts = 80 + int(big * big / 120)
    for i in range(attempts + 200):
        if built >= target or (i >= attempts and lay.buildings):
            break
        small = i >= attempts  # last resort: one small building anywhere
        a = rng.uniform(8.0, 10.0 if small else max_dim)
        b = rng.uniform(8.0, 10.0 if small else min(max_dim, 28.0))
        fp, kind = _footprint(rng, a, b)
        along = bool(lay.roads) and not small and rng.random() < 0.7
        road: _Road | None = None
        side = 1.0
        setback = 0.0
        base = np.zeros(2)
        if along:
            road = lay.roads[int(rng.integers(len(lay.roads)))]
            base = road.point(rng.uniform(0, road.centre.length))
            side = float(rng.choice([-1.0, 1.0]))
            setback = rng.uniform(2.0, 9.0)
            off = road.width / 2 + road.pave + setback + b / 2
            c = base + side * off * road.n
            ang = road.angle + rng.normal(0, 0.015)
        else:
            c = rng.uniform(0, big, 2)
            near = _nearest_road_angle(lay.roads, c)
            if near is not None and rng.random() < 0.8:
                ang = near + float(rng.choice([0.0, math.pi / 2])) + rng.normal(0, 0.02)
            else:
                ang = rng.uniform(0, math.pi)
        poly = _place(fp, c, ang)
        if not isinstance(poly, Polygon) or not inner.contains(poly) or blocked.hits(poly):
            continue
        gabled = kind == "rect" and rng.random() < 0.45
        b_obj = _building_object(rng, poly, c, ang, a, b, gabled)
        lay.houses.append(b_obj)
        lay.buildings.append(_Building(poly, _top(b_obj), "gabled" if gabled else "flat"))
        blocked.add(poly.buffer(rng.uniform(1.5, 5.0), join_style="mitre"))
        built += poly.area
        if not gabled and poly.area > 150:
            _roof_structures(rng, lay, poly, b_obj.height)
        if rng.random() < 0.35:  # paved apron around the building
            apron = poly.buffer(rng.uniform(1.5, 4.0), join_style="mitre").intersection(inner)
            lay.paved.append(_Obj(apron, _IMP, _jitter(rng, _PAVEMENT, 0.1), grain=0.03))
        if road is not None and rng.random() < 0.5:  # driveway to the road
            length = road.pave + setback + 1.0
            along_off = rng.uniform(-a / 2 + 2, a / 2 - 2) if a > 5 else 0.0
            mid = base + side * (road.width / 2 + length / 2 - 0.5) * road.n + along_off * road.d
            drive = _rect(mid, length, rng.uniform(2.5, 4.0), road.angle + math.pi / 2)
            drive_in = drive.intersection(inner)
            lay.paved.append(_Obj(drive_in, _IMP, _jitter(rng, _PAVEMENT, 0.1), grain=0.03))


def _top(obj: _Obj) -> float:
    return obj.roof[5] if obj.roof is not None else obj.height


def _building_object(
    rng: np.random.Generator,
    poly: Polygon,
    c: Pt,
    ang: float,
    a: float,
    b: float,
    gabled: bool,
) -> _Obj:
    if gabled:
        colour = _ROOFS[
            str(rng.choice(["red", "grey", "dark", "brown"], p=[0.55, 0.15, 0.15, 0.15]))
        ]
        ridge_ang, hw = (ang, b / 2) if a >= b else (ang + math.pi / 2, a / 2)
        eave = rng.uniform(4.0, 12.0)
        ridge = min(25.0, eave + hw * math.tan(math.radians(rng.uniform(25.0, 42.0))))
        roof = (float(c[0]), float(c[1]), ridge_ang, hw, eave, ridge)
        return _Obj(poly, _BLD, _jitter(rng, colour), eave, grain=0.03, roof=roof)
    colour = _ROOFS[
        str(rng.choice(["grey", "dark", "light", "brown", "red"], p=[0.34, 0.24, 0.28, 0.08, 0.06]))
    ]
    height = 4.0 + 21.0 * rng.beta(1.6, 3.0)
    return _Obj(poly, _BLD, _jitter(rng, colour), height, grain=0.025)


def _roof_structures(rng: np.random.Generator, lay: _Layout, poly: Polygon, height: float) -> None:
    """Small boxes on a flat roof (vents, skylights): class building, a little higher."""
    core = poly.buffer(-1.5)
    if core.is_empty:
        return
    x0, y0, x1, y1 = core.bounds
    for _ in range(int(rng.integers(0, 4))):
        for _try in range(10):
            c = (rng.uniform(x0, x1), rng.uniform(y0, y1))
            part = _rect(c, rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(0, math.pi))
            if core.contains(part):
                colour = _ROOFS[str(rng.choice(["grey", "light", "dark"]))]
                h = height + rng.uniform(0.6, 2.0)
                lay.houses.append(_Obj(part, _BLD, _jitter(rng, colour), h, grain=0.02))
                break


def _lot_position(
    rng: np.random.Generator, road: _Road, a: float, b: float
) -> tuple[npt.NDArray[np.float64], float, float]:
    base = road.point(rng.uniform(0, road.centre.length))
    side = float(rng.choice([-1.0, 1.0]))
    off = road.width / 2 + road.pave + rng.uniform(0.0, 1.0) + b / 2
    return base + side * off * road.n, road.angle, side


def _make_lots(rng: np.random.Generator, lay: _Layout) -> None:
    """Parking lots (with parked cars) and plazas beside roads."""
    big = lay.extent
    if not lay.roads:
        return
    inner = box(0.5, 0.5, big - 0.5, big - 0.5)
    blocked = _Obstacles(r.surface for r in lay.roads)
    n = int(rng.poisson(big * big / 10000)) + (1 if big >= 80 else 0)
    max_dim = float(np.clip(0.5 * big, 10.0, 45.0))
    for _ in range(n):
        for _try in range(30):
            a = rng.uniform(12.0, max_dim)
            b = rng.uniform(11.0, min(max_dim, 28.0))
            road = lay.roads[int(rng.integers(len(lay.roads)))]
            c, ang, side = _lot_position(rng, road, a, b)
            lot = _rect(c, a, b, ang)
            if not inner.contains(lot) or blocked.hits(lot):
                continue
            blocked.add(lot)
            lay.lots.append(lot)
            if rng.random() < 0.6:
                lay.paved.append(_Obj(lot, _IMP, _jitter(rng, _PARKING, 0.05), grain=0.04))
                _park(rng, lay, c, ang, side, a, b)
            else:
                lay.paved.append(_Obj(lot, _IMP, _jitter(rng, _PLAZA, 0.06), grain=0.05))
            break


def _park(
    rng: np.random.Generator,
    lay: _Layout,
    c: npt.NDArray[np.float64],
    ang: float,
    side: float,
    a: float,
    b: float,
) -> None:
    """Stall lines and parked cars in a lot (rows along its far side, and near side if deep)."""
    d = np.array([math.cos(ang), math.sin(ang)])
    nrm = np.array([-math.sin(ang), math.cos(ang)]) * side  # away from the road
    rows = [b / 2 - 2.6] + ([-(b / 2 - 2.6)] if b >= 16 else [])
    n_stalls = int((a - 1.0) // 2.5)
    occupancy = rng.uniform(0.4, 0.9)
    lines: list[BaseGeometry] = []
    for y in rows:
        for i in range(n_stalls + 1):
            x = -a / 2 + 0.5 + 2.5 * i
            lines.append(_rect(c + x * d + y * nrm, 0.1, 4.8, ang))
        for i in range(n_stalls):
            if rng.random() > occupancy:
                continue
            x = -a / 2 + 0.5 + 2.5 * (i + 0.5) + rng.normal(0, 0.1)
            heading = ang + math.pi / 2 + float(rng.choice([0.0, math.pi])) + rng.normal(0, 0.03)
            _add_car(rng, lay, c + x * d + (y + rng.normal(0, 0.12)) * nrm, heading)
    if lines:
        lay.marks.append(_Obj(shapely.unary_union(lines), _IMP, _MARKING, grain=0.03))


def _add_car(rng: np.random.Generator, lay: _Layout, c: Pt, heading: float) -> Polygon:
    length = rng.uniform(4.1, 4.9)
    width = rng.uniform(1.75, 2.0)
    body = _rect(c, length, width, heading)
    colour = _jitter(rng, _pick(rng, _CARS), 0.05)
    h = rng.uniform(1.4, 1.7)
    lay.cars.append(_Obj(body, _CAR, colour, h, grain=0.02))
    dx, dy = math.cos(heading), math.sin(heading)
    for pos, size in ((0.12, 0.2), (-0.33, 0.12)):  # windscreen, rear window
        cc = (c[0] + pos * length * dx, c[1] + pos * length * dy)
        glass = _rect(cc, size * length, width - 0.3, heading)
        lay.cars.append(_Obj(glass, _CAR, _CAR_GLASS, h - 0.1, grain=0.02))
    return body


def _make_paths_and_grass(rng: np.random.Generator, lay: _Layout) -> None:
    big = lay.extent
    houses = _Obstacles(b.poly for b in lay.buildings)
    for _ in range(int(rng.poisson(big / 120))):
        p, q = rng.uniform(0, big, 2), rng.uniform(0, big, 2)
        path = LineString([p, q]).buffer(rng.uniform(0.75, 1.5), cap_style="flat")
        if not houses.hits(path):
            lay.paved.append(_Obj(path, _IMP, _jitter(rng, _PAVEMENT, 0.1), grain=0.04))
    for _ in range(1 + int(rng.poisson(big * big / 3000))):
        patch = _blob(rng, rng.uniform(0, big, 2), rng.uniform(6.0, 30.0))
        lay.veg.append(
            _Obj(
                patch, _VEG, _jitter(rng, _pick(rng, _GRASS), 0.05), grain=0.1, clump=0.08, hue=1.0
            )
        )
    for _ in range(int(rng.poisson(big * big / 6000))):  # bare soil / gravel (clutter)
        patch = _blob(rng, rng.uniform(0, big, 2), rng.uniform(3.0, 10.0))
        if houses.hits(patch) or any(patch.intersects(r.outer) for r in lay.roads):
            continue
        colour = _jitter(rng, _pick(rng, _DIRT), 0.06)
        lay.clutter.append(_Obj(patch, _CLUT, colour, rng.uniform(0.0, 0.3), grain=0.08, clump=0.1))


def _make_road_cars(rng: np.random.Generator, lay: _Layout) -> None:
    placed = _Obstacles(o.geom for o in lay.cars)
    for r in lay.roads:
        traffic = rng.uniform(0.005, 0.03)  # cars per metre and lane
        lanes = [(-r.width / 4, traffic), (r.width / 4, traffic)]
        if r.width >= 10:
            kerb = rng.uniform(0.0, 0.08)
            lanes += [(-(r.width / 2 - 1.15), kerb), (r.width / 2 - 1.15, kerb)]
        for off, density in lanes:
            for _ in range(int(rng.poisson(density * r.centre.length))):
                _try_road_car(rng, lay, r, off, rng.uniform(0, r.centre.length), placed)
    if lay.roads and not any(o.cls == _CAR for o in lay.cars):  # at least one car
        r = lay.roads[0]
        for t in np.linspace(0.5, 0.1, 5) * r.centre.length:
            if _try_road_car(rng, lay, r, r.width / 4, float(t), placed):
                break


def _try_road_car(
    rng: np.random.Generator, lay: _Layout, r: _Road, off: float, t: float, placed: _Obstacles
) -> bool:
    c = r.point(t) + off * r.n
    heading = r.angle + (math.pi if off < 0 else 0.0) + rng.normal(0, 0.02)
    probe = _rect(c, 5.0, 2.1, heading)
    if not r.surface.contains(probe) or placed.hits(probe, 0.3):
        return False
    placed.add(_add_car(rng, lay, c, heading))
    return True


def _make_trees(rng: np.random.Generator, lay: _Layout) -> None:
    big = lay.extent
    blocked = _Obstacles(
        [b.poly.buffer(0.3) for b in lay.buildings] + [r.surface.buffer(0.1) for r in lay.roads]
    )
    xs: list[float] = []
    ys: list[float] = []
    rs: list[float] = []

    def add(c: Pt, radius: float) -> bool:
        if not (0 <= c[0] <= big and 0 <= c[1] <= big):
            return False
        if xs:
            dist = np.hypot(np.asarray(xs) - c[0], np.asarray(ys) - c[1])
            if np.any(dist < 0.5 * (np.asarray(rs) + radius)):
                return False
        disk = Point(c[0], c[1]).buffer(radius, quad_segs=8)
        if blocked.hits(disk):
            return False
        height = float(np.clip(radius * rng.uniform(2.0, 3.5), 5.0, 20.0))
        colour = _jitter(rng, _pick(rng, _TREES), 0.07)
        crown = (float(c[0]), float(c[1]), radius, height)
        lay.trees.append(
            _Obj(disk, _TREE, colour, 0.0, grain=0.1, clump=0.22, hue=0.4, crown=crown)
        )
        xs.append(float(c[0]))
        ys.append(float(c[1]))
        rs.append(radius)
        return True

    for r in lay.roads:  # street trees
        for side in (-1.0, 1.0):
            if rng.random() > 0.5:
                continue
            radius0 = rng.uniform(2.0, 3.5)
            off = r.width / 2 + radius0 * 1.1 + rng.uniform(0.1, 1.0)
            for t in np.arange(rng.uniform(0, 5), r.centre.length, rng.uniform(7.0, 12.0)):
                add(r.point(float(t)) + side * off * r.n, radius0 * rng.uniform(0.9, 1.1))
    for _ in range(1 + int(rng.poisson(big * big / 2500))):  # clusters
        centre = rng.uniform(0, big, 2)
        spread = rng.uniform(3.0, 8.0)
        for _k in range(int(rng.integers(3, 15))):
            add(centre + rng.normal(0, spread, 2), rng.uniform(2.0, 6.0))
    for _ in range(int(rng.poisson(big * big / 400))):  # single trees
        add(rng.uniform(0, big, 2), rng.uniform(2.0, 6.0))
    for _ in range(200):  # at least one tree
        if lay.trees:
            break
        add(rng.uniform(0, big, 2), rng.uniform(2.0, 3.0))


def _make_clutter(rng: np.random.Generator, lay: _Layout) -> None:
    big = lay.extent
    inner = box(0, 0, big, big)
    blocked = _Obstacles(
        [b.poly for b in lay.buildings]
        + [r.surface for r in lay.roads]
        + [o.geom for o in lay.cars if o.cls == _CAR]
    )
    count = 0
    wanted = 1 + int(rng.poisson(big * big / 200))
    for i in range(wanted * 3 + 200):
        if count >= wanted or (i >= wanted * 3 and count > 0):
            break
        if lay.buildings and rng.random() < 0.6:  # yards: near a building
            bld = lay.buildings[int(rng.integers(len(lay.buildings)))].poly
            ring = bld.buffer(rng.uniform(1.0, 6.0), join_style="mitre").exterior
            p = ring.interpolate(rng.uniform(0, 1), normalized=True)
            c: Pt = (p.x, p.y)
        else:
            c = rng.uniform(0, big, 2)
        if rng.random() < 0.15:  # container or skip
            dims = (6.0, 2.4) if rng.random() < 0.5 else (2.6, 1.6)
            geom = _rect(c, dims[0], dims[1], rng.uniform(0, math.pi))
            colour = _jitter(rng, _pick(rng, _CONTAINERS), 0.06)
            height = rng.uniform(1.2, 2.0)
            grain = 0.03
        else:
            geom = _blob(rng, c, rng.uniform(0.4, 1.8))
            colour = _jitter(rng, _pick(rng, _CLUTTER), 0.1)
            height = rng.uniform(0.1, 2.0)
            grain = 0.08
        if not inner.contains(geom) or blocked.hits(geom, 0.2):
            continue
        lay.clutter.append(_Obj(geom, _CLUT, colour, height, grain=grain, clump=0.05))
        blocked.add(geom)
        count += 1


# -- rendering (arrays) ----------------------------------------------------------------------


def _render(
    lay: _Layout,
    rng: np.random.Generator,
    *,
    size: int,
    res: float,
    transform: Affine,
    seed: int,
) -> SynthScene:
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
    cls_lut = np.array([_VEG] + [o.cls for o in objs], dtype=np.uint8)
    colour_lut = np.array([_GRASS[0]] + [o.colour for o in objs], dtype=np.float32)
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
    np.copyto(ndsm, grass, where=labels == _VEG)
    del grass
    for i, o in enumerate(objs, start=1):
        if o.roof is not None:
            _gable(ndsm, ids, i, o.geom.bounds, o.roof, res)
    tree_mask = labels == _TREE
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
    mult *= 1.0 - 0.55 * _shadow(ndsm, res)
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


def _shadow(ndsm: npt.NDArray[np.float32], res: float) -> npt.NDArray[np.float32]:
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


# -- writing ---------------------------------------------------------------------------------


def _write_scene(root: Path, sid: str, scene: SynthScene) -> None:
    import rasterio
    from rasterio.enums import ColorInterp

    paths = _scene_paths(root, sid)
    h, w = scene.labels.shape
    common: dict[str, Any] = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "crs": scene.crs,
        "transform": scene.transform,
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
    }
    for p in (paths.image, paths.dsm, paths.labels, paths.labels_no_boundary):
        p.parent.mkdir(parents=True, exist_ok=True)
    # Like the real files, the IR band is tagged alpha although it is data.
    with rasterio.open(
        paths.image,
        "w",
        count=4,
        dtype="uint8",
        photometric="RGB",
        alpha="YES",
        compress="PACKBITS",
        **common,
    ) as ds:
        ds.write(scene.image)
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with rasterio.open(
        paths.dsm, "w", count=1, dtype="float32", compress="DEFLATE", predictor=3, **common
    ) as ds:
        ds.write(scene.dsm, 1)
    for path, lab in (
        (paths.labels, scene.labels),
        (paths.labels_no_boundary, scene.labels_no_boundary),
    ):
        with rasterio.open(
            path, "w", count=3, dtype="uint8", photometric="RGB", compress="DEFLATE", **common
        ) as ds:
            ds.write(POTSDAM.encode(lab))


def _write_truth(path: Path, buildings: list[dict[str, Any]], roads: list[dict[str, Any]]) -> None:
    import geopandas as gpd

    crs = f"EPSG:{CRS_EPSG}"
    layers: list[tuple[str, list[dict[str, Any]], dict[str, str]]] = [
        ("buildings", buildings, {"scene": "str", "height_m": "float64", "roof": "str"}),
        ("roads", roads, {"scene": "str", "width_m": "float64"}),
    ]
    for name, rows, columns in layers:
        if rows:
            gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)
        else:
            gdf = gpd.GeoDataFrame(
                {c: np.array([], dtype=object if t == "str" else t) for c, t in columns.items()},
                geometry=gpd.GeoSeries([], crs=crs),
                crs=crs,
            )
        gdf.to_file(path, layer=name, driver="GPKG", engine="pyogrio", geometry_type="Polygon")
