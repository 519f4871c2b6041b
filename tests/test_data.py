from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from geoseg.data import (
    ChipDataset,
    SeededSampler,
    band_stats,
    dihedral,
    dihedral_view,
    downsample_labels,
    downsample_mean,
    read_labelled_chip,
    split_scenes,
)
from geoseg.errors import ConfigError, InputError
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from geoseg.tiles import TileOptions, read_store, tile_scenes
from tests.conftest import write_raster

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(train_store: Path) -> Path:
    return train_store


@pytest.fixture(scope="module")
def coord_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bands: label value, row, column, 0; labels (row * 7 + col) % 6; nodata in one corner."""
    d = tmp_path_factory.mktemp("coords")
    rows, cols = np.mgrid[0:96, 0:96]
    lab = ((rows * 7 + cols) % 6).astype(np.uint8)
    img = np.stack([lab + 1, rows + 1, cols + 1, np.ones_like(rows)]).astype(np.float32)
    img[:, :10, :10] = 0
    ip = write_raster(d / "img.tif", img, nodata=0)
    lp = write_raster(d / "lab.tif", POTSDAM.encode(lab))
    spec = SceneSpec("c", ip, labels=lp, image_bands=("lab", "row", "col", "one"))
    tile_scenes([spec], d / "store", options=TileOptions(size=48, overlap=0, min_valid=0.1))
    return d / "store"


def chip_paths(store: Path) -> list[Path]:
    _, index = read_store(store)
    return [store / p for p in sorted(index["path"])]


# -- split -----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    scenes=st.lists(st.sampled_from([f"{r}_{c}" for r in range(2, 8) for c in range(7, 16)]),
                    min_size=2, max_size=30),
    fraction=st.floats(0.01, 0.95),
    seed=st.integers(0, 2**31),
)  # fmt: skip
def test_split_is_by_whole_scenes(scenes: list[str], fraction: float, seed: int) -> None:
    chips_scene = scenes  # one entry per chip: scenes repeat
    if len(set(scenes)) < 2:
        with pytest.raises(ConfigError, match="single scene"):
            split_scenes(chips_scene, val_fraction=fraction, seed=seed)
        return
    train, val = split_scenes(chips_scene, val_fraction=fraction, seed=seed)
    assert set(train).isdisjoint(val)
    assert set(train) | set(val) == set(scenes)
    assert train and val
    again = split_scenes(list(reversed(chips_scene)), val_fraction=fraction, seed=seed)
    assert (train, val) == again


def test_split_seeded_explicit_and_errors() -> None:
    scenes = [f"2_{c}" for c in range(10, 20)]
    draws = {split_scenes(scenes, val_fraction=0.2, seed=s)[1] for s in range(20)}
    assert len(draws) > 5 and all(len(v) == 2 for v in draws)  # the seed matters
    assert split_scenes(scenes, val_scenes=["2_12", "2_15"]) == (
        tuple(s for s in scenes if s not in ("2_12", "2_15")),
        ("2_12", "2_15"),
    )
    assert split_scenes(scenes, val_fraction=0.0) == (tuple(scenes), ())
    assert split_scenes(["a"], val_fraction=0.0) == (("a",), ())
    with pytest.raises(InputError, match=r"'3_12' is not in the store.*2_10"):
        split_scenes(scenes, val_scenes=["3_12"])
    with pytest.raises(ConfigError, match=r"single scene \(a\).*--val-fraction 0"):
        split_scenes(["a", "a"], val_fraction=0.2)
    with pytest.raises(InputError, match="leave at least one"):
        split_scenes(["a", "b"], val_scenes=["a", "b"])


# -- pixel helpers ---------------------------------------------------------------------------


def test_dihedral_is_the_group_d4_and_keeps_image_and_mask_aligned() -> None:
    rows, cols = np.mgrid[0:5, 0:7]
    mask = torch.from_numpy((rows * 7 + cols) % 6)
    image = torch.from_numpy(np.stack([mask.numpy(), rows, cols]).astype(np.float32))
    outs = []
    for k in range(8):
        xi, yi = dihedral(image, k), dihedral(mask, k)
        assert torch.equal(xi[0].long(), yi)  # the mask moved with the image
        outs.append(xi)
    # 8 distinct results, and exactly the rotations/reflections of the array
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    a = image.numpy()
    expected = [np.rot90(a, k, axes=(1, 2)) for k in range(4)]
    expected += [e[:, :, ::-1] for e in expected]
    for o, e in zip(outs, expected, strict=True):
        np.testing.assert_array_equal(o.numpy(), e)
    assert torch.equal(dihedral(image, 0), image)
    with pytest.raises(InputError):
        dihedral(image, 8)
    # The numpy views the dataset uses are the same group elements.
    for k in range(8):
        np.testing.assert_array_equal(dihedral_view(a, k), dihedral(image, k).numpy())
        np.testing.assert_array_equal(dihedral_view(mask.numpy(), k), dihedral(mask, k).numpy())
    with pytest.raises(InputError):
        dihedral_view(a, -1)


def test_downsample_mean_uses_valid_pixels_only() -> None:
    rng = np.random.default_rng(1)
    img = rng.normal(size=(2, 10, 9)).astype(np.float32)
    valid = rng.random((10, 9)) > 0.3
    valid[:4, :4] = False
    img[:, ~valid] = 1e6  # must not leak into the means
    out, v = downsample_mean(img, valid, 4)
    assert out.shape == (2, 3, 3) and v.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            blk = valid[4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            assert v[i, j] == blk.any()
            if blk.any():
                vals = img[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4][:, blk]
                np.testing.assert_allclose(out[:, i, j], vals.mean(axis=1), rtol=1e-5)
            else:
                assert (out[:, i, j] == 0).all()


def test_downsample_labels_majority_ignoring_255() -> None:
    lab = np.array(
        [[1, 1, 2, 255],
         [1, 2, 255, 255],
         [255, 255, 3, 4],
         [255, 255, 4, 3]], dtype=np.uint8,
    )  # fmt: skip
    np.testing.assert_array_equal(
        downsample_labels(lab, 2, num_classes=6),
        [[1, 2], [255, 3]],  # 3/4 tie -> lower
    )
    assert downsample_labels(lab, 1, num_classes=6) is lab


# -- statistics and dataset ------------------------------------------------------------------


def test_band_stats_stream_equals_pooled_valid_pixels(store: Path) -> None:
    paths = chip_paths(store)
    ds = ChipDataset(paths, num_classes=6)
    stats = band_stats(ds)
    pooled = []
    for p in paths:
        data, valid, _, _ = read_labelled_chip(p)
        pooled.append(data[:, valid])
    allpx = np.concatenate(pooled, axis=1).astype(np.float64)
    assert stats.pixels == allpx.shape[1] < len(paths) * 64 * 64  # the nodata strip is out
    np.testing.assert_allclose(stats.mean, allpx.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, allpx.std(axis=1), rtol=1e-9)
    # at the model's resolution: statistics of the block means
    ds2 = ChipDataset(paths, num_classes=6, downsample=2)
    small = np.concatenate([ds2.load(i).image[:, ds2.load(i).valid] for i in range(len(ds2))], 1)
    np.testing.assert_allclose(band_stats(ds2).std, small.astype(np.float64).std(axis=1), rtol=1e-9)


def test_dataset_normalises_and_ignores_invalid_pixels(store: Path) -> None:
    paths = chip_paths(store)
    mean, std = [10.0, 20.0, 30.0, 40.0], [2.0, 4.0, 5.0, 8.0]
    ds = ChipDataset(paths, num_classes=6, mean=mean, std=std)
    for i, p in enumerate(paths):
        x, y = ds[i]
        data, valid, labels, names = read_labelled_chip(p)
        assert names == ["red", "green", "blue", "nir"]
        assert x.dtype == torch.float32 and y.dtype == torch.uint8
        expected = (data - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
        np.testing.assert_allclose(x.numpy()[:, valid], expected[:, valid], rtol=1e-5)
        assert (x.numpy()[:, ~valid] == 0).all()
        assert (y.numpy()[~valid] == 255).all()
        np.testing.assert_array_equal(y.numpy(), labels)
    assert any((~read_labelled_chip(p)[1]).any() for p in paths)  # the nodata strip is seen


def test_augmented_crops_keep_image_and_mask_aligned(coord_store: Path) -> None:
    paths = chip_paths(coord_store)
    ds = ChipDataset(paths, num_classes=6, crop=20, augment=True)
    kinds = set()
    for key in [(i % len(ds), s) for i, s in enumerate(range(100, 148))]:
        x, y = ds[key]
        assert x.shape == (4, 20, 20) and y.shape == (20, 20)
        valid = x[3] > 0
        assert torch.equal(x[0][valid].long() - 1, y[valid].long())
        assert (y[~valid] == 255).all()
        # rows/cols of the sample are a D4 image of a contiguous crop: find which one
        r, c = x[1] - 1, x[2] - 1
        if valid.all():
            ramp = torch.arange(20.0)
            rr, cc = r.min() + ramp[:, None].expand(20, 20), c.min() + ramp[None, :].expand(20, 20)
            found = [
                k
                for k in range(8)
                if torch.equal(dihedral(r, k), rr) and torch.equal(dihedral(c, k), cc)
            ]
            assert len(found) == 1
            kinds.add(found[0])
        assert ds[key][0].equal(x)  # the key's seed fixes the crop and the transform
    assert len(kinds) >= 6  # the transforms are drawn, not a constant


def test_native_labels_and_downsampled_reads(coord_store: Path) -> None:
    paths = chip_paths(coord_store)
    ds = ChipDataset(paths, num_classes=6, downsample=2, native_labels=True)
    x, y = ds[0]
    _, _, labels, _ = read_labelled_chip(paths[0])
    assert x.shape == (4, 24, 24) and y.shape == (48, 48)
    np.testing.assert_array_equal(y.numpy(), labels)
    with pytest.raises(ConfigError, match="native_labels"):
        ChipDataset(paths, num_classes=6, native_labels=True, augment=True)
    with pytest.raises(ConfigError, match="larger than chip"):
        ChipDataset(paths, num_classes=6, crop=64)[0]


def test_chip_without_labels_is_refused(tmp_path: Path) -> None:
    p = write_raster(tmp_path / "x.tif", np.ones((3, 8, 8), np.float32))
    with pytest.raises(InputError, match="no 'label' band"):
        read_labelled_chip(p)
    with rasterio.open(p) as ds:
        assert ds.count == 3


def test_sampler_is_seeded_per_epoch_and_independent_of_workers(store: Path) -> None:
    paths = chip_paths(store)
    ds = ChipDataset(paths, num_classes=6, crop=32, augment=True)
    s = SeededSampler(len(ds), seed=5)
    first = list(s)
    assert sorted(i for i, _ in first) == list(range(len(ds)))
    assert list(s) == first
    s.set_epoch(1)
    assert list(s) != first
    assert [i for i, _ in SeededSampler(len(ds), seed=5, shuffle=False)] == list(range(len(ds)))

    def batches(workers: int) -> list[torch.Tensor]:
        sampler = SeededSampler(len(ds), seed=5)
        sampler.set_epoch(3)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=workers)  # type: ignore[arg-type]
        return [torch.cat([x.flatten(), y.flatten().float()]) for x, y in loader]

    a, b = batches(0), batches(2)
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
