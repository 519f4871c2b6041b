from __future__ import annotations

import math

import numpy as np

from geoseg.synth._layout import layout


def test_a_potsdam_sized_layout_is_varied() -> None:
    lay = layout(np.random.default_rng((0, 0)), 300.0)  # the geometry of a 6000 px tile
    assert len(lay.roads) >= 2 and len(lay.buildings) >= 20
    assert {b.roof for b in lay.buildings} == {"flat", "gabled"}
    shapes = set()
    aligned = 0
    for b in lay.buildings:
        rect = b.poly.minimum_rotated_rectangle
        xy = np.asarray(rect.exterior.coords)
        sides = np.hypot(*np.diff(xy[:3], axis=0).T)
        assert 8.0 - 1e-6 <= sides.min() and sides.max() <= 40.0 + 1e-6
        assert 4.0 <= b.height <= 25.0
        if b.poly.interiors:
            shapes.add("courtyard")
        elif b.poly.area < 0.95 * rect.area:
            shapes.add("L or U")
        else:
            shapes.add("rectangle")
        edge = np.arctan2(*(xy[1] - xy[0])[::-1])
        road = min(lay.roads, key=lambda r: r.centre.distance(b.poly)).angle
        off = (edge - road) % (math.pi / 2)
        aligned += min(off, math.pi / 2 - off) < math.radians(5)
    assert shapes == {"courtyard", "L or U", "rectangle"}
    assert aligned >= 0.6 * len(lay.buildings)
