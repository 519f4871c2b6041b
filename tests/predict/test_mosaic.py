"""Many files as one scene: four tiles of one scene predicted as one give the unsplit map.

One synthetic scene is written whole (a one-tile Potsdam folder) and cut into four quadrant
tiles (a four-tile Potsdam folder: image, DSM, labels on one grid). The quadrants as a
``--mosaic`` are predicted bit for bit as the whole file (same model, same plan); the
quadrants predicted one by one differ at their borders, the seam the mosaic removes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.errors import BandMismatchError, CRSMismatchError, GridMismatchError, InputError
from geoseg.options import PredictOptions
from geoseg.raster import resolve_scenes
from geoseg.raster.mosaic import mosaic_scene
from tests.pipeline.helpers import make_checkpoint

SIZE = 512
HALF = SIZE // 2
QUADS = {"2_10": (0, 0), "2_11": (0, HALF), "3_10": (HALF, 0), "3_11": (HALF, HALF)}
OPTS = PredictOptions(
    tile_size=128, overlap=32, batch_size=4, device="cpu", workers=1, block_size=256
)


def _cut(src: Path, dst: Path, row: int, col: int, size: int = HALF, **change: Any) -> None:
    with rasterio.open(src) as ds:
        profile = ds.profile | {
            "width": size,
            "height": size,
            "transform": ds.window_transform(Window(col, row, size, size)),
            "blockxsize": 128,
            "blockysize": 128,
        }
        data = ds.read(window=Window(col, row, size, size))
        desc, interp = ds.descriptions, ds.colorinterp
    profile.update(change)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data[: profile["count"]])
        out.colorinterp = interp[: profile["count"]]
        for i, d in enumerate(desc[: profile["count"]], start=1):
            if d:
                out.set_band_description(i, d)


def _files(root: Path, tid: str) -> dict[str, Path]:
    r, c = (int(v) for v in tid.split("_"))
    return {
        "image": root / "4_Ortho_RGBIR" / f"top_potsdam_{r}_{c}_RGBIR.tif",
        "dsm": root / "1_DSM" / f"dsm_potsdam_{r:02d}_{c:02d}.tif",
        "labels": root / "5_Labels_all" / f"top_potsdam_{r}_{c}_label.tif",
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from geoseg.synth import synthesize

    base = tmp_path_factory.mktemp("mosaic")
    whole = base / "whole"
    (sid,) = synthesize(whole, scenes=1, size=SIZE, seed=11).scene_ids
    assert sid == "2_10"
    tiles = base / "tiles"
    for tid, (row, col) in QUADS.items():
        for kind, path in _files(whole, sid).items():
            _cut(path, _files(tiles, tid)[kind], row, col)
    model = make_checkpoint(base / "model.pt", tile_size=128)
    return {"base": base, "whole": whole, "tiles": tiles, "model": model}


def _classes(path: Path) -> tuple[np.ndarray, Any, Any]:
    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.crs


def test_four_tiles_as_a_mosaic_predict_the_unsplit_scene_bit_for_bit(
    data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from geoseg.predict import predict_scenes

    monkeypatch.setenv("GEOSEG_VRT_CACHE", str(data["base"] / "vrt"))
    out = data["base"] / "out"
    whole_spec = resolve_scenes([data["whole"]])
    (mosaic,) = resolve_scenes([data["tiles"]], mosaic="city")
    assert mosaic.id == "city" and str(mosaic.image).endswith(".vrt")
    assert mosaic.dsm is not None and mosaic.labels is not None
    # the nDSM derived from the mosaic's DSM is the whole file's (one ground estimate)
    with whole_spec[0].open() as a, mosaic.open() as b:
        assert a.geobox == b.geobox
        wa = a.read(Window(0, 0, SIZE, SIZE))
        wb = b.read(Window(0, 0, SIZE, SIZE))
        assert wa.bands == wb.bands and np.array_equal(wa.data, wb.data)
        assert np.array_equal(wa.valid, wb.valid) and wa.valid.all()
        assert np.array_equal(a.read_labels(Window(0, 0, SIZE, SIZE))[0],
                              b.read_labels(Window(0, 0, SIZE, SIZE))[0])  # fmt: skip

    predict_scenes(whole_spec, data["model"], out / "whole", options=OPTS)
    predict_scenes([mosaic], data["model"], out / "mosaic", options=OPTS)
    ref, t_ref, crs_ref = _classes(out / "whole" / "2_10_classes.tif")
    got, t_got, crs_got = _classes(out / "mosaic" / "city_classes.tif")
    assert got.shape == (SIZE, SIZE) and t_got == t_ref and crs_got == crs_ref
    assert np.array_equal(got, ref)
    assert len(np.unique(ref)) > 1  # a real map, not a constant

    # the four files one by one: the maps differ along the file borders (the seam)
    predict_scenes(resolve_scenes([data["tiles"]]), data["model"], out / "apart", options=OPTS)
    apart = np.empty_like(ref)
    for tid, (row, col) in QUADS.items():
        apart[row : row + HALF, col : col + HALF] = _classes(out / "apart" / f"{tid}_classes.tif")[
            0
        ]
    near = np.zeros((SIZE, SIZE), bool)
    near[HALF - 8 : HALF + 8, :] = near[:, HALF - 8 : HALF + 8] = True
    seam = np.count_nonzero((apart != ref) & near)
    assert seam > 0, "the four files predicted apart should show their borders"


def _args(inputs: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return ["predict", str(inputs), "-m", str(model), "-o", str(out), "--tile-size", "128",
            "--overlap", "32", "--device", "cpu", "--workers", "1", *extra]  # fmt: skip


def test_cli_mosaic_with_clip_writes_each_file_cut_from_the_map(
    data: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOSEG_VRT_CACHE", str(data["base"] / "vrt"))
    out = data["base"] / "cli-clip"
    result = CliRunner().invoke(cli, _args(data["tiles"], out, data["model"], "--mosaic",
                                           "city", "--clip"))  # fmt: skip
    assert result.exit_code == 0, result.output
    whole = _classes(out / "city_classes.tif")[0]
    for tid, (row, col) in QUADS.items():
        clip, tc, crs_c = _classes(out / f"{tid}_classes.tif")
        with rasterio.open(_files(data["tiles"], tid)["image"]) as ds:
            assert tc == ds.transform and crs_c == ds.crs
        assert np.array_equal(clip, whole[row : row + HALF, col : col + HALF])
    # a clip in the way is refused before any work; --clip without a mosaic is a usage error
    again = CliRunner().invoke(cli, _args(data["tiles"], out, data["model"], "--mosaic",
                                          "city2", "--clip"))  # fmt: skip
    assert again.exit_code == 1 and "2_10_classes.tif" in again.output
    assert not (out / "city2_classes.tif").exists()
    single = _files(data["tiles"], "2_10")["image"]
    bad = CliRunner().invoke(cli, _args(single, out / "x", data["model"], "--clip"))
    assert bad.exit_code == 2 and "--mosaic" in bad.output


def test_cli_predicts_a_mosaic_and_refuses_files_off_the_grid(data: dict[str, Path]) -> None:
    bad = data["base"] / "bad"
    for tid in ("2_10", "2_11"):
        for kind, path in _files(data["tiles"], tid).items():
            _cut(path, _files(bad, tid)[kind], 0, 0)
    # 2_11 lies half a pixel off 2_10's grid
    with rasterio.open(_files(bad, "2_11")["image"], "r+") as ds:
        ds.transform = ds.transform @ rasterio.Affine.translation(HALF + 0.5, 0)
    out = data["base"] / "cli-bad"
    args = [
        "predict",
        str(bad),
        "--mosaic",
        "city",
        "-m",
        str(data["model"]),
        "-o",
        str(out),
        "--tile-size",
        "128",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not aligned" in lines[0] and "2_11_RGBIR" in lines[0]
    assert "gdalwarp" in lines[0]
    assert not out.exists()


def _image_parts(tmp: Path, data: dict[str, Path], **change: Any) -> list[Any]:
    src = _files(data["tiles"], "2_10")["image"]
    a, b = tmp / "a.tif", tmp / "b.tif"
    _cut(src, a, 0, 0, size=128)
    _cut(src, b, 0, 128, size=128, **change)
    return resolve_scenes([a, b])


def test_files_with_other_bands_or_crs_are_refused(data: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "vrt"
    with pytest.raises(BandMismatchError, match=r"b\.tif.*3 band"):
        mosaic_scene(_image_parts(tmp_path, data, count=3), name="m", cache_dir=cache)
    with pytest.raises(CRSMismatchError, match=r"b\.tif.*CRS"):
        mosaic_scene(_image_parts(tmp_path, data, crs="EPSG:32632"), name="m", cache_dir=cache)
    with pytest.raises(GridMismatchError, match=r"b\.tif.*pixel size"):
        mosaic_scene(
            _image_parts(tmp_path, data, transform=rasterio.Affine(0.1, 0, 0, 0, -0.1, 0)),
            name="m",
            cache_dir=cache,
        )
    with pytest.raises(InputError, match="file stem"):
        mosaic_scene(_image_parts(tmp_path, data), name="../x", cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_folder_of_geotiffs_with_a_gap_reads_the_gap_as_invalid(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOSEG_VRT_CACHE", str(tmp_path / "vrt"))
    src = _files(data["whole"], "2_10")["image"]
    folder = tmp_path / "tifs"
    _cut(src, folder / "a.tif", 0, 0, size=128)
    _cut(src, folder / "d.tif", 128, 128, size=128)  # diagonal: two 128 px holes
    (spec,) = resolve_scenes([folder], mosaic="two")
    with spec.open() as scene, rasterio.open(src) as ds:
        assert (scene.geobox.width, scene.geobox.height) == (256, 256)
        block = scene.read(Window(0, 0, 256, 256), bands=["red", "green", "blue", "nir"])
        assert block.valid[:128, :128].all() and block.valid[128:, 128:].all()
        assert not block.valid[:128, 128:].any() and not block.valid[128:, :128].any()
        truth = ds.read(window=Window(0, 0, 256, 256)).astype(np.float32)
        assert np.array_equal(block.data[:, :128, :128], truth[:, :128, :128])
        assert np.array_equal(block.data[:, 128:, 128:], truth[:, 128:, 128:])
