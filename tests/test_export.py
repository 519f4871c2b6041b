"""geoseg.export: ONNX models with the normalisation inside and QGIS Deepness's metadata.

The stated tolerance: onnxruntime's probabilities equal the predict path's (normalise, then
the model, then softmax) within ``TOLERANCE`` = 1e-3 absolute, on random uint8-valued chips,
on a synthetic scene's chip (with its float nDSM) and on a real Landsat chip.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geoseg.export import DEEPNESS_KEYS, TOLERANCE, card_path, export_onnx
from geoseg.options import ExportOptions
from geoseg.predict._device import model_probs, normalise
from geoseg.schema import POTSDAM
from tests.conftest import real_data

ort = pytest.importorskip("onnxruntime", reason="geoseg[export] (onnxruntime) not installed")
pytest.importorskip("onnx", reason="geoseg[export] (onnx) not installed")

BANDS = ("red", "green", "blue", "nir", "ndsm")
MEAN = (110.0, 105.0, 100.0, 120.0, 2.0)
STD = (50.0, 45.0, 40.0, 55.0, 3.0)
TILE = 64


def make_ckpt(
    path: Path,
    arch: str,
    *,
    bands: tuple[str, ...] = BANDS,
    mean: tuple[float, ...] = MEAN,
    std: tuple[float, ...] = STD,
    extra_outputs: tuple[str, ...] = (),
) -> Path:
    torch.manual_seed(7)
    ckpt = Checkpoint.untrained(
        arch,
        bands=bands,
        mean=mean,
        std=std,
        schema=POTSDAM,
        tile_size=TILE,
        gsd=0.05,
        extra_outputs=extra_outputs,
    )
    return save_checkpoint(ckpt, path)


def predict_path_probs(ckpt_path: Path, raw: np.ndarray) -> np.ndarray:
    """What geoseg predict computes for raw band values (N, bands, H, W): the reference."""
    ckpt = load_checkpoint(ckpt_path)
    module = ckpt.build_model()
    mean = torch.tensor(ckpt.mean, dtype=torch.float32)
    std = torch.tensor(ckpt.std, dtype=torch.float32)
    sources = [("image", i) for i in range(len(ckpt.bands))]
    with torch.inference_mode():
        xs = [
            normalise(
                torch.from_numpy(r.astype(np.float32)),
                torch.zeros((0, *r.shape[1:])),
                None,
                sources,
                mean,
                std,
            )
            for r in raw
        ]
        probs = model_probs(
            module,
            torch.stack(xs),
            tta="none",
            num_classes=ckpt.num_classes,
            extra=len(ckpt.extra_outputs),
        )
    return probs.numpy()


def run_onnx(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})


def uint8_chips(n: int, bands: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, bands, TILE, TILE)).astype(np.float32)


@pytest.fixture(scope="module", params=["fcn_resnet18", "unet"])
def exported(request, tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, onnx) of an untrained model, exported for Deepness (input scale 255)."""
    root = tmp_path_factory.mktemp(request.param)
    ckpt = make_ckpt(root / "model.pt", request.param)
    report = export_onnx(ckpt, root / "model.onnx")
    assert report.max_abs_diff <= TOLERANCE
    return ckpt, report.onnx


def test_onnx_equals_torch_on_random_uint8_chips(exported):
    ckpt, onnx_path = exported
    raw = uint8_chips(3, len(BANDS))  # a batch of 3: the batch axis is dynamic
    (got,) = run_onnx(onnx_path, raw / 255.0)
    want = predict_path_probs(ckpt, raw)
    assert got.shape == want.shape == (3, len(POTSDAM), TILE, TILE)
    assert np.abs(got - want).max() <= TOLERANCE
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # probabilities
    # the normalisation really is inside: raw values fed unscaled give other probabilities
    (wrong,) = run_onnx(onnx_path, raw)
    assert np.abs(wrong - want).max() > 1e-2


def test_onnx_equals_torch_on_a_synthetic_scene_chip(exported):
    from geoseg.synth import make_scene, scene_transform

    ckpt, onnx_path = exported
    scene = make_scene(size=128, seed=3, transform=scene_transform(0, 128))
    stack = np.concatenate([scene.image.astype(np.float32), scene.ndsm[None]], axis=0)
    raw = stack[None, :, 32 : 32 + TILE, 16 : 16 + TILE]
    (got,) = run_onnx(onnx_path, raw / 255.0)
    assert np.abs(got - predict_path_probs(ckpt, raw)).max() <= TOLERANCE


def test_deepness_preprocessing_reaches_the_same_probabilities(exported):
    """Deepness: uint8 (N, H, W, C) / 255, then (x - mean) / std from the metadata, NCHW."""
    ckpt, onnx_path = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean = np.array(json.loads(meta["standardization_mean"]), dtype=np.float32)
    std = np.array(json.loads(meta["standardization_std"]), dtype=np.float32)
    tiles = np.moveaxis(uint8_chips(2, len(BANDS), seed=5).astype(np.uint8), 1, -1)
    x = np.float32(tiles * 1.0 / 255.0)
    x = np.transpose((x - mean) / std, (0, 3, 1, 2))
    (got,) = session.run(None, {session.get_inputs()[0].name: x})
    want = predict_path_probs(ckpt, np.moveaxis(tiles, -1, 1).astype(np.float32))
    assert np.abs(got - want).max() <= TOLERANCE


