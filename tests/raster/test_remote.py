"""Remote COGs: read over HTTP range requests from a loopback server started by the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.errors import InputError
from geoseg.raster import SceneSpec, resolve_scenes
from geoseg.raster.remote import file_stamp, is_remote, path_stem, raster_path
from geoseg.raster.source import open_raster
from tests.conftest import POTSDAM_TF
from tests.predict.helpers import save_tiny_checkpoint
from tests.raster.http_helpers import Served, serving


def write_cog(path: Path, data: np.ndarray, *, blocksize: int = 32) -> Path:
    """``data`` (bands, rows, cols) as a tiled GeoTIFF with overviews (COG-like, small tiles)."""
    profile = {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype,
        "crs": "EPSG:32633",
        "transform": POTSDAM_TF,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.build_overviews([2, 4])
    return path


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir()
    rng = np.random.default_rng(3)
    write_cog(root / "scene.tif", rng.integers(1, 256, (3, 384, 384)).astype(np.uint8))
    (root / "notes.tif").write_text("not a raster\n")
    with serving(root, monkeypatch) as server:
        yield server


def test_raster_paths() -> None:
    assert raster_path("https://h.org/a/b.tif") == "/vsicurl/https://h.org/a/b.tif"
    assert raster_path("s3://bucket/k/c.tif") == "/vsis3/bucket/k/c.tif"
    assert raster_path("/vsis3/bucket/k/c.tif") == "/vsis3/bucket/k/c.tif"
    assert raster_path("local/d.tif") == Path("local/d.tif")
    assert path_stem("/vsicurl/https://h.org/a/b.tif?sig=x/y") == "b"
    assert is_remote("/vsicurl/http://h/x.tif") and not is_remote(Path("/vsicurl/x"))
    assert file_stamp("/vsis3/b/k.tif") == (0, 0, 0)


def test_resolve_scenes_takes_urls(served: Served) -> None:
    (spec,) = resolve_scenes([served.url("scene.tif")])
    assert spec.id == "scene" and spec.image == "/vsicurl/" + served.url("scene.tif")
    (spec,) = resolve_scenes(image=served.url("scene.tif"), labels=served.url("scene.tif"))
    assert isinstance(spec.labels, str) and spec.labels.startswith("/vsicurl/http://127.0.0.1")


def test_a_small_window_fetches_a_fraction_of_the_file(served: Served) -> None:
    size = (served.root / "scene.tif").stat().st_size
    spec = SceneSpec(id="s", image=raster_path(served.url("scene.tif")))
    with spec.open() as scene:
        block = scene.read(Window(100, 100, 20, 20))
    with rasterio.open(served.root / "scene.tif") as ds:
        want = ds.read(window=Window(100, 100, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(block.data, want)
    fetched = served.served("scene.tif")
    assert 0 < fetched < 0.25 * size, (fetched, size, served.stats()["requests"])


@pytest.mark.parametrize(
    ("name", "words"),
    [("missing.tif", ["missing.tif", "404"]), ("notes.tif", ["notes.tif", "not a readable"])],
)
def test_remote_errors_name_the_url(served: Served, name: str, words: list[str]) -> None:
    with pytest.raises(InputError) as info:
        open_raster(served.url(name), "image")
    msg = str(info.value)
    assert "\n" not in msg and served.url(name) in msg
    for w in words:
        assert w in msg


def test_connection_refused_names_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    url = "http://127.0.0.1:9/none.tif"  # the discard port: nothing listens
    with pytest.raises(InputError, match="127.0.0.1:9/none.tif") as info:
        open_raster(url, "image")
    assert "\n" not in str(info.value)


def test_predict_on_a_url_equals_predict_on_the_local_file(tmp_path: Path, served: Served) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    runner = CliRunner()
    common = ["-m", str(ckpt), "--tile-size", "64", "--overlap", "16", "--device", "cpu"]
    local = str(served.root / "scene.tif")
    for src, out in ((served.url("scene.tif"), "remote"), (local, "local")):
        result = runner.invoke(cli, ["predict", src, "-o", str(tmp_path / out), *common])
        assert result.exit_code == 0, result.output
    with (
        rasterio.open(tmp_path / "remote" / "scene_classes.tif") as a,
        rasterio.open(tmp_path / "local" / "scene_classes.tif") as b,
    ):
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())


def test_cli_refuses_a_missing_local_file_but_passes_urls(tmp_path: Path) -> None:
    ckpt = tmp_path / "x.pt"
    ckpt.write_bytes(b"")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "nope.tif"), "-m", str(ckpt)])
    assert result.exit_code == 2 and "nope.tif" in result.output
    url = "http://127.0.0.1:9/none.tif"
    result = CliRunner().invoke(cli, ["predict", url, "-m", str(ckpt), "-o", str(tmp_path / "o")])
    assert "does not exist" not in result.output  # the URL got past the option check
