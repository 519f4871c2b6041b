from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from geoseg.errors import CheckpointError, ConfigError, InputError, OutputExistsError
from geoseg.train import TrainConfig, train
from tests.train_helpers import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


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
