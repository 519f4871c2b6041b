"""STAC items: band assets picked by name, stacked into one image, through tile/train/predict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.checkpoint import load_checkpoint
from geoseg.cli.main import cli
from geoseg.errors import BandMismatchError, GridMismatchError, InputError
from geoseg.raster import resolve_scenes
from geoseg.raster.stac import is_stac_item, stac_scene
from tests.conftest import POTSDAM_TF, write_raster
from tests.raster.http_helpers import serving

WV_BANDS = ("coastal", "blue", "green", "yellow", "red", "rededge", "nir", "nir2")
SIZE = 96


def write_item(root: Path, *, by: str = "key", size: int = SIZE) -> Path:
    """8 uint16 one-band GeoTIFFs (WorldView-like), a label raster and ``item.json``.

    ``by="key"``: assets keyed by band name; ``by="eo"``: keyed ``B1``.. and named only by
    their ``eo:bands`` common name (``nir2`` by its name).
    """
    rng = np.random.default_rng(11)
    (root / "bands").mkdir(parents=True, exist_ok=True)
    labels = (np.arange(size)[:, None] // 16 + np.arange(size)[None, :] // 16) % 6
    assets: dict[str, Any] = {}
    for i, name in enumerate(WV_BANDS):
        # band values follow the class (so a model can learn), 11-bit like WorldView
        data = (200 + 150 * labels * (i + 1) % 1800 + rng.integers(0, 50, labels.shape)).astype(
            np.uint16
        )
        write_raster(root / "bands" / f"{name}.tif", data, tiled=True, blockxsize=32, blockysize=32)
        key = name if by == "key" else f"B{i + 1}"
        eo = (
            {"name": name.upper()} if name == "nir2" else {"name": f"B{i + 1}", "common_name": name}
        )
        assets[key] = {
            "href": f"bands/{name}.tif",
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "eo:bands": [eo],
        }
    assets["thumbnail"] = {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]}
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": "wv_scene",
        "geometry": None,
        "properties": {"datetime": "2024-01-01T00:00:00Z"},
        "assets": assets,
        "links": [],
    }
    path = root / "item.json"
    path.write_text(json.dumps(item))
    write_raster(root / "labels.tif", labels.astype(np.uint8))
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOSEG_STAC_CACHE", str(tmp_path / "stac-cache"))


@pytest.mark.parametrize("by", ["key", "eo"])
def test_item_bands_stack_in_order(tmp_path: Path, by: str) -> None:
    item = write_item(tmp_path / "item", by=by)
    spec = stac_scene(item)
    assert spec.id == "wv_scene" and spec.image_bands == WV_BANDS
    assert Path(spec.image).parent == tmp_path / "stac-cache"
    with spec.open() as scene:
        assert scene.band_names == WV_BANDS
        block = scene.read(Window(10, 20, 30, 40), bands=["red", "nir2"])
    for k, name in enumerate(("red", "nir2")):
        with rasterio.open(tmp_path / "item" / "bands" / f"{name}.tif") as ds:
            want = ds.read(1, window=Window(10, 20, 30, 40))
        np.testing.assert_array_equal(block.data[k], want.astype(np.float32))
    with rasterio.open(spec.image) as vrt:
        assert vrt.dtypes[0] == "uint16" and vrt.descriptions == WV_BANDS
        assert vrt.transform == POTSDAM_TF


def test_bands_pick_assets_and_missing_ones_are_named(tmp_path: Path) -> None:
    item = write_item(tmp_path / "item")
    spec = stac_scene(item, bands=["nir", "Red", "green"])
    assert spec.image_bands == ("nir", "red", "green")
    with pytest.raises(BandMismatchError, match="swir16") as info:
        stac_scene(item, bands=["red", "swir16"])
    assert "\n" not in str(info.value) and "coastal" in str(info.value)


def test_bad_items_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text(json.dumps({"type": "Collection", "id": "c"}))
    (tmp_path / "bad.json").write_text("{nope")
    for name, words in (("c.json", "not a STAC Item"), ("bad.json", "not valid JSON")):
        with pytest.raises(InputError, match=words):
            stac_scene(tmp_path / name)
    with pytest.raises(InputError, match="not found"):
        stac_scene(tmp_path / "none.json")
    item = write_item(tmp_path / "item")
    write_raster(tmp_path / "item" / "bands" / "red.tif", np.ones((40, 40), np.uint16))
    with pytest.raises(GridMismatchError, match="red"):
        stac_scene(item)
    assert is_stac_item("https://h.org/items/x.json?sig=1") and not is_stac_item("a.tif")


def test_item_over_http_resolves_relative_hrefs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "www"
    write_item(root)
    with serving(root, monkeypatch) as server:
        (spec,) = resolve_scenes([server.url("item.json")], band_names=["red", "nir"])
        assert spec.image_bands == ("red", "nir")
        with spec.open() as scene:
            block = scene.read(Window(0, 0, 16, 16))
        assert server.served("bands/red.tif") > 0 and server.served("bands/green.tif") == 0
    with rasterio.open(root / "bands" / "nir.tif") as ds:
        want = ds.read(1, window=Window(0, 0, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(block.data[1], want)


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_uint16_item_tiles_trains_and_predicts(tmp_path: Path) -> None:
    item = write_item(tmp_path / "item")
    labels = tmp_path / "item" / "labels.tif"
    tiles, model, maps = tmp_path / "tiles", tmp_path / "m.pt", tmp_path / "maps"
    _run("tile", "--image", str(item), "--labels", str(labels), "-o", str(tiles), "--size", "48",
         "--overlap", "0")  # fmt: skip
    chips = [p for p in tiles.rglob("*.tif") if "label" not in p.name]
    with rasterio.open(chips[0]) as chip:  # the uint16 values are kept, not scaled to 8 bits
        assert chip.count >= 8 and chip.read().max() > 255
    _run("train", str(tiles), "--model", "fcn_resnet18", "--epochs", "1", "--batch-size", "2",
         "--val-fraction", "0", "--device", "cpu", "-o", str(model))  # fmt: skip
    meta = load_checkpoint(model)
    assert tuple(meta.bands) == WV_BANDS
    assert max(meta.mean) > 255  # normalisation from the uint16 chips, not a fixed /255
    _run("predict", str(item), "-m", str(model), "-o", str(maps), "--tile-size", "48",
         "--overlap", "8", "--device", "cpu")  # fmt: skip
    with rasterio.open(maps / "wv_scene_classes.tif") as out:
        assert out.shape == (SIZE, SIZE) and out.transform == POTSDAM_TF
        classes = out.read(1)
    assert classes.max() < 6
    # ... and on to polygons: one layer per class present, in the item's CRS
    gpkg = tmp_path / "wv.gpkg"
    names = ("impervious_surfaces", "building", "low_vegetation")
    _run("vectorize", str(maps / "wv_scene_classes.tif"), "-o", str(gpkg), "--classes",
         ",".join(names), "--min-building-area", "0")  # fmt: skip
    import pyogrio

    px_area = abs(POTSDAM_TF.a * POTSDAM_TF.e)
    for k, layer in enumerate(("impervious_surfaces", "buildings", "low_vegetation")):
        frame = pyogrio.read_dataframe(gpkg, layer=layer)
        assert frame.crs is not None
        # the polygons cover exactly the class's pixels
        assert frame["area_m2"].sum() == pytest.approx((classes == k).sum() * px_area)