def test_deepness_metadata_keys_and_values(exported):
    _, onnx_path = exported
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert set(DEEPNESS_KEYS) <= set(meta)
    values = {k: json.loads(meta[k]) for k in DEEPNESS_KEYS}  # Deepness json.loads each
    assert values["model_type"] == "Segmentor"
    names = values["class_names"]
    assert [names[k] for k in sorted(names, key=int)] == list(POTSDAM.classes)
    assert values["resolution"] == pytest.approx(5.0)  # cm/px of a 0.05 m GSD
    assert values["tile_size"] == values["tiles_size"] == TILE
    assert values["tiles_overlap"] == 25  # a quarter of the tile, in percent
    assert values["standardization_mean"] == [0.0] * len(BANDS)
    assert values["standardization_std"] == [1.0] * len(BANDS)
    assert values["seg_thresh"] == 0.0 and values["seg_small_segment"] == 0
    # fixed square input (Deepness takes its tile size from it), dynamic batch, static output
    (inp,) = session.get_inputs()
    assert inp.shape[1:] == [len(BANDS), TILE, TILE] and isinstance(inp.shape[0], str)
    assert [o.shape[1:] for o in session.get_outputs()] == [[len(POTSDAM), TILE, TILE]]


def test_card_lists_bands_range_gsd_schema(exported):
    import hashlib

    _, onnx_path = exported
    card = json.loads(card_path(onnx_path).read_text())
    assert card_path(onnx_path) == onnx_path.with_suffix(".json")
    assert card["format"] == "geoseg-onnx-card"
    assert card["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    bands = card["input"]["bands"]
    assert [b["name"] for b in bands] == list(BANDS)
    assert [b["mean"] for b in bands] == list(MEAN) and [b["std"] for b in bands] == list(STD)
    assert card["input"]["input_scale"] == 255.0
    assert card["input"]["pixel_dtype"] == "uint8" and card["input"]["pixel_range"] == [0, 255]
    assert card["gsd_m"] == 0.05 and card["resolution_cm_per_px"] == pytest.approx(5.0)
    assert card["schema"] == POTSDAM.to_dict()
    assert card["outputs"][0]["classes"] == list(POTSDAM.classes)
    assert card["verification"]["max_abs_diff_probs"] <= card["verification"]["tolerance"]
    assert any("ndsm" in note for note in card["notes"])


def test_input_scale_one_takes_raw_values_of_a_real_chip(tmp_path):
    """A Landsat RGB chip (real data), raw uint8 values fed as they are."""
    import rasterio
    from rasterio.windows import Window

    path = real_data("rasterio_landsat7_rgb", "RGB.byte.tif")
    with rasterio.open(path) as src:
        chip = src.read(window=Window(300, 300, TILE, TILE)).astype(np.float32)
    assert chip.std() > 5  # a real, textured chip, not nodata
    bands = ("red", "green", "blue")
    ckpt = make_ckpt(tmp_path / "rgb.pt", "fcn_resnet18", bands=bands, mean=MEAN[:3], std=STD[:3])
    opts = ExportOptions(input_scale=1.0, tile_size=TILE, overlap=8)
    report = export_onnx(ckpt, tmp_path / "rgb.onnx", options=opts)
    (got,) = run_onnx(report.onnx, chip[None])
    assert np.abs(got - predict_path_probs(ckpt, chip[None])).max() <= TOLERANCE
    card = json.loads(report.card.read_text())
    assert card["input"]["input_scale"] == 1.0 and card["input"]["pixel_range"] is None
    assert card["overlap_px"] == 8 and card["deepness_metadata"]["tiles_overlap"] == 12


def test_contact_output_left_out_or_exported_as_second_output(tmp_path):
    ckpt = make_ckpt(tmp_path / "c.pt", "fcn_resnet18", extra_outputs=("contact",))
    raw = uint8_chips(2, len(BANDS), seed=9)
    want = predict_path_probs(ckpt, raw)  # (N, classes + 1): softmax, then the sigmoid

    plain = export_onnx(ckpt, tmp_path / "plain.onnx")
    assert plain.outputs == ("probs",)
    (probs,) = run_onnx(plain.onnx, raw / 255.0)
    assert np.abs(probs - want[:, : len(POTSDAM)]).max() <= TOLERANCE
    card = json.loads(plain.card.read_text())
    assert card["extra_outputs_left_out"] == ["contact"]

    both = export_onnx(ckpt, tmp_path / "both.onnx", options=ExportOptions(extra_outputs=True))
    assert both.outputs == ("probs", "contact")
    probs, contact = run_onnx(both.onnx, raw / 255.0)
    assert contact.shape == (2, 1, TILE, TILE)
    assert np.abs(probs - want[:, : len(POTSDAM)]).max() <= TOLERANCE
    assert np.abs(contact - want[:, len(POTSDAM) :]).max() <= TOLERANCE
    session = ort.InferenceSession(str(both.onnx), providers=["CPUExecutionProvider"])
    names = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
    # Deepness's multi-output form: one mapping per output
    assert names == [{str(i): n for i, n in enumerate(POTSDAM.classes)}, {"0": "contact"}]
