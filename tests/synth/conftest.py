"""Fixtures of the geoseg.synth tests, built once for the whole package (they are read only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from geoseg.synth import SynthScene, make_scene, scene_transform, synthesize


@pytest.fixture(scope="package")
def scene() -> SynthScene:
    return make_scene(size=1000, seed=0, transform=scene_transform(0, 1000))


@pytest.fixture(scope="package")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "potsdam"
    synthesize(out, scenes=2, size=600, seed=5)
    return out
