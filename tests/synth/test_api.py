from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from geoseg.errors import InputError, OutputExistsError
from geoseg.schema import POTSDAM
from geoseg.synth import SynthScene, make_scene, scene_transform, synthesize


def test_scene_arrays_have_the_documented_shapes(scene: SynthScene) -> None:
    assert scene.image.shape == (4, 1000, 1000) and scene.image.dtype == np.uint8
    assert scene.dsm.shape == scene.ndsm.shape == (1000, 1000)
    assert scene.dsm.dtype == scene.ndsm.dtype == np.float32
    assert scene.labels.dtype == scene.labels_no_boundary.dtype == np.uint8
    assert set(np.unique(scene.labels)) <= set(range(6))
    assert scene.geobox.shape == (1000, 1000)
    assert scene.crs.to_epsg() == 32633


def test_same_seed_same_scene_other_seed_or_index_differs(scene: SynthScene) -> None:
    again = make_scene(size=1000, seed=0, transform=scene_transform(0, 1000))
    np.testing.assert_array_equal(again.image, scene.image)
    np.testing.assert_array_equal(again.dsm, scene.dsm)
    np.testing.assert_array_equal(again.labels, scene.labels)
    assert [b.polygon.wkb for b in again.buildings] == [b.polygon.wkb for b in scene.buildings]
    other_seed = make_scene(size=1000, seed=1, transform=scene_transform(0, 1000))
    other_index = make_scene(size=1000, seed=0, transform=scene_transform(0, 1000), index=1)
    for other in (other_seed, other_index):
        assert np.mean(other.labels != scene.labels) > 0.1
        assert not np.array_equal(other.image, scene.image)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_six_classes_in_a_1000_px_scene(seed: int) -> None:
    s = make_scene(size=1000, seed=seed, transform=scene_transform(0, 1000))
    counts = np.bincount(s.labels.ravel(), minlength=6)
    assert np.all(counts[:6] > 0), dict(zip(POTSDAM.classes, counts.tolist(), strict=True))
    assert counts.sum() == s.labels.size


def test_bad_arguments_raise_input_error(tmp_path: Path) -> None:
    tf = scene_transform(0, 256)
    with pytest.raises(InputError, match="size"):
        make_scene(size=10, seed=0, transform=tf)
    with pytest.raises(InputError, match="seed"):
        make_scene(size=256, seed=-1, transform=tf)
    with pytest.raises(InputError, match="north-up"):
        make_scene(size=256, seed=0, transform=Affine(0.05, 0, 0, 0, 0.05, 0))
    with pytest.raises(InputError, match="scenes"):
        synthesize(tmp_path / "x", scenes=0, size=256, seed=0)
    assert not (tmp_path / "x").exists()


def test_other_pixel_sizes_scale_the_objects() -> None:
    coarse = make_scene(size=200, seed=0, transform=Affine(0.25, 0, 0, 0, -0.25, 50))
    fine = make_scene(size=1000, seed=0, transform=Affine(0.05, 0, 0, 0, -0.05, 50))
    # the same 50 m x 50 m layout at two resolutions
    assert coarse.buildings
    assert [round(b.polygon.area, 6) for b in coarse.buildings] == [
        round(b.polygon.area, 6) for b in fine.buildings
    ]
    assert coarse.labels.shape == (200, 200)
    frac_coarse = np.bincount(coarse.labels.ravel(), minlength=6) / coarse.labels.size
    frac_fine = np.bincount(fine.labels.ravel(), minlength=6) / fine.labels.size
    np.testing.assert_allclose(frac_coarse, frac_fine, atol=0.02)


def test_existing_output_is_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        synthesize(out, scenes=1, size=128, seed=0)
    assert (out / "keep.txt").read_text() == "mine"
    result = synthesize(out, scenes=1, size=128, seed=0, overwrite=True)
    assert result.root == out and result.scene_ids == ("2_10",)
    assert not (out / "keep.txt").exists()
    assert result.paths["2_10"].image.exists() and result.truth.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
