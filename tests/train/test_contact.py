"""Training the building-contact output: its loss, counts, weight, and a tiny end-to-end run."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
import torch.nn.functional as F  # noqa: N812

from geoseg.checkpoint import load_checkpoint
from geoseg.errors import InputError
from geoseg.losses import build_loss
from geoseg.tiles import TileOptions, read_chip_targets, read_store, tile_scenes
from geoseg.train import TrainConfig, train
from geoseg.train._contact import (
    MAX_POS_WEIGHT,
    ContactLoss,
    contact_counts,
    contact_metrics,
    contact_pos_weight,
)
from geoseg.train._resume import check_resumable
from tests.contact_helpers import make_contact_scenes
from tests.train_helpers import TINY, rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def contact_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("contact_train")
    specs, fp = make_contact_scenes(d / "scenes", n=3, size=96)
    opts = TileOptions(size=48, overlap=0, min_valid=0.2, footprints=fp, contact_width=0.1)
    tile_scenes(specs, d / "store", options=opts)
    return d / "store"


def test_contact_loss_adds_a_weighted_bce_that_ignores_255() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5, requires_grad=True)
    classes = torch.randint(0, 3, (2, 5, 5))
    contact = torch.randint(0, 2, (2, 5, 5))
    contact[0, :2] = 255
    target = torch.stack([classes, contact], dim=1)
    base = build_loss("ce", num_classes=3)
    loss = ContactLoss(base, num_classes=3, weight=0.5, pos_weight=3.0)(logits, target)
    keep = contact != 255
    bce = F.binary_cross_entropy_with_logits(
        logits[:, 3][keep], contact[keep].float(), pos_weight=torch.tensor(3.0)
    )
    want = base(logits[:, :3], classes) + 0.5 * bce
    assert torch.allclose(loss, want)
    loss.backward()
    assert logits.grad is not None
    assert (logits.grad[:, 3][~keep] == 0).all() and (logits.grad[:, 3][keep] != 0).all()
    # no contact pixel at all: no contact term, no NaN
    empty = torch.stack([classes, torch.full_like(contact, 255)], dim=1)
    only = ContactLoss(base, num_classes=3, weight=1.0, pos_weight=3.0)(logits, empty)
    assert torch.allclose(only, base(logits[:, :3], classes))


def test_contact_counts_and_metrics() -> None:
    logit = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0]])
    truth = torch.tensor([[1, 1, 0, 0, 255]])
    assert contact_counts(logit, truth).tolist() == [1, 1, 1]  # tp, fp, fn; 255 not counted
    m = contact_metrics([1, 1, 1])
    assert m["val_contact_f1"] == pytest.approx(0.5)
    assert m["val_contact_iou"] == pytest.approx(1 / 3)
    assert contact_metrics([0, 0, 0]) == {"val_contact_f1": None, "val_contact_iou": None}


def test_pos_weight_from_the_index() -> None:
    index = pd.DataFrame(
        {
            "scene": ["a", "a", "b"],
            "contact": [10, 0, 5000],
            "valid_fraction": [1.0, 0.5, 1.0],
            "width": [100, 100, 100],
            "height": [100, 100, 100],
        }
    )
    # scene a: 10 positives of 15000 valid pixels -> sqrt(1499) > the cap
    assert contact_pos_weight(index, ["a"]) == MAX_POS_WEIGHT
    assert contact_pos_weight(index, ["b"]) == 1.0  # half the pixels: sqrt(1) = 1
    index.loc[2, "contact"] = 1000
    assert contact_pos_weight(index, ["b"]) == pytest.approx(3.0)
    assert contact_pos_weight(index.assign(contact=[0, -1, 0]), ["a", "b"]) == 1.0


def test_tiny_run_trains_a_contact_output_that_the_checkpoint_records(
    contact_store: Path, tmp_path: Path
) -> None:
    config = replace(TINY, val_scenes=("s2",), epochs=2, chip_size=32, contact_weight=2.0)
    report = train(contact_store, tmp_path / "m.pt", config=config)
    ckpt = load_checkpoint(report.checkpoint)
    assert ckpt.extra_outputs == ("contact",)
    assert ckpt.arch["args"]["num_classes"] == 7 and ckpt.num_classes == 6
    assert ckpt.num_outputs == 7
    assert 1.0 <= ckpt.metrics["contact_pos_weight"] <= MAX_POS_WEIGHT
    assert ckpt.config["contact_weight"] == 2.0
    log = rows(report.log)
    assert {"val_miou", "val_contact_f1", "val_contact_iou"} <= set(log[0])
    assert all(math.isfinite(float(r["train_loss"])) for r in log)
    model = ckpt.build_model()
    with torch.no_grad():
        out = model(torch.zeros(1, len(ckpt.bands), 32, 32))
    assert out.shape == (1, 7, 32, 32)
    # the payload says so (format 2), and an older checkpoint (no field) has no extra output
    payload = torch.load(report.checkpoint, weights_only=True)
    assert payload["format_version"] == 2 and payload["extra_outputs"] == ["contact"]


def test_contact_weight_zero_trains_a_plain_model(contact_store: Path, tmp_path: Path) -> None:
    config = replace(TINY, val_scenes=("s2",), epochs=1, chip_size=32, contact_weight=0.0)
    report = train(contact_store, tmp_path / "m.pt", config=config)
    ckpt = load_checkpoint(report.checkpoint)
    assert ckpt.extra_outputs == () and ckpt.arch["args"]["num_classes"] == 6
    assert "val_contact_f1" not in rows(report.log)[0]
    payload = torch.load(report.checkpoint, weights_only=True)
    assert payload["format_version"] == 1 and "extra_outputs" not in payload


def test_a_store_with_chips_missing_the_contact_target_is_refused(
    contact_store: Path, tmp_path: Path
) -> None:
    import shutil

    store = tmp_path / "store"
    shutil.copytree(contact_store, store)
    _, index = read_store(store)
    index.loc[0, "contact"] = -1  # as after a partial upgrade
    index.to_file(store / "index.gpkg", layer="chips", engine="pyogrio")
    with pytest.raises(InputError, match="1 chip.*no contact target.*--footprints"):
        train(store, tmp_path / "m.pt", config=replace(TINY, val_scenes=("s2",)))


def test_resume_state_without_contact_weight_resumes() -> None:
    saved = TINY.to_dict()
    del saved["contact_weight"]  # a run saved before the option existed
    check_resumable(saved, TINY, Path("x.resume"))
    with pytest.raises(Exception, match="contact_weight"):
        check_resumable(saved, replace(TINY, contact_weight=0.5), Path("x.resume"))


def test_contact_weight_must_not_be_negative() -> None:
    from geoseg.errors import ConfigError

    with pytest.raises(ConfigError, match="contact_weight"):
        TrainConfig(contact_weight=-1.0)
    assert np.isfinite(TrainConfig().contact_weight)


@pytest.mark.slow
def test_contact_is_learnt_and_predicted_where_houses_meet(
    contact_store: Path, tmp_path: Path
) -> None:
    from geoseg.predict import PredictOptions, predict_scenes

    config = replace(TINY, val_scenes=("s2",), epochs=15, chip_size=None, lr=3e-3)
    report = train(contact_store, tmp_path / "m.pt", config=config)
    best = max(float(r["val_contact_f1"] or 0) for r in rows(report.log))
    assert best > 0.3  # all-contact would score about 0.1 on these scenes
    # the validation scene, predicted whole: high contact on the true band, low elsewhere
    specs, _ = make_contact_scenes(tmp_path / "scenes", n=3, size=96)  # the same scenes
    (pred,) = predict_scenes(
        [specs[2]],
        report.checkpoint,
        tmp_path / "pred",
        options=PredictOptions(tile_size=48, overlap=12, device="cpu", workers=1),
    )
    assert pred.contact is not None
    _, index = read_store(contact_store)
    truth = np.zeros((96, 96), np.uint8)
    for row in index[index["scene"] == "s2"].itertuples():
        chip = read_chip_targets(contact_store / row.path)
        assert chip.contact is not None
        truth[row.row_off : row.row_off + 48, row.col_off : row.col_off + 48] = chip.contact
    with rasterio.open(pred.contact) as ds:
        prob = ds.read(1).astype(float) / 255
    assert prob[truth == 1].mean() > 2 * prob[truth == 0].mean()
