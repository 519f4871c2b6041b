"""Block tasks: seamless, block-independent, georeferenced, nodata-exact, bands by name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate

from geoseg.blocks import plan_blocks
from geoseg.errors import BandMismatchError
from geoseg.predict import predict_scenes
from geoseg.raster import SceneSpec
from geoseg.schema import IGNORE
from tests.conftest import write_raster
from tests.predict.helpers import (
    opts,
    random_scene,
    read,
    square_scene,
    three_conv_model,
    threshold_model,
)


@pytest.mark.parametrize("blend", ["hann", "spline"])
def test_tiled_prediction_equals_one_piece_prediction(tmp_path: Path, blend: str) -> None:
    spec = random_scene(tmp_path, 150, 230)
    model = three_conv_model()
    (rep,) = predict_scenes(
        [spec], model, tmp_path / blend, options=opts(overlap=32, blend=blend, probabilities=True)
    )
    assert rep.probabilities is not None
    tiled = read(rep.probabilities).astype(np.float64) / 255.0
    with rasterio.open(spec.image) as ds:
        x = ds.read().astype(np.float32)
    mean = np.array(model.mean, np.float32)[:, None, None]
    std = np.array(model.std, np.float32)[:, None, None]
    with torch.no_grad():
        one = torch.softmax(model.module(torch.from_numpy((x - mean) / std)[None]), 1)[0].numpy()
    # Tiles see the same zero padding as the whole scene at its border; inside, only pixels
    # within 3 px (the receptive field radius) of a tile edge differ, where the taper is low.
    diff = np.abs(tiled - one)
    assert diff.max() < 0.03
    assert diff.mean() < 3e-3
    classes = read(rep.classes)[0]
    top2 = np.sort(one, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 0.05
    assert np.array_equal(classes[clear], one.argmax(0)[clear])


def test_result_does_not_depend_on_block_size(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 200, 260, seed=3)
    model = three_conv_model()
    outs = []
    for bs in (40, 100, 100000):
        (rep,) = predict_scenes(
            [spec],
            model,
            tmp_path / f"b{bs}",
            options=opts(overlap=12, block_size=bs, probabilities=True),
        )
        plan = plan_blocks((200, 260), tile_size=64, overlap=12, block_size=bs)
        assert rep.blocks == len(plan.blocks)
        assert rep.tiles_computed == rep.tiles == plan.n_tiles  # each tile computed once
        assert rep.probabilities is not None
        outs.append((read(rep.classes), read(rep.probabilities)))
    assert len({r for r in (40, 100, 100000)}) == 3
    for c, p in outs[1:]:
        assert np.array_equal(c, outs[0][0])
        assert np.array_equal(p, outs[0][1])


def test_known_square_lands_on_the_right_pixels_and_grid(tmp_path: Path) -> None:
    spec = square_scene(tmp_path, 300, 200, slice(50, 81), slice(120, 171))
    (rep,) = predict_scenes([spec], threshold_model(), tmp_path / "out", options=opts())
    with rasterio.open(rep.classes) as out, rasterio.open(spec.image) as src:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.shape == src.shape
        cls = out.read(1)
        # the square's centre, in map coordinates, maps back to a square pixel
        x, y = src.xy(65, 145)
        assert cls[out.index(x, y)] == 1
    expected = np.zeros((300, 200), np.uint8)
    expected[50:81, 120:171] = 1
    assert np.array_equal(cls, expected)


def test_model_trained_at_coarser_gsd_sees_averaged_pixels(tmp_path: Path) -> None:
    # A 20 cm model on a 5 cm scene: tiles are read at 5 cm, averaged 4x4 for the model and its
    # probabilities upsampled back; the output stays on the scene's 5 cm grid.
    spec = square_scene(tmp_path, 300, 200, slice(48, 80), slice(120, 172))
    (rep,) = predict_scenes(
        [spec], threshold_model(gsd=0.2), tmp_path / "out", options=opts(tile_size=32, overlap=8)
    )
    assert not rep.warnings
    with rasterio.open(rep.classes) as out, rasterio.open(spec.image) as src:
        assert out.transform == src.transform and out.shape == src.shape
        cls = out.read(1)
    expected = np.zeros((300, 200), np.uint8)
    expected[48:80, 120:172] = 1
    # bilinear upsampling rounds the square's corners: 0.625 x 0.625 < 0.5
    expected[[48, 48, 79, 79], [120, 171, 120, 171]] = 0
    assert np.array_equal(cls, expected)
    side = json.loads(rep.sidecar.read_text())
    assert side["model"]["scene_pixels_per_model_pixel"] == 4
    # options as given (model pixels); the tiling in both units, named as such
    assert side["options"]["tile_size"] == 32 and side["options"]["overlap"] == 8
    assert side["tiling"] == {
        "scene_pixels_per_model_pixel": 4,
        "tile_model_px": 32,
        "overlap_model_px": 8,
        "tile_scene_px": 128,
        "overlap_scene_px": 32,
    }


def test_nodata_exactly_where_the_scene_is_invalid(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    img = rng.integers(1, 256, (3, 180, 210)).astype(np.uint8)
    yy, xx = np.mgrid[0:180, 0:210]
    hole = ((yy - 90) ** 2 + (xx - 60) ** 2 < 40**2) | (xx > 190) | (yy < 7)
    img[:, hole] = 0
    img[1, 150:160, 150:160] = 0  # one band at nodata is still valid data
    path = write_raster(tmp_path / "holes.tif", img, nodata=0)
    spec = SceneSpec(id="holes", image=path)
    (rep,) = predict_scenes(
        [spec], three_conv_model(), tmp_path / "out", options=opts(probabilities=True)
    )
    with spec.open() as scene:
        valid = scene.read(rasterio.windows.Window(0, 0, 210, 180)).valid
    cls = read(rep.classes)[0]
    assert np.array_equal(cls == IGNORE, ~valid)
    assert np.array_equal(valid, ~hole)
    assert rep.probabilities is not None
    with rasterio.open(rep.probabilities) as ds:
        assert np.array_equal(ds.dataset_mask() > 0, valid)
        assert np.all(ds.read()[:, ~valid] == 0)


def test_all_nodata_scene_gives_all_nodata(tmp_path: Path) -> None:
    path = write_raster(tmp_path / "empty.tif", np.zeros((3, 90, 130), np.uint8), nodata=0)
    (rep,) = predict_scenes(
        [SceneSpec(id="empty", image=path)], three_conv_model(), tmp_path / "o", options=opts()
    )
    assert np.all(read(rep.classes) == IGNORE)
    assert rep.tiles_computed == 0 and rep.tiles_skipped_nodata == rep.tiles > 0
    assert cog_validate(str(rep.classes))[0]


def test_scene_smaller_than_a_tile(tmp_path: Path) -> None:
    spec = square_scene(tmp_path, 40, 50, slice(10, 20), slice(5, 45))
    (rep,) = predict_scenes([spec], threshold_model(), tmp_path / "out", options=opts(tile_size=64))
    cls = read(rep.classes)[0]
    assert cls.shape == (40, 50)
    expected = np.zeros((40, 50), np.uint8)
    expected[10:20, 5:45] = 1
    assert np.array_equal(cls, expected)
    assert rep.tiles == 1


def test_bands_are_mapped_by_name_and_missing_ones_named(tmp_path: Path) -> None:
    img = np.stack([np.full((60, 70), v, np.uint8) for v in (10, 20, 30, 200)])
    path = write_raster(tmp_path / "bgrn.tif", img)
    # File order blue, green, red, nir: the model reads "nir" (200) as its first band.
    spec = SceneSpec(id="bgrn", image=path, image_bands=("blue", "green", "red", "nir"))
    (rep,) = predict_scenes(
        [spec], threshold_model(("nir", "red")), tmp_path / "ok", options=opts()
    )
    assert np.all(read(rep.classes) == 1)
    out = tmp_path / "bad"
    with pytest.raises(BandMismatchError, match="ndsm"):
        predict_scenes([spec], threshold_model(("red", "ndsm")), out, options=opts())
    assert not out.exists()


def test_coarser_model_averages_valid_pixels_only_like_training(tmp_path: Path) -> None:
    # Bright (150) everywhere, nodata (0) left of column 98: the model pixels over columns
    # 96..99 hold 2 nodata and 2 bright scene columns. Training's rule (geoseg.data.
    # downsample_mean) averages the valid ones: 150 > 100, class 1. Averaging the zeroed
    # nodata in (75) would give class 0 at the valid pixels 98 and 99.
    img = np.full((3, 128, 192), 150, dtype=np.uint8)
    img[:, :, :98] = 0
    path = write_raster(tmp_path / "edge.tif", img, nodata=0)
    spec = SceneSpec(id="edge", image=path)
    (rep,) = predict_scenes(
        [spec], threshold_model(gsd=0.2), tmp_path / "out", options=opts(tile_size=32, overlap=8)
    )
    cls = read(rep.classes)[0]
    assert (cls[:, :98] == IGNORE).all()
    assert (cls[:, 98:] == 1).all()


def test_downsample_mean_batched_equals_per_tile() -> None:
    from geoseg.data import downsample_mean

    rng = np.random.default_rng(1)
    tiles = rng.normal(size=(3, 4, 18, 22)).astype(np.float32)
    valid = rng.random((3, 18, 22)) > 0.3
    out, ok = downsample_mean(tiles, valid, 4)
    for i in range(3):
        one, one_ok = downsample_mean(tiles[i], valid[i], 4)
        assert np.array_equal(out[i], one) and np.array_equal(ok[i], one_ok)


def test_a_worker_thread_keeps_its_scenes_open_and_reopens_a_changed_file(tmp_path: Path) -> None:
    import threading

    from geoseg.predict._block import KEEP_OPEN, open_scene

    specs = [random_scene(tmp_path, 20, 30, seed=s) for s in range(KEEP_OPEN + 1)]
    first = open_scene(specs[0])
    assert open_scene(specs[0]) is first  # the next block task of the thread reuses it
    other: list[object] = []
    t = threading.Thread(target=lambda: other.append(open_scene(specs[0])))
    t.start()
    t.join()
    assert other[0] is not first  # a GDAL dataset is never shared between threads
    # the file changes on disk: another inode and size, so it is opened afresh
    img = np.full((3, 20, 30), 9, dtype=np.uint8)
    write_raster(tmp_path / "new.tif", img, compress="deflate").replace(specs[0].image)
    again = open_scene(specs[0])
    assert again is not first and first._sources == []  # the stale one was closed
    raw = again.read_raw(rasterio.windows.Window(0, 0, 30, 20))
    assert (raw.image == 9).all()
    for spec in specs[1:]:  # beyond KEEP_OPEN scenes, the least recently used is closed
        open_scene(spec)
    assert again._sources == []
