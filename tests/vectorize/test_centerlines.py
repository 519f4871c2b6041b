"""geoseg.vectorize._centerlines: spur pruning."""

from __future__ import annotations

import pytest
import shapely

from geoseg.vectorize._centerlines import prune_spurs


def test_prune_spurs_drops_short_dead_ends() -> None:
    main = [shapely.LineString([(0, 0), (50, 0)]), shapely.LineString([(50, 0), (100, 0)])]
    spur = shapely.LineString([(50, 0), (50, 4)])
    branch = shapely.LineString([(50, 0), (50, -60)])
    out = prune_spurs([*main, spur, branch], 10)
    merged = shapely.union_all(out)
    assert merged.length == pytest.approx(160)
    assert not merged.intersects(shapely.Point(50, 3))
