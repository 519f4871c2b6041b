from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from geoseg.checkpoint import load_checkpoint
from geoseg.errors import ConfigError, OutputExistsError
from geoseg.train import TrainEvent, log_path_for, train
from tests.train_helpers import TINY, rows, same_weights, without_timing

pytestmark = pytest.mark.usefixtures("one_thread")


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
