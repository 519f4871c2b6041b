from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from geoseg.schema import IGNORE
from geoseg.synth import (
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    SynthScene,
    make_scene,
    scene_transform,
)
from geoseg.synth._render import shadow
from tests.synth.helpers import BLD, CAR, CLUT, IMP, TREE, VEG, burn


def test_building_polygons_rasterize_to_exactly_the_building_pixels(scene: SynthScene) -> None:
    assert scene.buildings
    burned = burn([b.polygon for b in scene.buildings], scene.transform, scene.labels.shape)
    np.testing.assert_array_equal(burned, scene.labels == BLD)
    for b in scene.buildings:
        assert b.polygon.is_valid and b.polygon.geom_type == "Polygon"
        assert 4.0 <= b.height_m <= 25.0
    polys = [b.polygon for b in scene.buildings]
    for i, p in enumerate(polys):  # buildings never overlap each other or a road
        assert not any(p.intersects(q) for q in polys[i + 1 :])
        assert not any(p.intersects(r.polygon) for r in scene.roads)


def test_road_polygons_are_impervious_or_cars(scene: SynthScene) -> None:
    assert scene.roads
    road = burn([r.polygon for r in scene.roads], scene.transform, scene.labels.shape)
    values = scene.labels[road]
    assert set(np.unique(values)) <= {IMP, CAR}
    assert np.mean(values == IMP) > 0.8
    for r in scene.roads:
        assert 6.0 <= r.width_m <= 14.0
        # a clipped straight road: its area is about width x length inside the scene
        assert r.polygon.area > r.width_m * 10


def test_heights_per_class(scene: SynthScene) -> None:
    nd, lab = scene.ndsm, scene.labels
    ground = scene.dsm - nd
    assert ground.min() >= 30.0 and ground.max() <= 45.0
    assert np.all(nd[lab == IMP] == 0.0)
    veg = nd[lab == VEG]
    assert veg.min() >= 0.0 and veg.max() <= 0.5 and veg.std() > 0.01
    assert np.all((nd[lab == CAR] > 1.2) & (nd[lab == CAR] < 1.8))
    clutter = nd[lab == CLUT]
    assert clutter.min() >= 0.0 and clutter.max() <= 2.0
    trees = nd[lab == TREE]
    assert trees.min() >= 0.55 * 5.0 - 1e-3 and trees.max() <= 20.0


def test_building_dsm_stands_above_the_surrounding_ground(scene: SynthScene) -> None:
    shape = scene.labels.shape
    checked = 0
    for b in scene.buildings:
        inside = burn([b.polygon], scene.transform, shape)
        ring = burn(
            [b.polygon.buffer(3.0).difference(b.polygon.buffer(1.0))], scene.transform, shape
        )
        ring &= np.isin(scene.labels, [IMP, VEG])
        if ring.sum() < 50:
            continue
        rise = np.median(scene.dsm[inside]) - np.median(scene.dsm[ring])
        assert rise > 3.0, (b.height_m, rise)
        checked += 1
        top = float(scene.ndsm[inside].max())
        if b.roof == "gabled":
            assert top == pytest.approx(b.height_m, abs=0.05)
        else:  # flat roofs, possibly with small structures on top
            assert np.median(scene.ndsm[inside]) == pytest.approx(b.height_m, abs=0.01)
    assert checked > 0


def test_no_boundary_labels_ignore_pixels_within_3_px_of_another_class(scene: SynthScene) -> None:
    lab, nb = scene.labels, scene.labels_no_boundary
    expected = np.zeros(lab.shape, dtype=bool)
    for c in np.unique(lab):
        # distance from each pixel of class c to the nearest pixel of another class
        expected |= (lab == c) & (distance_transform_edt(lab == c) <= 3.0)
    np.testing.assert_array_equal(nb == IGNORE, expected)
    np.testing.assert_array_equal(nb[~expected], lab[~expected])


def test_shadow_falls_away_from_the_sun_with_length_proportional_to_height() -> None:
    res = 0.05
    nd = np.zeros((800, 800), dtype=np.float32)
    nd[380:420, 380:420] = 10.0  # a 2 m x 2 m tower, 10 m tall
    strength = shadow(nd, res)
    az = math.radians(SUN_AZIMUTH_DEG)
    away = np.array([math.cos(az), -math.sin(az)])  # (row, col) step away from the sun
    length = 10.0 / math.tan(math.radians(SUN_ELEVATION_DEG)) / res  # in pixels
    centre = np.array([400.0, 400.0])
    mid = np.round(centre + away * (20 + 0.5 * length)).astype(int)
    beyond = np.round(centre + away * (20 + length + 30)).astype(int)
    towards = np.round(centre - away * (20 + 0.5 * length)).astype(int)
    assert strength[tuple(mid)] > 0.9
    assert strength[tuple(beyond)] < 0.1
    assert strength[tuple(towards)] < 0.1


def test_shadows_darken_the_image(scene: SynthScene) -> None:
    strength = shadow(scene.ndsm, 0.05)
    grass = scene.labels == VEG
    lit = scene.image[1][grass & (strength < 0.05)].mean()
    dark = scene.image[1][grass & (strength > 0.95)].mean()
    assert dark < 0.7 * lit


def test_vegetation_is_bright_in_infrared(scene: SynthScene) -> None:
    img = scene.image.astype(float)
    ir, red = img[3], img[0]
    for cls in (VEG, TREE):
        assert ir[scene.labels == cls].mean() > 1.4 * red[scene.labels == cls].mean()
    assert ir[scene.labels == IMP].mean() < red[scene.labels == IMP].mean()


def test_neighbouring_scenes_share_continuous_ground(folder: Path) -> None:
    a = make_scene(size=600, seed=5, transform=scene_transform(0, 600), index=0)
    b = make_scene(size=600, seed=5, transform=scene_transform(1, 600), index=1)
    ground_a = a.dsm - a.ndsm
    ground_b = b.dsm - b.ndsm
    step = np.abs(ground_a[:, -1] - ground_b[:, 0])
    inner = np.abs(ground_a[:, -1] - ground_a[:, -2])
    assert step.max() < 0.01 and step.max() < 5 * inner.max() + 1e-3
