"""The layout of a scene (geometry in local metres): roads, buildings, lots, cars, trees, clutter.

Every random draw comes from the one generator passed in, in a fixed order: the same
generator state gives the same layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import shapely
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.geometry.base import BaseGeometry

from geoseg.synth._objects import (
    ASPHALT,
    BLD,
    CAR,
    CAR_GLASS,
    CARS,
    CLUT,
    CLUTTER,
    CONTAINERS,
    DIRT,
    GRASS,
    IMP,
    MARKING,
    PARKING,
    PAVEMENT,
    PLAZA,
    ROOFS,
    TREE,
    TREES,
    VEG,
    Building,
    Layout,
    Obj,
    Obstacles,
    Pt,
    Road,
    blob,
    jitter,
    pick,
    place,
    rect,
)
from geoseg.synth._rows import make_rows


def layout(rng: np.random.Generator, extent: float, *, row_houses: bool = False) -> Layout:
    """The layout of an ``extent`` x ``extent`` m scene, drawn from ``rng``.

    With ``row_houses``, terraces of attached houses (one building each) are added after the
    detached buildings; without, the draws are exactly those of earlier versions.
    """
    lay = Layout(extent)
    scene = box(0, 0, extent, extent)
    _make_roads(rng, lay, scene)
    _make_lots(rng, lay)
    _make_buildings(rng, lay)
    if row_houses:
        make_rows(rng, lay)
    _make_paths_and_grass(rng, lay)
    _make_road_cars(rng, lay)
    _make_trees(rng, lay)
    _make_clutter(rng, lay)
    return lay


def _make_roads(rng: np.random.Generator, lay: Layout, scene: Polygon) -> None:
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
            lay.roads.append(Road(centre, ang, width, pave, surface, outer))
            break
    for r in lay.roads:
        lay.paved.append(Obj(r.outer, IMP, jitter(rng, PAVEMENT, 0.05), grain=0.03))
        lay.surfaces.append(Obj(r.surface, IMP, jitter(rng, ASPHALT, 0.06), grain=0.04))
    for r in lay.roads:
        marks = _road_markings(rng, r, [o.surface for o in lay.roads if o is not r])
        if not marks.is_empty:
            lay.marks.append(Obj(marks, IMP, MARKING, grain=0.03))


def _too_close(ang: float, span: float, centre: LineString, other: Road) -> bool:
    diff = abs((ang - other.angle + math.pi / 2) % math.pi - math.pi / 2)
    if diff >= math.radians(25):
        return False  # crossing roads are fine
    gap = 30.0 + (span + other.width + 2 * other.pave) / 2
    return bool(centre.distance(other.centre) < gap)


def _road_markings(rng: np.random.Generator, road: Road, others: Sequence[Polygon]) -> BaseGeometry:
    big = 2 * road.centre.length
    start = road.point(0.0)
    parts: list[BaseGeometry] = []
    if road.width >= 7.0:  # dashed centre line
        for t in np.arange(rng.uniform(0, 9.0), road.centre.length, 9.0):
            parts.append(rect(road.point(float(t)), 3.0, 0.15, road.angle))
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


def _nearest_road_angle(roads: Sequence[Road], c: Pt) -> float | None:
    if not roads:
        return None
    p = Point(c[0], c[1])
    return min(roads, key=lambda r: r.centre.distance(p)).angle


def _make_buildings(rng: np.random.Generator, lay: Layout) -> None:
    big = lay.extent
    inner = box(0.5, 0.5, big - 0.5, big - 0.5)
    blocked = Obstacles(
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
        road: Road | None = None
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
        poly = place(fp, c, ang)
        if not isinstance(poly, Polygon) or not inner.contains(poly) or blocked.hits(poly):
            continue
        gabled = kind == "rect" and rng.random() < 0.45
        b_obj = _building_object(rng, poly, c, ang, a, b, gabled)
        lay.houses.append(b_obj)
        lay.buildings.append(Building(poly, _top(b_obj), "gabled" if gabled else "flat"))
        blocked.add(poly.buffer(rng.uniform(1.5, 5.0), join_style="mitre"))
        built += poly.area
        if not gabled and poly.area > 150:
            _roof_structures(rng, lay, poly, b_obj.height)
        if rng.random() < 0.35:  # paved apron around the building
            apron = poly.buffer(rng.uniform(1.5, 4.0), join_style="mitre").intersection(inner)
            lay.paved.append(Obj(apron, IMP, jitter(rng, PAVEMENT, 0.1), grain=0.03))
        if road is not None and rng.random() < 0.5:  # driveway to the road
            length = road.pave + setback + 1.0
            along_off = rng.uniform(-a / 2 + 2, a / 2 - 2) if a > 5 else 0.0
            mid = base + side * (road.width / 2 + length / 2 - 0.5) * road.n + along_off * road.d
            drive = rect(mid, length, rng.uniform(2.5, 4.0), road.angle + math.pi / 2)
            drive_in = drive.intersection(inner)
            lay.paved.append(Obj(drive_in, IMP, jitter(rng, PAVEMENT, 0.1), grain=0.03))


def _top(obj: Obj) -> float:
    return obj.roof[5] if obj.roof is not None else obj.height


def _building_object(
    rng: np.random.Generator,
    poly: Polygon,
    c: Pt,
    ang: float,
    a: float,
    b: float,
    gabled: bool,
) -> Obj:
    if gabled:
        colour = ROOFS[
            str(rng.choice(["red", "grey", "dark", "brown"], p=[0.55, 0.15, 0.15, 0.15]))
        ]
        ridge_ang, hw = (ang, b / 2) if a >= b else (ang + math.pi / 2, a / 2)
        eave = rng.uniform(4.0, 12.0)
        ridge = min(25.0, eave + hw * math.tan(math.radians(rng.uniform(25.0, 42.0))))
        roof = (float(c[0]), float(c[1]), ridge_ang, hw, eave, ridge)
        return Obj(poly, BLD, jitter(rng, colour), eave, grain=0.03, roof=roof)
    colour = ROOFS[
        str(rng.choice(["grey", "dark", "light", "brown", "red"], p=[0.34, 0.24, 0.28, 0.08, 0.06]))
    ]
    height = 4.0 + 21.0 * rng.beta(1.6, 3.0)
    return Obj(poly, BLD, jitter(rng, colour), height, grain=0.025)


def _roof_structures(rng: np.random.Generator, lay: Layout, poly: Polygon, height: float) -> None:
    """Small boxes on a flat roof (vents, skylights): class building, a little higher."""
    core = poly.buffer(-1.5)
    if core.is_empty:
        return
    x0, y0, x1, y1 = core.bounds
    for _ in range(int(rng.integers(0, 4))):
        for _try in range(10):
            c = (rng.uniform(x0, x1), rng.uniform(y0, y1))
            part = rect(c, rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0), rng.uniform(0, math.pi))
            if core.contains(part):
                colour = ROOFS[str(rng.choice(["grey", "light", "dark"]))]
                h = height + rng.uniform(0.6, 2.0)
                lay.houses.append(Obj(part, BLD, jitter(rng, colour), h, grain=0.02))
                break


def _lot_position(
    rng: np.random.Generator, road: Road, a: float, b: float
) -> tuple[npt.NDArray[np.float64], float, float]:
    base = road.point(rng.uniform(0, road.centre.length))
    side = float(rng.choice([-1.0, 1.0]))
    off = road.width / 2 + road.pave + rng.uniform(0.0, 1.0) + b / 2
    return base + side * off * road.n, road.angle, side


def _make_lots(rng: np.random.Generator, lay: Layout) -> None:
    """Parking lots (with parked cars) and plazas beside roads."""
    big = lay.extent
    if not lay.roads:
        return
    inner = box(0.5, 0.5, big - 0.5, big - 0.5)
    blocked = Obstacles(r.surface for r in lay.roads)
    n = int(rng.poisson(big * big / 10000)) + (1 if big >= 80 else 0)
    max_dim = float(np.clip(0.5 * big, 10.0, 45.0))
    for _ in range(n):
        for _try in range(30):
            a = rng.uniform(12.0, max_dim)
            b = rng.uniform(11.0, min(max_dim, 28.0))
            road = lay.roads[int(rng.integers(len(lay.roads)))]
            c, ang, side = _lot_position(rng, road, a, b)
            lot = rect(c, a, b, ang)
            if not inner.contains(lot) or blocked.hits(lot):
                continue
            blocked.add(lot)
            lay.lots.append(lot)
            if rng.random() < 0.6:
                lay.paved.append(Obj(lot, IMP, jitter(rng, PARKING, 0.05), grain=0.04))
                _park(rng, lay, c, ang, side, a, b)
            else:
                lay.paved.append(Obj(lot, IMP, jitter(rng, PLAZA, 0.06), grain=0.05))
            break


def _park(
    rng: np.random.Generator,
    lay: Layout,
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
            lines.append(rect(c + x * d + y * nrm, 0.1, 4.8, ang))
        for i in range(n_stalls):
            if rng.random() > occupancy:
                continue
            x = -a / 2 + 0.5 + 2.5 * (i + 0.5) + rng.normal(0, 0.1)
            heading = ang + math.pi / 2 + float(rng.choice([0.0, math.pi])) + rng.normal(0, 0.03)
            _add_car(rng, lay, c + x * d + (y + rng.normal(0, 0.12)) * nrm, heading)
    if lines:
        lay.marks.append(Obj(shapely.unary_union(lines), IMP, MARKING, grain=0.03))


def _add_car(rng: np.random.Generator, lay: Layout, c: Pt, heading: float) -> Polygon:
    length = rng.uniform(4.1, 4.9)
    width = rng.uniform(1.75, 2.0)
    body = rect(c, length, width, heading)
    colour = jitter(rng, pick(rng, CARS), 0.05)
    h = rng.uniform(1.4, 1.7)
    lay.cars.append(Obj(body, CAR, colour, h, grain=0.02))
    dx, dy = math.cos(heading), math.sin(heading)
    for pos, size in ((0.12, 0.2), (-0.33, 0.12)):  # windscreen, rear window
        cc = (c[0] + pos * length * dx, c[1] + pos * length * dy)
        glass = rect(cc, size * length, width - 0.3, heading)
        lay.cars.append(Obj(glass, CAR, CAR_GLASS, h - 0.1, grain=0.02))
    return body


def _make_paths_and_grass(rng: np.random.Generator, lay: Layout) -> None:
    big = lay.extent
    houses = Obstacles(b.poly for b in lay.buildings)
    for _ in range(int(rng.poisson(big / 120))):
        p, q = rng.uniform(0, big, 2), rng.uniform(0, big, 2)
        path = LineString([p, q]).buffer(rng.uniform(0.75, 1.5), cap_style="flat")
        if not houses.hits(path):
            lay.paved.append(Obj(path, IMP, jitter(rng, PAVEMENT, 0.1), grain=0.04))
    for _ in range(1 + int(rng.poisson(big * big / 3000))):
        patch = blob(rng, rng.uniform(0, big, 2), rng.uniform(6.0, 30.0))
        lay.veg.append(
            Obj(patch, VEG, jitter(rng, pick(rng, GRASS), 0.05), grain=0.1, clump=0.08, hue=1.0)
        )
    for _ in range(int(rng.poisson(big * big / 6000))):  # bare soil / gravel (clutter)
        patch = blob(rng, rng.uniform(0, big, 2), rng.uniform(3.0, 10.0))
        if houses.hits(patch) or any(patch.intersects(r.outer) for r in lay.roads):
            continue
        colour = jitter(rng, pick(rng, DIRT), 0.06)
        lay.clutter.append(Obj(patch, CLUT, colour, rng.uniform(0.0, 0.3), grain=0.08, clump=0.1))


def _make_road_cars(rng: np.random.Generator, lay: Layout) -> None:
    placed = Obstacles(o.geom for o in lay.cars)
    for r in lay.roads:
        traffic = rng.uniform(0.005, 0.03)  # cars per metre and lane
        lanes = [(-r.width / 4, traffic), (r.width / 4, traffic)]
        if r.width >= 10:
            kerb = rng.uniform(0.0, 0.08)
            lanes += [(-(r.width / 2 - 1.15), kerb), (r.width / 2 - 1.15, kerb)]
        for off, density in lanes:
            for _ in range(int(rng.poisson(density * r.centre.length))):
                _try_road_car(rng, lay, r, off, rng.uniform(0, r.centre.length), placed)
    if lay.roads and not any(o.cls == CAR for o in lay.cars):  # at least one car
        r = lay.roads[0]
        for t in np.linspace(0.5, 0.1, 5) * r.centre.length:
            if _try_road_car(rng, lay, r, r.width / 4, float(t), placed):
                break


def _try_road_car(
    rng: np.random.Generator, lay: Layout, r: Road, off: float, t: float, placed: Obstacles
) -> bool:
    c = r.point(t) + off * r.n
    heading = r.angle + (math.pi if off < 0 else 0.0) + rng.normal(0, 0.02)
    probe = rect(c, 5.0, 2.1, heading)
    if not r.surface.contains(probe) or placed.hits(probe, 0.3):
        return False
    placed.add(_add_car(rng, lay, c, heading))
    return True


def _make_trees(rng: np.random.Generator, lay: Layout) -> None:
    big = lay.extent
    blocked = Obstacles(
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
        colour = jitter(rng, pick(rng, TREES), 0.07)
        crown = (float(c[0]), float(c[1]), radius, height)
        lay.trees.append(Obj(disk, TREE, colour, 0.0, grain=0.1, clump=0.22, hue=0.4, crown=crown))
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


def _make_clutter(rng: np.random.Generator, lay: Layout) -> None:
    big = lay.extent
    inner = box(0, 0, big, big)
    blocked = Obstacles(
        [b.poly for b in lay.buildings]
        + [r.surface for r in lay.roads]
        + [o.geom for o in lay.cars if o.cls == CAR]
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
            geom = rect(c, dims[0], dims[1], rng.uniform(0, math.pi))
            colour = jitter(rng, pick(rng, CONTAINERS), 0.06)
            height = rng.uniform(1.2, 2.0)
            grain = 0.03
        else:
            geom = blob(rng, c, rng.uniform(0.4, 1.8))
            colour = jitter(rng, pick(rng, CLUTTER), 0.1)
            height = rng.uniform(0.1, 2.0)
            grain = 0.08
        if not inner.contains(geom) or blocked.hits(geom, 0.2):
            continue
        lay.clutter.append(Obj(geom, CLUT, colour, height, grain=grain, clump=0.05))
        blocked.add(geom)
        count += 1
