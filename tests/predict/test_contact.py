"""A model's contact output through prediction: blended like the classes, one more COG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoseg.blend import Accumulator, decode, decode_extra, quantize_probs
from geoseg.blocks import Rect
from geoseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geoseg.errors import CheckpointError
from geoseg.predict import PredictModel, output_paths, predict_scenes
from geoseg.predict._device import model_probs
from geoseg.schema import POTSDAM
from tests.predict.helpers import RGB, ThreeConv, opts, random_scene, read


class FirstChannels(nn.Module):
    """The first ``n`` output channels of a module (its class logits, without the extras)."""

    def __init__(self, module: nn.Module, n: int) -> None:
        super().__init__()
        self.module, self.n = module, n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[:, : self.n]


def contact_model() -> PredictModel:
    return PredictModel(
        module=ThreeConv(ncls=7, seed=3),
        bands=RGB,
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
        name="threeconv-contact",
        extra_outputs=("contact",),
    )


def test_model_probs_softmax_on_classes_sigmoid_on_extras() -> None:
    torch.manual_seed(0)
    module = ThreeConv(ncls=7)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        p = model_probs(module, x, tta="d4", num_classes=6, extra=1)
        logits = module(x)
    assert p.shape == (2, 7, 16, 16)
    assert torch.allclose(p[:, :6].sum(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    # the model is not equivariant, but the identity view is one of eight: check one view
    plain = model_probs(module, x, tta="none", num_classes=6, extra=1)
    assert torch.allclose(plain[:, 6], torch.sigmoid(logits[:, 6]), atol=1e-6)
    assert torch.allclose(plain[:, :6], torch.softmax(logits[:, :6], dim=1), atol=1e-6)
    with pytest.raises(CheckpointError, match=r"expected \(N, 8, H, W\)"):
        model_probs(module, x, tta="none", num_classes=6, extra=2)


def test_decode_leaves_the_extra_channels_out_of_the_classes() -> None:
    rng = np.random.default_rng(0)
    probs = rng.random((4, 9, 11)).astype(np.float32)  # 3 classes and 1 extra
    probs[3] = 0.99  # an extra channel larger than every class: never the argmax
    acc = Accumulator(Rect(0, 0, 9, 11), 4)
    only = Accumulator(Rect(0, 0, 9, 11), 3)
    w = np.full((9, 11), 1000, np.int32)
    acc.add(quantize_probs(probs), w, Rect(0, 0, 9, 11))
    only.add(quantize_probs(probs[:3]), w, Rect(0, 0, 9, 11))
    valid = np.ones((9, 11), bool)
    valid[0, 0] = False
    classes, p = decode(acc.sums.numpy(), valid, probabilities=True, extra=1)
    want_classes, want_p = decode(only.sums.numpy(), valid, probabilities=True)
    assert np.array_equal(classes, want_classes) and np.array_equal(p, want_p)
    extra = decode_extra(acc.sums.numpy(), valid, extra=1)
    assert extra.shape == (1, 9, 11) and extra.dtype == np.uint8
    assert extra[0, 0, 0] == 0 and (extra[0][valid] == 252).all()  # round(255 * 0.99)


def test_contact_is_blended_seamlessly_and_written_on_the_input_grid(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 150, 170, seed=4, nodata=0)
    with rasterio.open(spec.image) as ds:
        img = ds.read()
    img[:, :20, :30] = 0  # a nodata corner
    with rasterio.open(spec.image, "r+") as ds:
        ds.write(img)
    model = contact_model()
    (many,) = predict_scenes(
        [spec], model, tmp_path / "many", options=opts(block_size=40, probabilities=True)
    )
    (one,) = predict_scenes([spec], model, tmp_path / "one", options=opts(block_size=100000))
    assert many.blocks > 4 and one.blocks == 1
    assert many.contact == output_paths(tmp_path / "many", spec.id)["contact"]
    assert many.contact is not None and one.contact is not None
    assert np.array_equal(read(many.contact), read(one.contact))
    assert np.array_equal(read(many.classes), read(one.classes))
    with rasterio.open(spec.image) as src, rasterio.open(many.contact) as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        assert ds.count == 1 and ds.dtypes == ("uint8",) and ds.nodata is None
        assert ds.descriptions == ("contact",)
        contact, mask = ds.read(1), ds.dataset_mask()
        assert ds.tags()["GEOSEG_MODEL"] == "threeconv-contact"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    nodata = (img == 0).all(axis=0)
    assert (mask[nodata] == 0).all() and (mask[~nodata] == 255).all()
    assert (contact[nodata] == 0).all() and len(np.unique(contact[~nodata])) > 20
    # the class map is that of the class channels alone (the contact is not a class)
    plain = PredictModel(
        module=FirstChannels(model.module, 6),
        bands=RGB,
        mean=model.mean,
        std=model.std,
        schema=POTSDAM,
        tile_size=64,
        gsd=0.05,
    )
    (alone,) = predict_scenes(
        [spec], plain, tmp_path / "alone", options=opts(block_size=40, probabilities=True)
    )
    assert (
        alone.contact is None and not output_paths(tmp_path / "alone", spec.id)["contact"].exists()
    )
    assert np.array_equal(read(alone.classes), read(many.classes))
    assert np.array_equal(read(alone.probabilities), read(many.probabilities))
    side = json.loads(many.sidecar.read_text())
    assert side["outputs"]["contact"] == f"{spec.id}_contact.tif"
    assert side["model"]["extra_outputs"] == ["contact"]


def test_contact_of_one_tile_is_the_sigmoid(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 64, 64, seed=2)
    model = contact_model()
    (rep,) = predict_scenes([spec], model, tmp_path / "out", options=opts(overlap=0))
    x = torch.from_numpy(read(spec.image).astype(np.float32))
    x = (x - torch.tensor(model.mean)[:, None, None]) / torch.tensor(model.std)[:, None, None]
    with torch.no_grad():
        p = torch.sigmoid(model.module(x[None])[0, 6]).numpy()
    assert rep.contact is not None
    got = read(rep.contact)[0].astype(int)
    assert np.abs(got - np.rint(p * 255)).max() <= 1


def test_an_interrupted_run_resumes_to_the_same_contact(tmp_path: Path) -> None:
    spec = random_scene(tmp_path, 160, 160, seed=8)
    model = contact_model()
    out = tmp_path / "out"

    def stop(done: int, total: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_scenes([spec], model, out, options=opts(block_size=48, workers=1), progress=stop)
    work = output_paths(out, spec.id)["work"]
    assert len(list(work.glob("b_*"))) >= 1
    (rep,) = predict_scenes([spec], model, out, options=opts(block_size=48, workers=1))
    assert rep.blocks_resumed >= 1
    (fresh,) = predict_scenes([spec], model, tmp_path / "fresh", options=opts(block_size=48))
    assert rep.contact is not None and fresh.contact is not None
    assert np.array_equal(read(rep.contact), read(fresh.contact))
    assert np.array_equal(read(rep.classes), read(fresh.classes))


def test_checkpoint_records_its_extra_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    kw = {
        "bands": RGB,
        "mean": (120.0, 110.0, 100.0),
        "std": (60.0, 50.0, 40.0),
        "schema": POTSDAM,
        "tile_size": 64,
        "gsd": 0.05,
    }
    ckpt = Checkpoint.untrained("fcn_resnet18", extra_outputs=("contact",), **kw)
    path = save_checkpoint(ckpt, tmp_path / "c.pt")
    back = load_checkpoint(path)
    assert back.extra_outputs == ("contact",) and back.num_outputs == 7
    assert back.arch["args"]["num_classes"] == 7
    ref = PredictModel.from_checkpoint(path)
    assert ref.extra_outputs == ("contact",)
    # an old checkpoint (no field) has none; a field that does not fit the weights is refused
    plain = save_checkpoint(Checkpoint.untrained("fcn_resnet18", **kw), tmp_path / "p.pt")
    assert load_checkpoint(plain).extra_outputs == ()
    payload = torch.load(plain, weights_only=True)
    assert payload["format_version"] == 1 and "extra_outputs" not in payload
    payload["extra_outputs"] = ["contact"]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="num_classes=6.*6 classes and 1 extra output"):
        load_checkpoint(tmp_path / "bad.pt")
    payload["extra_outputs"] = ["Contact!"]
    torch.save(payload, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match="extra output name 'Contact!'"):
        load_checkpoint(tmp_path / "bad2.pt")
    newer = torch.load(path, weights_only=True)
    newer["format_version"] = 3
    torch.save(newer, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="newer than this geoseg"):
        load_checkpoint(tmp_path / "newer.pt")


def test_an_existing_contact_raster_needs_overwrite(tmp_path: Path) -> None:
    from geoseg.errors import OutputExistsError

    spec = random_scene(tmp_path, 64, 64, seed=1)
    out = tmp_path / "out"
    output_paths(out, spec.id)["contact"].parent.mkdir(parents=True)
    output_paths(out, spec.id)["contact"].write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="_contact.tif"):
        predict_scenes([spec], contact_model(), out, options=opts())
    (rep,) = predict_scenes([spec], contact_model(), out, options=opts(overwrite=True))
    assert rep.contact is not None and read(rep.contact).shape == (1, 64, 64)
