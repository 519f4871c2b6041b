"""Potsdam layout discovery and input resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import InputError
from geoseg.raster import list_potsdam_ids, potsdam_scene, resolve_scenes
from tests.conftest import write_raster


def test_potsdam_layout_discovery(tmp_path: Path) -> None:
    root = tmp_path / "potsdam"
    for d in ("4_Ortho_RGBIR", "1_DSM", "5_Labels_all"):
        (root / d).mkdir(parents=True)
    write_raster(root / "4_Ortho_RGBIR/top_potsdam_2_10_RGBIR.tif", np.ones((4, 8, 8), np.uint8))
    write_raster(root / "4_Ortho_RGBIR/top_potsdam_2_9_RGBIR.tif", np.ones((4, 8, 8), np.uint8))
    write_raster(root / "1_DSM/dsm_potsdam_02_10.tif", np.ones((8, 8), np.float32))
    assert list_potsdam_ids(root) == ["2_9", "2_10"]
    spec = potsdam_scene(root, "2_10")
    assert spec.dsm == root / "1_DSM/dsm_potsdam_02_10.tif" and spec.labels is None
    with pytest.raises(InputError, match="DSM of tile 2_9"):
        potsdam_scene(root, "2_9")
    with pytest.raises(InputError, match="tiles here: 2_9, 2_10"):
        potsdam_scene(root, "3_3")
    assert [s.id for s in resolve_scenes([root], ids=["2_10"])] == ["2_10"]
