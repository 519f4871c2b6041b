from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from geoseg.checkpoint import load_checkpoint
from geoseg.data import ChipDataset, band_stats
from geoseg.errors import CheckpointError, ConfigError, InputError, OutputExistsError
from geoseg.models import build_model
from geoseg.tiles import read_store
from geoseg.train import TrainConfig, TrainEvent, evaluate_chips, log_path_for, train
from tests.train_helpers import make_store

REPO = Path(__file__).resolve().parents[1]
TIMING = {"train_seconds", "val_seconds", "seconds", "chips_per_s", "data_wait_fraction"}

# Small and fast: 2 training scenes of 4 chips of 64 px, random 32 px crops, batches of 4
# -> 2 steps per epoch; validation on the 4 whole chips of scene s2.
TINY = TrainConfig(
    model="fcn_resnet18",
    chip_size=32,
    epochs=2,
    batch_size=4,
    lr=3e-3,
    val_scenes=("s2",),
    device="cpu",
    seed=0,
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(train_store: Path) -> Path:
    return train_store


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def without_timing(rs: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rs]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


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


def test_split_keeps_every_scene_on_one_side(store: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=1, val_scenes=None, val_fraction=0.34, seed=3)
    rep = train(store, tmp_path / "m.pt", config=cfg)
    assert len(rep.val_scenes) == 1 and set(rep.train_scenes).isdisjoint(rep.val_scenes)
    assert set(rep.train_scenes) | set(rep.val_scenes) == {"s0", "s1", "s2"}
    _, index = read_store(store)
    assert rep.val_chips == int(index.scene.isin(rep.val_scenes).sum())
    assert rep.train_chips == int(index.scene.isin(rep.train_scenes).sum())


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


class InterruptError(Exception):
    pass


def test_resume_ends_identical_to_an_uninterrupted_run(store: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=2)
    full = train(store, tmp_path / "full.pt", config=cfg)

    def stop_after_epoch_1(e: TrainEvent) -> None:
        if e.epoch == 2 and e.kind == "step":
            raise InterruptError  # dies in the middle of epoch 2

    out = tmp_path / "cut.pt"
    with pytest.raises(InterruptError):
        train(store, out, config=cfg, progress=stop_after_epoch_1)
    assert len(rows(log_path_for(out))) == 1
    with pytest.raises(OutputExistsError, match="--resume"):
        train(store, out, config=cfg)
    with pytest.raises(ConfigError, match="lr"):
        train(store, out, config=replace(cfg, lr=1e-2), resume=True)
    resumed = train(store, out, config=cfg, resume=True)
    assert resumed.epochs == 2
    a = torch.load(full.resume, weights_only=True)
    b = torch.load(resumed.resume, weights_only=True)
    assert same_weights(a["model"], b["model"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert all(
        torch.equal(a["optimizer"]["state"][k]["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
        for k in a["optimizer"]["state"]
    )
    assert same_weights(
        load_checkpoint(full.checkpoint).state_dict, load_checkpoint(resumed.checkpoint).state_dict
    )
    assert without_timing(rows(full.log)) == without_timing(rows(resumed.log))


def test_checkpoint_evaluated_in_a_fresh_process_gives_the_recorded_metrics(
    store: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.pt"
    train(store, out, config=replace(TINY, epochs=1, downsample=2, chip_size=None))
    ckpt = load_checkpoint(out)
    assert ckpt.gsd == pytest.approx(0.1) and ckpt.tile_size == 32
    code = (
        "import json, sys, torch; torch.set_num_threads(1)\n"
        "from geoseg.train import evaluate_chips\n"
        "m = evaluate_chips(sys.argv[1], sys.argv[2], scenes=['s2'], batch_size=4, device='cpu')\n"
        "print(json.dumps({'miou': m.miou, 'oa': m.overall_accuracy, 'iou': m.iou.tolist()}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(out), str(store)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["miou"] == pytest.approx(ckpt.metrics["val_miou"], rel=1e-9)
    assert got["oa"] == pytest.approx(ckpt.metrics["val_oa"], rel=1e-9)
    iou = [v if v is not None else float("nan") for v in ckpt.metrics["val_iou"].values()]
    np.testing.assert_allclose(got["iou"], iou, rtol=1e-9)
    # scored at the labels' own resolution: all valid pixels of the validation chips
    m = evaluate_chips(ckpt, store, scenes=["s2"], device="cpu")
    _, index = read_store(store)
    val = index[index.scene == "s2"]
    assert m.pixel_count == int(sum(val[f"class_{c}"].sum() for c in range(6)))


def test_single_scene_store_needs_val_fraction_0(tmp_path: Path) -> None:
    one = make_store(tmp_path, n=1, size=128, chip=64)
    cfg = replace(TINY, epochs=2, val_scenes=None)
    with pytest.raises(ConfigError, match="single scene"):
        train(one, tmp_path / "m.pt", config=cfg)
    rep = train(one, tmp_path / "m.pt", config=replace(cfg, val_fraction=0.0, epochs=2))
    assert rep.val_scenes == () and rep.best_epoch == 2 and rep.best_val_miou is None
    assert load_checkpoint(rep.checkpoint).metrics["epoch"] == 2  # best = last
    assert rows(rep.log)[0]["val_miou"] == ""


def test_bad_inputs_and_options(store: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a geoseg tile store"):
        train(tmp_path, tmp_path / "m.pt", config=TINY)
    with pytest.raises(InputError, match="'9_9' is not in the store"):
        train(store, tmp_path / "m.pt", config=replace(TINY, val_scenes=("9_9",)))
    with pytest.raises(InputError, match="unknown model 'nope'"):
        train(store, tmp_path / "m.pt", config=replace(TINY, model="nope"))
    with pytest.raises(ConfigError, match="'wce'"):
        train(store, tmp_path / "m.pt", config=replace(TINY, class_weights="median_frequency"))
    with pytest.raises(ConfigError, match="chip_size=128"):
        train(store, tmp_path / "m.pt", config=replace(TINY, chip_size=128))
    with pytest.raises(CheckpointError, match="no resume state"):
        train(store, tmp_path / "m.pt", config=TINY, resume=True)
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        train(store, tmp_path / "x.pt", config=TINY)
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"val_fraction": 1.0}, {"schedule": "step"}):
        with pytest.raises(ConfigError):
            replace(TINY, **bad)
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({**TINY.to_dict(), "momentum": 0.9})
    assert not (tmp_path / "m.pt").exists()


def test_weighted_loss_and_overwrite(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    cfg = replace(TINY, epochs=1, loss="wce+dice", class_weights="median_frequency")
    train(store, out, config=cfg)
    first = load_checkpoint(out)
    rep = train(store, out, config=replace(cfg, schedule="cosine", seed=2), overwrite=True)
    assert len(rows(rep.log)) == 1
    assert load_checkpoint(out).config["schedule"] == "cosine"
    assert not same_weights(first.state_dict, load_checkpoint(out).state_dict)
