"""``geoseg train --photometric``: the option reaches the config, the checkpoint and the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg import augment
from geoseg.checkpoint import load_checkpoint
from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.train import TrainConfig

FAST = ["--model", "fcn_resnet18", "--chip-size", "32", "--batch-size", "4", "--device", "cpu"]
FAST += ["--downsample", "1", "--workers", "0"]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_with_photometric_augmentation(
    train_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[str, ...], float]] = []
    real = augment.photometric

    def spy(image, valid, bands, rng, *, strength=1.0):  # type: ignore[no-untyped-def]
        calls.append((tuple(bands), strength))
        return real(image, valid, bands, rng, strength=strength)

    monkeypatch.setattr(augment, "photometric", spy)
    out = tmp_path / "model.pt"
    args = ["train", str(train_store), "-o", str(out), *FAST, "--epochs", "1"]
    res = CliRunner().invoke(cli, [*args, "--val-scenes", "s2", "--photometric", "1.5"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out).config["photometric"] == 1.5
    # every training chip, none of the validation chips, with the store's bands
    assert calls and set(calls) == {(("red", "green", "blue", "nir"), 1.5)}
    n_train = len(calls)
    calls.clear()
    res = CliRunner().invoke(cli, [*args, "--val-scenes", "s2", "--overwrite"])
    assert res.exit_code == 0 and not calls and n_train > 0
    res = CliRunner().invoke(cli, [*args, "--photometric", "2.5"])
    assert res.exit_code == 2 and "--photometric" in res.output


def test_config_range_and_job_dicts() -> None:
    assert TrainConfig().photometric == 0.0
    assert TrainConfig.from_dict({"photometric": 0.8}).photometric == 0.8
    assert TrainConfig(photometric=1.0).to_dict()["photometric"] == 1.0
    for bad in (-0.1, 2.01, float("nan")):
        with pytest.raises(ConfigError, match=r"^photometric=.*must be >= 0 and <= 2"):
            TrainConfig(photometric=bad)
