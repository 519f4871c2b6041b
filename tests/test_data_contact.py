"""The contact target through the dataset: read, downsample, crop, D4, aligned with labels."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from geoseg.data import ChipDataset, downsample_contact, read_training_chip
from geoseg.errors import InputError
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from geoseg.tiles import TileOptions, read_store, tile_scenes
from tests.conftest import POTSDAM_TF, write_raster

pytestmark = pytest.mark.usefixtures("one_thread")

N = 96


def _box(r0: int, r1: int, c0: int, c1: int) -> shapely.Geometry:
    x0, y0 = POTSDAM_TF @ (c0, r1)
    x1, y1 = POTSDAM_TF @ (c1, r0)
    return shapely.box(x0, y0, x1, y1)


@pytest.fixture(scope="module")
def contact_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Bands: label + 1, row + 1, col + 1, 1; two touching buildings; its contact band."""
    d = tmp_path_factory.mktemp("contact")
    rows, cols = np.mgrid[0:N, 0:N]
    lab = ((rows * 7 + cols) % 6).astype(np.uint8)
    img = np.stack([lab + 1, rows + 1, cols + 1, np.ones_like(rows)]).astype(np.float32)
    img[:, :10, :10] = 0
    ip = write_raster(d / "img.tif", img, nodata=0)
    lp = write_raster(d / "lab.tif", POTSDAM.encode(lab))
    fp = d / "fp.gpkg"
    houses = [_box(20, 70, 10, 45), _box(20, 70, 45, 90), _box(75, 90, 5, 30)]
    gpd.GeoDataFrame(geometry=houses, crs="EPSG:32633").to_file(
        fp, layer="buildings", engine="pyogrio"
    )
    spec = SceneSpec("c", ip, labels=lp, image_bands=("lab", "row", "col", "one"))
    opts = TileOptions(size=48, overlap=0, min_valid=0.1, footprints=fp, contact_width=0.2)
    tile_scenes([spec], d / "store", options=opts)
    # the scene's contact band, reassembled from the chips (they do not overlap)
    contact = np.full((N, N), 7, np.uint8)
    meta, index = read_store(d / "store")
    assert meta["contact"]["width_m"] == 0.2
    for row in index.itertuples():
        chip = read_training_chip(d / "store" / row.path, contact=True)
        assert chip.contact is not None
        contact[row.row_off : row.row_off + 48, row.col_off : row.col_off + 48] = chip.contact
    assert (contact != 7).all()
    assert (contact[:10, :10] == 255).all() and (contact == 1).sum() > 100
    return d / "store", contact


def chip_paths(store: Path) -> list[Path]:
    _, index = read_store(store)
    return [store / p for p in sorted(index["path"])]


def test_augmented_crops_keep_labels_and_contact_aligned(
    contact_store: tuple[Path, np.ndarray],
) -> None:
    store, contact = contact_store
    ds = ChipDataset(chip_paths(store), num_classes=6, crop=20, augment=True, contact=True)
    seen_contact = 0
    for key in [(i % len(ds), s) for i, s in enumerate(range(200, 264))]:
        x, y = ds[key]
        assert x.shape == (4, 20, 20) and y.shape == (2, 20, 20) and y.dtype == torch.uint8
        valid = x[3] > 0
        r, c = (x[1] - 1).long(), (x[2] - 1).long()  # where each sample pixel comes from
        assert torch.equal(x[0][valid].long() - 1, y[0][valid].long())
        want = torch.from_numpy(contact)[r[valid], c[valid]]
        assert torch.equal(y[1][valid], want)  # the same pixel as the labels and the image
        assert (y[:, ~valid] == 255).all()
        seen_contact += int((y[1] == 1).sum())
    assert seen_contact > 0


def test_native_targets_and_downsampled_contact(contact_store: tuple[Path, np.ndarray]) -> None:
    store, contact = contact_store
    paths = chip_paths(store)
    native = ChipDataset(paths, num_classes=6, downsample=2, native_labels=True, contact=True)
    coarse = ChipDataset(paths, num_classes=6, downsample=2, contact=True)
    _, index = read_store(store)
    rows = index.set_index("path")
    for i, p in enumerate(paths):
        r0, c0 = (int(v) for v in rows.loc[str(p.relative_to(store)), ["row_off", "col_off"]])
        x, y = native[i]
        assert x.shape == (4, 24, 24) and y.shape == (2, 48, 48)
        np.testing.assert_array_equal(y[1].numpy(), contact[r0 : r0 + 48, c0 : c0 + 48])
        _, yc = coarse[i]
        assert yc.shape == (2, 24, 24)
        want = downsample_contact(contact[r0 : r0 + 48, c0 : c0 + 48], 2)
        np.testing.assert_array_equal(yc[1].numpy(), want)


def test_downsample_contact_keeps_thin_bands() -> None:
    c = np.array(
        [[0, 1, 0, 0],
         [0, 0, 0, 255],
         [255, 255, 0, 0],
         [255, 255, 0, 0]], dtype=np.uint8,
    )  # fmt: skip
    np.testing.assert_array_equal(downsample_contact(c, 2), [[1, 0], [255, 0]])
    assert downsample_contact(c, 1) is c
    # padded with 255: a 3 x 3 target at factor 2
    np.testing.assert_array_equal(downsample_contact(c[:3, :3], 2), [[1, 0], [255, 0]])


def test_contact_on_a_store_without_it_is_refused(train_store: Path) -> None:
    path = chip_paths(train_store)[0]
    with pytest.raises(InputError, match="no 'contact' band.*--footprints"):
        ChipDataset([path], num_classes=6, contact=True)[0]
    _, y = ChipDataset([path], num_classes=6)[0]  # without it: as before
    assert y.ndim == 2
