"""Whole-scene prediction: seamless, georeferenced, nodata-exact, block-independent, resumable."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rio_cogeo.cogeo import cog_validate
from torch import nn

from geoseg.blend import plan_blocks
from geoseg.checkpoint import Checkpoint, file_sha256, save_checkpoint
from geoseg.errors import BandMismatchError, ConfigError, OutputExistsError
from geoseg.predict import PredictModel, PredictOptions, output_paths, predict_scenes
from geoseg.scene import SceneSpec
from geoseg.schema import IGNORE, POTSDAM, ClassSchema
from tests.conftest import real_data, write_raster

TWO = ClassSchema("two", ("background", "square"), ((0, 0, 0), (255, 0, 0)))
RGB = ("red", "green", "blue")
REPO = Path(__file__).resolve().parents[1]


class ThreeConv(nn.Module):
    """Three stacked 3x3 convolutions: a receptive field of 7 x 7 pixels."""

    def __init__(self, cin: int = 3, ncls: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(cin, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, ncls, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 3.0


class Threshold(nn.Module):
    """Class 1 where the first band exceeds 100 (no normalisation), else class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x[:, :1] - 100.0) * 0.5
        return torch.cat([torch.zeros_like(score), score], dim=1)


def three_conv_model(**kw: object) -> PredictModel:
    return PredictModel(
        module=ThreeConv(),
        bands=RGB,
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
        name="threeconv",
        **kw,  # type: ignore[arg-type]
    )


def threshold_model(bands: tuple[str, ...] = RGB, gsd: float = 0.05) -> PredictModel:
    n = len(bands)
    return PredictModel(
        module=Threshold(),
        bands=bands,
        mean=(0.0,) * n,
        std=(1.0,) * n,
        schema=TWO,
        tile_size=64,
        gsd=gsd,
        name="threshold",
    )


def random_scene(
    tmp_path: Path, h: int, w: int, *, seed: int = 0, nodata: float | None = None
) -> SceneSpec:
    rng = np.random.default_rng(seed)
    img = rng.integers(1, 256, (3, h, w)).astype(np.uint8)
    path = write_raster(tmp_path / f"scene_{h}x{w}_{seed}.tif", img, nodata=nodata)
    return SceneSpec(id=path.stem, image=path)


def square_scene(tmp_path: Path, h: int, w: int, rows: slice, cols: slice) -> SceneSpec:
    img = np.full((3, h, w), 50, dtype=np.uint8)
    img[0, rows, cols] = 200
    path = write_raster(tmp_path / "square.tif", img)
    return SceneSpec(id="square", image=path)


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def opts(**kw: object) -> PredictOptions:
    base: dict[str, object] = {"tile_size": 64, "overlap": 16, "batch_size": 4, "device": "cpu"}
    base.update(kw)
    return PredictOptions(**base)  # type: ignore[arg-type]


# -- seamless, block-independent ----------------------------------------------------------


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


def test_many_blocks_of_several_scenes_in_parallel_match_one_block_runs(tmp_path: Path) -> None:
    # 4 block threads and the driver's persist threads complete the seams of 20 small
    # blocks per scene concurrently; each scene must equal its one-block prediction.
    specs = [random_scene(tmp_path, 180, 250, seed=s) for s in (5, 6)]
    model = three_conv_model()
    many = predict_scenes(
        specs,
        model,
        tmp_path / "many",
        options=opts(overlap=12, block_size=40, workers=4, probabilities=True),
    )
    for spec, rep in zip(specs, many, strict=True):
        assert rep.blocks >= 20
        (one,) = predict_scenes(
            [spec], model, tmp_path / "one", options=opts(overlap=12, block_size=100000)
        )
        assert np.array_equal(read(rep.classes), read(one.classes))
    assert not any(p.name.startswith(".") for p in (tmp_path / "many").iterdir())


