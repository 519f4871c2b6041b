"""Degraded synthetic scenes (``degrade``) and other appearance families (``style``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.errors import InputError
from geoseg.synth import SynthScene, make_scene, scene_transform, synthesize
from tests.synth.helpers import BLD, TREE, VEG

# sha256 of the arrays of make_scene(size=256, seed=3), computed before style and degrade
# existed: style 0 without degradation must stay byte-identical.
STYLE0 = {
    "image": "ca6cbb6e7044ca35d4e2c5ad48280521c10b9a0899f41eb39b0aeca2b0f83ae1",
    "dsm": "b6ce63cfde5ed1a6508711eb0dc16ca808ff352039a564f03c29386bdee18482",
    "labels": "2013b990b633098f6b40b16786a0767869ba9841a86b882ea0f651cc8cb5b425",
    "labels_no_boundary": "70076c82af20693aa107096ee9a0dada70bfbb6e2949634f0708a431c6a3b89a",
}
UNCHANGED = ("dsm", "ndsm", "labels", "labels_no_boundary")


def scene(size: int = 256, seed: int = 3, **kw: object) -> SynthScene:
    return make_scene(size=size, seed=seed, transform=scene_transform(0, size), **kw)  # type: ignore[arg-type]


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def clean() -> SynthScene:
    return scene()


def test_style_zero_without_degradation_is_unchanged(clean: SynthScene) -> None:
    assert {k: sha(getattr(clean, k)) for k in STYLE0} == STYLE0
    explicit = scene(style=0, degrade=0.0)
    assert sha(explicit.image) == STYLE0["image"]


def same_ground(a: SynthScene, b: SynthScene) -> None:
    for k in UNCHANGED:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert [t.polygon.wkb for t in a.buildings] == [t.polygon.wkb for t in b.buildings]
    assert [t.polygon.wkb for t in a.roads] == [t.polygon.wkb for t in b.roads]


def test_degrade_changes_the_image_only_and_is_seeded(clean: SynthScene) -> None:
    hazy = scene(degrade=1.0)
    same_ground(clean, hazy)
    assert hazy.image.dtype == np.uint8 and hazy.image.shape == clean.image.shape
    diff = np.abs(hazy.image.astype(int) - clean.image.astype(int))
    assert diff.mean() > 3.0
    # haze and blur lower the contrast of every band more than gains and noise raise it
    assert (hazy.image.reshape(4, -1).std(1) < clean.image.reshape(4, -1).std(1)).all()
    np.testing.assert_array_equal(scene(degrade=1.0).image, hazy.image)  # deterministic
    assert not np.array_equal(scene(degrade=0.5).image, hazy.image)
    other_seed = scene(seed=4, degrade=1.0)
    assert not np.array_equal(other_seed.labels, hazy.labels)


@pytest.fixture(scope="module")
def town() -> SynthScene:
    return scene(size=600, seed=0)  # has buildings, grass and trees


@pytest.mark.parametrize("style", [1, 2])
def test_other_styles_recolour_the_same_ground(town: SynthScene, style: int) -> None:
    styled = scene(size=600, seed=0, style=style)
    same_ground(town, styled)
    for cls in (BLD, VEG, TREE):
        m = town.labels == cls
        assert m.sum() > 1000
        assert np.abs(styled.image[:, m].mean(1) - town.image[:, m].mean(1)).max() > 5.0
    np.testing.assert_array_equal(scene(size=600, seed=0, style=style).image, styled.image)


def test_style_one_has_drier_grass_and_darker_trees(town: SynthScene) -> None:
    styled = scene(size=600, seed=0, style=1)
    trees = town.labels == TREE
    assert styled.image[:3, trees].mean() < town.image[:3, trees].mean() - 5
    grass = town.labels == VEG
    clean = town
    ratio = [im[0, grass].mean() / im[1, grass].mean() for im in (clean.image, styled.image)]
    assert ratio[1] > ratio[0] + 0.05  # redder relative to green: yellower


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"style": 3}, "style=3"),
        ({"style": -1}, "style=-1"),
        ({"degrade": -0.1}, "degrade="),
        ({"degrade": 2.5}, "degrade="),
        ({"degrade": float("nan")}, "degrade="),
    ],
)
def test_bad_style_or_degrade(kw: dict[str, float], match: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=match):
        scene(size=64, **kw)
    with pytest.raises(InputError, match=match):
        synthesize(tmp_path / "out", scenes=1, size=64, seed=0, **kw)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_synthesize_records_style_and_degrade(tmp_path: Path) -> None:
    res = synthesize(tmp_path / "s", scenes=1, size=96, seed=2, style=1, degrade=0.7)
    manifest = json.loads(res.manifest.read_text())
    assert manifest["style"] == 1 and manifest["degrade"] == 0.7
    written = scene(size=96, seed=2, style=1, degrade=0.7)
    with rasterio.open(res.paths["2_10"].image) as ds:
        np.testing.assert_array_equal(ds.read(), written.image)
