"""The quick-look PNG: image, class map in class colours, building outlines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.io
from PIL import Image

from geoseg.errors import InputError
from geoseg.raster.quicklook import OUTLINE_COLOUR, write_quicklook
from geoseg.raster.tags import SCHEMA_TAG
from geoseg.schema import IGNORE, POTSDAM, ClassSchema
from geoseg.synth import MIN_SIZE, SynthResult, synthesize

# A 256 px synthetic scene (12.8 m) holds no building; with seed 0, 512 px holds one.
SIZE = 512
BUILDING = POTSDAM.colours[POTSDAM.index("building")]
MAGENTA = tuple(int(OUTLINE_COLOUR[i : i + 2], 16) for i in (1, 3, 5))


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> SynthResult:
    assert SIZE >= MIN_SIZE
    return synthesize(tmp_path_factory.mktemp("ql") / "data", scenes=1, size=SIZE, seed=0)


def _pixels(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert 900 <= im.width <= 2000 and 300 <= im.height <= 900, im.size
        return np.asarray(im.convert("RGB"))


def _count(rgb: np.ndarray, colour: tuple[int, ...]) -> int:
    return int(np.count_nonzero((rgb == np.asarray(colour, dtype=np.uint8)).all(axis=-1)))


def _thirds(rgb: np.ndarray) -> list[np.ndarray]:
    w = rgb.shape[1] // 3
    return [rgb[:, :w], rgb[:, w : 2 * w], rgb[:, 2 * w :]]


def test_quicklook_of_a_synthetic_scene(
    scene: SynthResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = scene.paths[scene.scene_ids[0]]
    # every raster read is decimated to max_size on its longer edge (bounded memory)
    shapes: list[tuple[int, ...]] = []
    real = rasterio.io.DatasetReader.read

    def spy(self: rasterio.io.DatasetReader, *args: Any, **kwargs: Any) -> np.ndarray:
        out = real(self, *args, **kwargs)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    out = write_quicklook(
        paths.image,
        paths.labels,
        tmp_path / "ql" / "quick.png",
        vectors=scene.truth,
        max_size=200,
        title="synthetic",
    )
    assert out == tmp_path / "ql" / "quick.png"
    assert shapes and max(max(s[-2:]) for s in shapes) <= 200, shapes
    assert {s[-2:] for s in shapes} >= {(200, 200)}
    left, middle, right = _thirds(_pixels(out))
    # the class map in class colours: the building's blue in the middle panel only
    assert _count(middle, BUILDING) > 500
    assert _count(left, BUILDING) == 0 and _count(right, BUILDING) == 0
    # the building's outline on the image, in the right panel only
    assert _count(right, MAGENTA) > 50
    assert _count(left, MAGENTA) == 0
    # only the PNG is left: no temporary beside it
    assert [p.name for p in (tmp_path / "ql").iterdir()] == ["quick.png"]


def test_a_one_band_class_map_takes_its_tagged_schema(scene: SynthResult, tmp_path: Path) -> None:
    paths = scene.paths[scene.scene_ids[0]]
    schema = ClassSchema("mine", ("ground", "roof"), ((200, 180, 120), (140, 20, 160)))
    with rasterio.open(paths.labels) as src:
        decoded, _ = POTSDAM.decode(src.read())
        profile = {"crs": src.crs, "transform": src.transform}
    classes = np.where(decoded == POTSDAM.index("building"), 1, 0).astype(np.uint8)
    classes[:20] = IGNORE
    path = tmp_path / "classes.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=SIZE, height=SIZE, count=1, dtype="uint8",
        nodata=IGNORE, **profile,
    ) as ds:  # fmt: skip
        ds.write(classes, 1)
        ds.write_colormap(1, schema.colormap())
        ds.update_tags(**{SCHEMA_TAG: json.dumps(schema.to_dict())})
    out = write_quicklook(paths.image, path, tmp_path / "q.png")
    _, middle, _ = _thirds(_pixels(out))
    assert _count(middle, schema.colours[1]) > 500 and _count(middle, schema.colours[0]) > 500
    assert _count(middle, BUILDING) == 0


def test_bad_inputs_are_refused(scene: SynthResult, tmp_path: Path) -> None:
    paths = scene.paths[scene.scene_ids[0]]
    with pytest.raises(InputError, match="no layer 'houses'"):
        write_quicklook(paths.image, paths.labels, tmp_path / "q.png", vectors=scene.truth,
                        layer="houses")  # fmt: skip
    with pytest.raises(InputError, match="not found"):
        write_quicklook(tmp_path / "missing.tif", paths.labels, tmp_path / "q.png")
    with pytest.raises(InputError, match="max_size"):
        write_quicklook(paths.image, paths.labels, tmp_path / "q.png", max_size=4)
    assert list(tmp_path.iterdir()) == []
