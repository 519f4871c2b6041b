"""What a layout is made of: class ids, albedos, drawable objects, roads, buildings, obstacles.

Geometry is in local metres (``u`` east, ``v`` south of the scene's top-left corner).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely
from shapely import affinity
from shapely.geometry import LineString, Polygon
from shapely.geometry.base import BaseGeometry

from geoseg.schema import POTSDAM

IMP = POTSDAM.index("impervious_surfaces")
BLD = POTSDAM.index("building")
VEG = POTSDAM.index("low_vegetation")
TREE = POTSDAM.index("tree")
CAR = POTSDAM.index("car")
CLUT = POTSDAM.index("clutter")

Colour = tuple[float, float, float, float]  # R, G, B, IR
Pt = Sequence[float] | npt.NDArray[np.float64]  # a point (x, y) in local metres


# Albedos (R, G, B, IR) in digital numbers, before shading and texture.
GRASS: tuple[Colour, ...] = (
    (92, 118, 68, 196),
    (108, 128, 76, 186),
    (134, 140, 92, 166),
    (76, 106, 62, 210),
    (148, 144, 104, 150),
)
TREES: tuple[Colour, ...] = (
    (52, 78, 48, 182),
    (60, 86, 52, 192),
    (45, 68, 45, 170),
    (68, 90, 56, 196),
)
ROOFS: dict[str, Colour] = {
    "red": (168, 80, 60, 118),
    "grey": (128, 128, 132, 104),
    "dark": (66, 66, 72, 70),
    "light": (204, 202, 196, 138),
    "brown": (122, 94, 74, 96),
}
ASPHALT: Colour = (92, 92, 96, 78)
PARKING: Colour = (106, 105, 108, 86)
PAVEMENT: Colour = (154, 151, 146, 110)
PLAZA: Colour = (180, 173, 162, 120)
MARKING: Colour = (228, 228, 222, 196)
CARS: tuple[Colour, ...] = (
    (228, 228, 226, 190),
    (28, 30, 34, 40),
    (164, 168, 172, 140),
    (98, 100, 104, 90),
    (172, 36, 32, 96),
    (34, 54, 140, 62),
    (38, 92, 58, 90),
    (204, 172, 62, 150),
)
CAR_GLASS: Colour = (38, 44, 52, 44)
CLUTTER: tuple[Colour, ...] = (
    (124, 84, 48, 110),
    (218, 120, 38, 150),
    (44, 84, 168, 86),
    (152, 128, 96, 130),
    (200, 196, 186, 170),
    (64, 58, 52, 60),
)
CONTAINERS: tuple[Colour, ...] = (
    (62, 112, 64, 120),
    (152, 44, 38, 92),
    (52, 72, 142, 70),
    (134, 134, 124, 112),
)
DIRT: tuple[Colour, ...] = ((146, 118, 86, 124), (170, 150, 120, 140), (110, 92, 72, 100))


@dataclass
class Obj:
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
class Road:
    """A straight road: centre line, carriageway and pavements, in local metres."""

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
class Building:
    """A building footprint with its roof height (the ridge for gabled roofs) and form."""

    poly: Polygon
    height: float
    roof: Literal["flat", "gabled"]


@dataclass
class Layout:
    """Everything in a scene of ``extent`` x ``extent`` m, by kind."""

    extent: float
    roads: list[Road] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    veg: list[Obj] = field(default_factory=list)
    paved: list[Obj] = field(default_factory=list)
    surfaces: list[Obj] = field(default_factory=list)
    marks: list[Obj] = field(default_factory=list)
    clutter: list[Obj] = field(default_factory=list)
    cars: list[Obj] = field(default_factory=list)
    trees: list[Obj] = field(default_factory=list)
    houses: list[Obj] = field(default_factory=list)
    lots: list[Polygon] = field(default_factory=list)
    ground: Colour = GRASS[0]  # colour of the grass background (pixels of no object)

    def ordered(self) -> list[Obj]:
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


class Obstacles:
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


def rect(c: Pt, length: float, width: float, angle: float) -> Polygon:
    """A rectangle centred at ``c``, ``length`` along ``angle``."""
    ca, sa = math.cos(angle), math.sin(angle)
    hl, hw = length / 2, width / 2
    pts = [(-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)]
    return Polygon([(c[0] + x * ca - y * sa, c[1] + x * sa + y * ca) for x, y in pts])


def place(geom: BaseGeometry, c: Pt, angle: float) -> BaseGeometry:
    """``geom`` rotated by ``angle`` about the origin and moved to ``c``."""
    ca, sa = math.cos(angle), math.sin(angle)
    return affinity.affine_transform(geom, [ca, -sa, sa, ca, float(c[0]), float(c[1])])


def blob(rng: np.random.Generator, c: Pt, radius: float) -> Polygon:
    """An irregular star-shaped polygon."""
    k = int(rng.integers(7, 12))
    ang = np.sort(rng.uniform(0, 2 * math.pi, k))
    rad = radius * rng.uniform(0.55, 1.0, k)
    return Polygon(np.column_stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)]))


def jitter(rng: np.random.Generator, colour: Colour, amount: float = 0.08) -> Colour:
    """``colour`` with a random brightness factor (``1 +- amount``) and a little noise."""
    f = rng.uniform(1 - amount, 1 + amount)
    r, g, b, ir = (float(np.clip(v * f + rng.normal(0, 3), 0, 255)) for v in colour)
    return (r, g, b, ir)


def pick(rng: np.random.Generator, items: Sequence[Colour]) -> Colour:
    """One of ``items``, drawn uniformly."""
    return items[int(rng.integers(len(items)))]
