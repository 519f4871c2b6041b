"""Row houses: terraces of attached houses that share walls, each with its own height and roof.

A terrace is a strip of ``k`` units side by side. Neighbouring units share a wall (a common edge,
no gap) but are separate buildings with one truth polygon each. Most neighbours differ in height
by a clear step (at least :data:`MIN_STEP_M`, as on real terraces of different storeys); some have
the same height, which only a learned contact boundary can split. Terraces are drawn after the
detached buildings, from the same random stream, into the space that is still free.
"""

from __future__ import annotations

import math

import numpy as np

from geoseg.synth._objects import BLD, ROOFS, Building, Layout, Obj, Obstacles, jitter, rect

__all__ = ["MIN_STEP_M", "SAME_HEIGHT_P", "make_rows"]

MIN_STEP_M = 2.0
"""The smallest height step between neighbours of different heights (metres)."""

SAME_HEIGHT_P = 0.25
"""The chance that a unit has the same height as its left neighbour."""

_LOW, _HIGH = 4.0, 18.0  # eave / flat-roof heights (m)


def make_rows(rng: np.random.Generator, lay: Layout) -> None:
    """Add terraces of row houses to ``lay`` (buildings and drawable houses) where there is room."""
    big = lay.extent
    inner = rect((big / 2, big / 2), big - 1.0, big - 1.0, 0.0)
    blocked = Obstacles(
        [r.outer.buffer(1.0) for r in lay.roads]
        + [g.buffer(1.0) for g in lay.lots]
        + [b.poly.buffer(2.0) for b in lay.buildings]
    )
    wanted = max(1, int(big * big / 1500))
    built = 0
    for _ in range(40 * wanted):
        if built >= wanted:
            break
        k = int(rng.integers(2, 7))
        unit = rng.uniform(5.0, 9.0)
        depth = rng.uniform(8.0, 12.0)
        length = k * unit
        if length > 0.9 * big:
            continue
        if lay.roads and rng.random() < 0.7:
            road = lay.roads[int(rng.integers(len(lay.roads)))]
            base = road.point(rng.uniform(0, road.centre.length))
            side = float(rng.choice([-1.0, 1.0]))
            off = road.width / 2 + road.pave + rng.uniform(2.0, 6.0) + depth / 2
            centre = base + side * off * road.n
            ang = road.angle
        else:
            centre = rng.uniform(0, big, 2)
            ang = float(rng.uniform(0, math.pi))
        outline = rect(centre, length, depth, ang)
        if not inner.contains(outline) or blocked.hits(outline):
            continue
        _terrace(rng, lay, centre, ang, k, unit, depth)
        blocked.add(outline.buffer(rng.uniform(2.0, 5.0), join_style="mitre"))
        built += 1


def _heights(rng: np.random.Generator, k: int) -> list[float]:
    """Unit heights: each equal to its left neighbour's, or a step of at least MIN_STEP_M away."""
    out = [float(rng.uniform(_LOW, 12.0))]
    for _ in range(k - 1):
        prev = out[-1]
        if rng.random() < SAME_HEIGHT_P:
            out.append(prev)
            continue
        step = rng.uniform(MIN_STEP_M, 5.0)
        up = prev + step <= _HIGH and (prev - step < _LOW or rng.random() < 0.5)
        out.append(prev + step if up else prev - step)
    return out


def _terrace(
    rng: np.random.Generator,
    lay: Layout,
    centre: np.ndarray,
    ang: float,
    k: int,
    unit: float,
    depth: float,
) -> None:
    gabled = rng.random() < 0.5
    slope = math.tan(math.radians(rng.uniform(25.0, 40.0)))
    base_colour = ROOFS[str(rng.choice(["red", "grey", "dark", "brown", "light"]))]
    along = np.array([math.cos(ang), math.sin(ang)])
    for i, eave in enumerate(_heights(rng, k)):
        c = centre + ((i + 0.5) * unit - k * unit / 2) * along
        poly = rect(c, unit, depth, ang)
        colour = jitter(rng, base_colour if rng.random() < 0.6 else _any_roof(rng), 0.06)
        if gabled:  # the ridge runs along the terrace: the wall between units is a gable end
            ridge = eave + depth / 2 * slope
            roof = (float(c[0]), float(c[1]), ang, depth / 2, eave, ridge)
            lay.houses.append(Obj(poly, BLD, colour, eave, grain=0.03, roof=roof))
            lay.buildings.append(Building(poly, ridge, "gabled"))
        else:
            lay.houses.append(Obj(poly, BLD, colour, eave, grain=0.025))
            lay.buildings.append(Building(poly, eave, "flat"))


def _any_roof(rng: np.random.Generator) -> tuple[float, float, float, float]:
    return ROOFS[str(rng.choice(list(ROOFS)))]
