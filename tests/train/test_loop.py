from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from geoseg.checkpoint import load_checkpoint
from geoseg.data import ChipDataset, band_stats
from geoseg.models import build_model
from geoseg.tiles import read_store
from geoseg.train import TrainConfig, TrainEvent, log_path_for, train
from tests.train_helpers import TINY, rows, same_weights, without_timing

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_falls_and_outputs_are_written(store: Path, tmp_path: Path) -> None:
    events: list[TrainEvent] = []
    out = tmp_path / "model.pt"
    rep = train(store, out, config=replace(TINY, epochs=4), progress=events.append)
    log = rows(tmp_path / "model.metrics.csv")
    assert rep.log == log_path_for(out) == tmp_path / "model.metrics.csv"
    assert [int(r["epoch"]) for r in log] == [1, 2, 3, 4]
    losses = [float(r["train_loss"]) for r in log]
    assert losses[-1] < 0.75 * losses[0], losses
    for r in log:
        assert 0 <= float(r["val_miou"]) <= 1 and 0 <= float(r["val_oa"]) <= 1
        assert float(r["chips_per_s"]) > 0 and 0 <= float(r["data_wait_fraction"]) < 1
        assert {"iou_building", "iou_car", "val_loss", "lr", "seconds"} <= r.keys()
    # the checkpoint is the best epoch by validation mIoU, with that epoch's metrics
    best = max(log, key=lambda r: float(r["val_miou"]))
    ckpt = load_checkpoint(out)
    assert ckpt.metrics["epoch"] == int(best["epoch"]) == rep.best_epoch
    assert ckpt.metrics["val_miou"] == pytest.approx(float(best["val_miou"]), rel=1e-12)
    assert ckpt.metrics["val_scenes"] == ["s2"] and ckpt.metrics["train_scenes"] == ["s0", "s1"]
    assert ckpt.bands == ("red", "green", "blue", "nir")
    assert ckpt.tile_size == 32 and ckpt.gsd == pytest.approx(0.05)
    assert TrainConfig.from_dict(ckpt.config) == replace(TINY, epochs=4)
    # normalisation = statistics of the training chips only
    _, index = read_store(store)
    train_paths = [store / p for p in sorted(index[index.scene != "s2"].path)]
    stats = band_stats(ChipDataset(train_paths, num_classes=6))
    assert ckpt.mean == pytest.approx(stats.mean) and ckpt.std == pytest.approx(stats.std)
    # progress: one event per step and per epoch
    assert [e.kind for e in events].count("step") == 4 * 2
    assert [e.kind for e in events].count("epoch") == 4
    assert events[-1].val_miou == pytest.approx(float(log[-1]["val_miou"]))


def test_same_seed_same_run_whatever_the_workers(store: Path, tmp_path: Path) -> None:
    cfg = TINY
    a = train(store, tmp_path / "a.pt", config=cfg)
    b = train(store, tmp_path / "b.pt", config=replace(cfg, workers=1))
    wa, wb = load_checkpoint(a.checkpoint).state_dict, load_checkpoint(b.checkpoint).state_dict
    assert same_weights(wa, wb)
    assert without_timing(rows(a.log)) == without_timing(rows(b.log))
    # and the weights did move from their (seeded) initialisation
    torch.manual_seed(cfg.seed)
    init = build_model("fcn_resnet18", in_channels=4, num_classes=6).state_dict()
    assert not torch.equal(init["score8.weight"], wa["score8.weight"])


def test_weighted_loss_and_overwrite(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    cfg = replace(TINY, epochs=1, loss="wce+dice", class_weights="median_frequency")
    train(store, out, config=cfg)
    first = load_checkpoint(out)
    rep = train(store, out, config=replace(cfg, schedule="cosine", seed=2), overwrite=True)
    assert len(rows(rep.log)) == 1
    assert load_checkpoint(out).config["schedule"] == "cosine"
    assert not same_weights(first.state_dict, load_checkpoint(out).state_dict)