# -- georeferencing, nodata, edge cases -------------------------------------------------------


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
    assert side["options"]["tile_size"] == 128  # 32 model pixels = 128 scene pixels


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


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_tta_undoes_its_transforms(tmp_path: Path, tta: str) -> None:
    spec = square_scene(tmp_path, 120, 100, slice(5, 30), slice(60, 95))
    (rep,) = predict_scenes([spec], threshold_model(), tmp_path / tta, options=opts(tta=tta))
    expected = np.zeros((120, 100), np.uint8)
    expected[5:30, 60:95] = 1
    assert np.array_equal(read(rep.classes)[0], expected)


# -- checks before work ---------------------------------------------------------------------


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


def test_gsd_far_from_the_checkpoint_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = square_scene(tmp_path, 40, 40, slice(0, 5), slice(0, 5))
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(gsd=0.09), tmp_path / "o", options=opts())
    assert rep.warnings and "ground sample distance" in rep.warnings[0]
    assert any("ground sample distance" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(gsd=0.06), tmp_path / "p", options=opts())
    assert not rep.warnings and not caplog.records


def test_existing_outputs_refused_before_any_work(tmp_path: Path) -> None:
    spec = square_scene(tmp_path, 40, 40, slice(0, 5), slice(0, 5))
    out = tmp_path / "out"
    paths = output_paths(out, spec.id)
    out.mkdir()
    paths["classes"].write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        predict_scenes([spec], threshold_model(), out, options=opts())
    assert paths["classes"].read_bytes() == b"precious"
    assert not paths["work"].exists() and not paths["sidecar"].exists()
    (rep,) = predict_scenes([spec], threshold_model(), out, options=opts(overwrite=True))
    assert read(rep.classes)[0, 0, 0] == 1


def test_stale_work_folder_is_discarded_and_leftovers_of_a_crash_replaced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = square_scene(tmp_path, 70, 60, slice(5, 20), slice(10, 30))
    out = tmp_path / "out"
    paths = output_paths(out, spec.id)
    predict_scenes([spec], threshold_model(), out, options=opts(probabilities=True))
    expected = read(paths["classes"])
    # A crash after the sidecar and probabilities were renamed, before the classes were:
    paths["classes"].unlink()
    paths["work"].mkdir()
    (paths["work"] / "state.json").write_text(json.dumps({"key": "other options"}))
    (paths["work"] / "b_0_0").mkdir()  # a block of another configuration: must not be used
    with caplog.at_level(logging.WARNING, logger="geoseg.predict"):
        (rep,) = predict_scenes([spec], threshold_model(), out, options=opts(probabilities=True))
    assert any("starting afresh" in r.getMessage() for r in caplog.records)
    assert rep.blocks_resumed == 0
    assert np.array_equal(read(paths["classes"]), expected)
    assert not paths["work"].exists()


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="blend"):
        PredictOptions(blend="gauss")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="overlap"):
        PredictOptions(tile_size=64, overlap=64)


# -- outputs -------------------------------------------------------------------------------------


def test_outputs_are_cogs_with_provenance_and_a_sidecar(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 140, 120)
    model = three_conv_model()
    (rep,) = predict_scenes(
        [spec], model, tmp_path / "out", options=opts(probabilities=True, block_size=64)
    )
    assert rep.probabilities is not None
    for p in (rep.classes, rep.probabilities):
        ok, errors, _ = cog_validate(str(p))
        assert ok and not errors
    with rasterio.open(rep.classes) as ds:
        tags = ds.tags()
        assert tags["GEOSEG_MODEL_SHA256"] == model.sha256
        assert json.loads(tags["GEOSEG_SCHEMA"]) == POTSDAM.to_dict()
        assert json.loads(tags["GEOSEG_OPTIONS"])["tile_size"] == 64
        assert tags["GEOSEG_VERSION"]
        assert ds.colormap(1)[1] == (0, 0, 255, 255)
    assert "building" in Path(str(rep.classes) + ".aux.xml").read_text()
    with rasterio.open(rep.probabilities) as ds:
        assert ds.descriptions == POTSDAM.classes
    side = json.loads(rep.sidecar.read_text())
    assert side["model"]["sha256"] == model.sha256
    assert side["tiles"]["planned"] == side["tiles"]["computed"] == rep.tiles
    assert side["blocks"]["total"] == rep.blocks > 1
    assert side["options"]["block_size"] == 64
    assert set(side["timings"]) >= {"read_s", "model_wait_s", "blend_s", "wall_s"}
    assert not output_paths(tmp_path / "out", spec.id)["work"].exists()


