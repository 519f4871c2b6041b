from __future__ import annotations

import pytest

from geoseg.synth import scene_id, scene_transform


def test_scene_ids_follow_potsdam_rows_and_columns() -> None:
    assert [scene_id(i) for i in (0, 1, 9, 10, 23)] == ["2_10", "2_11", "2_19", "3_10", "4_13"]


def test_scenes_lie_edge_to_edge() -> None:
    size = 2000
    t0, t1, t10 = (scene_transform(i, size) for i in (0, 1, 10))
    assert (t0.c, t0.f) == (366000.0, 5808000.0)
    assert (t0.a, t0.e) == (0.05, -0.05)
    # right edge of 2_10 is the left edge of 2_11; bottom of 2_10 is the top of 3_10
    assert t0 @ (size, 0) == pytest.approx((t1.c, t1.f))
    assert t0 @ (0, size) == pytest.approx((t10.c, t10.f))