def save_tiny_checkpoint(path: Path, arch: str = "fcn_resnet18") -> Path:
    torch.manual_seed(0)
    ckpt = Checkpoint.untrained(
        arch,
        bands=RGB,
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
    )
    return save_checkpoint(ckpt, path)


def test_checkpoint_path_model_and_its_hash(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    spec = random_scene(tmp_path, 70, 90)
    (rep,) = predict_scenes([spec], ckpt, tmp_path / "out", options=opts(overlap=16))
    with rasterio.open(rep.classes) as ds:
        assert ds.tags()["GEOSEG_MODEL_SHA256"] == file_sha256(ckpt)
        assert set(np.unique(ds.read())) <= set(range(6))


# -- real data --------------------------------------------------------------------------------


def test_real_landsat_collar_is_nodata_and_classes_elsewhere(tmp_path: Path) -> None:
    src = real_data("rasterio_landsat7_rgb", "RGB.byte.tif")
    with rasterio.open(src) as ds:
        img = ds.read().astype(np.float32)
        mask = ds.dataset_mask() > 0
        res = ds.res[0]
    # Brightness classes (dark / medium / bright) from the valid pixels' terciles.
    bright = img.mean(axis=0)
    t1, t2 = np.quantile(bright[mask], [1 / 3, 2 / 3])
    labels = np.digitize(bright, [t1, t2])
    mean = tuple(float(v) for v in img[:, mask].mean(axis=1))
    std = tuple(float(v) for v in img[:, mask].std(axis=1))
    x = torch.from_numpy(
        ((img[:, mask] - np.array(mean)[:, None]) / np.array(std)[:, None]).T
    ).float()
    y = torch.from_numpy(labels[mask]).long()
    torch.manual_seed(0)
    net = nn.Conv2d(3, 3, 1)
    optim = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(300):
        idx = torch.randint(0, len(y), (4096,))
        logits = net(x[idx][:, :, None, None])[:, :, 0, 0]
        loss = nn.functional.cross_entropy(logits, y[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
    schema = ClassSchema(
        "brightness", ("dark", "medium", "bright"), ((0, 0, 0), (128, 128, 128), (255, 255, 255))
    )
    model = PredictModel(
        module=net, bands=RGB, mean=mean, std=std, schema=schema, tile_size=256, gsd=res, name="b"
    )
    spec = SceneSpec(id="landsat", image=src)
    (rep,) = predict_scenes(
        [spec], model, tmp_path / "out", options=opts(tile_size=256, overlap=64)
    )
    cls = read(rep.classes)[0]
    assert np.array_equal(cls == IGNORE, ~mask)  # nodata exactly on the collar
    assert set(np.unique(cls[mask])) == {0, 1, 2}
    assert (cls[mask] == labels[mask]).mean() > 0.9


# -- the model runner ------------------------------------------------------------------------------


class Recording(nn.Module):
    """Per-pixel logits from the bands (exact in any batch), recording each batch's size."""

    def __init__(self, fail_on_call: int | None = None, gate: Any = None) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.fail_on_call = fail_on_call
        self.gate = gate  # the first call waits for it: requests queue up meanwhile

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        if self.gate is not None:
            assert self.gate.wait(timeout=30)
        if self.fail_on_call is not None and len(self.sizes) == self.fail_on_call:
            raise RuntimeError("boom in the model")
        return torch.cat([x[:, :1], -x[:, :1], x[:, 1:2] * 0.5], dim=1)


def recording_model(module: nn.Module) -> PredictModel:
    three = ClassSchema("three", ("a", "b", "c"), ((0, 0, 0), (9, 9, 9), (99, 99, 99)))
    return PredictModel(
        module=module, bands=RGB, mean=(0.0,) * 3, std=(1.0,) * 3, schema=three,
        tile_size=8, gsd=0.05, name="recording",
    )  # fmt: skip


def test_runner_serves_concurrent_requests_in_full_batches_with_exact_results() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from geoseg.blend import quantize_probs
    from geoseg.predict import _Runner

    module = Recording()
    runner = _Runner(
        recording_model(module), device="cpu", precision="fp32", batch_size=4, tta="none"
    )
    rng = np.random.default_rng(0)
    requests = [rng.normal(size=(n, 3, 8, 8)).astype(np.float32) for n in (1, 7, 3, 4, 2, 9)]
    try:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda t: runner.submit(t).result(timeout=30), requests))
    finally:
        runner.close()
    assert set(module.sizes) == {4}, "every model call takes exactly one full batch"
    assert len(module.sizes) >= -(-sum(len(r) for r in requests) // 4)
    for tiles, got in zip(requests, results, strict=True):
        x = torch.from_numpy(tiles)
        logits = torch.cat([x[:, :1], -x[:, :1], x[:, 1:2] * 0.5], dim=1)
        want = quantize_probs(torch.softmax(logits, dim=1).numpy())
        assert got.dtype == np.uint16 and got.shape == (len(tiles), 3, 8, 8)
        assert np.abs(got.astype(np.int32) - want).max() <= 1


@pytest.mark.parametrize(
    ("fail_on_call", "expected"),
    [
        # batch 2 = last tile of request 1 + first of request 2: both fail, 3 is served
        (2, ["failed", "failed", "ok"]),
        # batch 3 (request 2 only) fails while batch 2 (request 1's last tile) is in flight
        (3, ["ok", "failed", "ok"]),
    ],
)
def test_runner_hands_a_model_error_to_every_waiting_request(
    fail_on_call: int, expected: list[str]
) -> None:
    from geoseg.predict import _Runner

    gate = threading.Event()
    runner = _Runner(
        recording_model(Recording(fail_on_call=fail_on_call, gate=gate)),
        device="cpu",
        precision="fp32",
        batch_size=2,
        tta="none",
    )
    try:
        # Distinct arrays: requests are found by identity, never by comparing their tiles.
        futures = [runner.submit(np.full((3, 3, 8, 8), i, np.float32)) for i in range(3)]
        gate.set()
        outcomes = []
        for f in futures:
            try:
                f.result(timeout=30)
                outcomes.append("ok")
            except RuntimeError as exc:
                assert "boom in the model" in str(exc)
                outcomes.append("failed")
    finally:
        runner.close()
    assert outcomes == expected


def test_a_broken_runner_fails_waiting_and_later_requests_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from geoseg.predict import _Runner

    def broken(self: object, *args: object) -> None:
        raise RuntimeError("runner bug")

    monkeypatch.setattr(_Runner, "_deliver", broken)  # a fault outside the model
    runner = _Runner(
        recording_model(Recording()), device="cpu", precision="fp32", batch_size=2, tta="none"
    )
    try:
        first = runner.submit(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(RuntimeError, match="runner bug"):
            first.result(timeout=30)
        later = runner.submit(np.zeros((1, 3, 8, 8), np.float32))
        with pytest.raises(RuntimeError, match="runner bug"):
            later.result(timeout=30)
    finally:
        runner.close()


def test_bf16_precision_on_the_cpu_predicts_like_fp32(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 120, 150, seed=4)
    model = three_conv_model()
    reps = {
        p: predict_scenes(
            [spec], model, tmp_path / p, options=opts(precision=p, probabilities=True)
        )[0]
        for p in ("fp32", "bf16")
    }
    side = json.loads(reps["bf16"].sidecar.read_text())
    assert side["options"]["precision"] == "bf16"
    probs = {p: read(r.probabilities).astype(np.int32) for p, r in reps.items()}  # type: ignore[arg-type]
    diff = np.abs(probs["bf16"] - probs["fp32"])
    assert 0 < diff.max() <= 8, "bf16 really ran, and stays within 3 % of fp32"
    agree = read(reps["bf16"].classes) == read(reps["fp32"].classes)
    assert agree.mean() > 0.95


# -- resume after SIGKILL -------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import torch
    from torch import nn
    from geoseg.predict import PredictModel, PredictOptions, predict_scenes
    from geoseg.scene import SceneSpec
    from geoseg.schema import POTSDAM

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.conv = nn.Conv2d(3, 6, 3, padding=1)
        def forward(self, x):
            time.sleep(float(os.environ.get("SLOW", "0")))
            return self.conv(x)

    model = PredictModel(module=Slow(), bands=("red", "green", "blue"), mean=(128.0,) * 3,
                         std=(64.0,) * 3, schema=POTSDAM, tile_size=32, gsd=0.05, name="slow")
    spec = SceneSpec(id="scene", image=Path(sys.argv[1]))
    options = PredictOptions(tile_size=32, overlap=8, batch_size=4, block_size=48, device="cpu",
                             probabilities=True, workers=1)
    for out in sys.argv[2:]:
        predict_scenes([spec], model, out, options=options)
    """
)


def test_sigkill_then_resume_redoes_nothing_and_gives_the_same_raster(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 200, 210, seed=9)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "SLOW": "0.15"}
    killed = tmp_path / "killed"
    work = output_paths(killed, "scene")["work"]
    proc = subprocess.Popen([sys.executable, str(script), str(spec.image), str(killed)], env=env)
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("b_*"))) < 3:
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not output_paths(killed, "scene")["classes"].exists()  # nothing final appeared
    done_before = len(list(work.glob("b_*")))
    fresh = tmp_path / "fresh"
    env["SLOW"] = "0"
    subprocess.run(
        [sys.executable, str(script), str(spec.image), str(killed), str(fresh)], env=env, check=True
    )
    side = json.loads(output_paths(killed, "scene")["sidecar"].read_text())
    assert side["blocks"]["resumed"] >= done_before >= 3
    assert side["tiles"]["computed"] < side["tiles"]["planned"]
    for name in ("classes", "probs"):
        a = read(output_paths(killed, "scene")[name])
        b = read(output_paths(fresh, "scene")[name])
        assert np.array_equal(a, b)
    assert not work.exists()


# -- Dask cluster -------------------------------------------------------------------------------


@pytest.mark.slow  # ~25 s: two worker processes start, import torch and load the model
def test_local_cluster_with_two_worker_processes_matches_local_run(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    specs = [random_scene(tmp_path, 130, 150, seed=s) for s in (1, 2)]
    options = opts(block_size=48, probabilities=True)
    local = predict_scenes(specs, ckpt, tmp_path / "local", options=options)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as client,
    ):
        # Dask starts workers with OMP_NUM_THREADS=1, and the last bits of a convolution
        # depend on torch's thread count: give the workers this process's count.
        client.run(torch.set_num_threads, torch.get_num_threads())
        # As `--scheduler tcp://...` does: predict_scenes connects by address.
        remote = predict_scenes(
            specs, ckpt, tmp_path / "cluster", options=options, client=cluster.scheduler_address
        )

        def runners() -> list[str]:
            from geoseg import predict

            return [key[0] for key in predict._RUNNERS]

        # Each worker process loaded the model once, into its own runner.
        loaded = client.run(runners)
        assert list(loaded.values()) == [[file_sha256(ckpt)]] * 2
    for a, b in zip(local, remote, strict=True):
        assert a.probabilities is not None and b.probabilities is not None
        assert np.array_equal(read(a.classes), read(b.classes))
        assert np.array_equal(read(a.probabilities), read(b.probabilities))
