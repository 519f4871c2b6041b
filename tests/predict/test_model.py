"""The model: a checkpoint path predicts, tagged with its hash; unusable models are refused."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from geoseg.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from geoseg.errors import CheckpointError, GeosegError
from geoseg.predict import PredictModel, predict_scenes
from geoseg.predict._model import load_model, model_ref
from tests.predict.helpers import (
    RGB,
    TWO,
    opts,
    random_scene,
    save_tiny_checkpoint,
    three_conv_model,
)


def test_checkpoint_path_model_and_its_hash(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    spec = random_scene(tmp_path, 70, 90)
    (rep,) = predict_scenes([spec], ckpt, tmp_path / "out", options=opts(overlap=16))
    with rasterio.open(rep.classes) as ds:
        assert ds.tags()["GEOSEG_MODEL_SHA256"] == file_sha256(ckpt)
        assert set(np.unique(ds.read())) <= set(range(6))


def test_an_unusable_checkpoint_is_refused_before_any_work(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"].popitem()
    torch.save(payload, tmp_path / "bad.pt")
    spec = random_scene(tmp_path, 40, 40)
    with pytest.raises(CheckpointError, match=r"bad\.pt: the weights lack 'score32\.bias'"):
        model_ref(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"bad\.pt: the weights lack"):
        predict_scenes([spec], tmp_path / "bad.pt", tmp_path / "out", options=opts())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"std": (60.0, 0.0, 40.0)}, "the std of band 'green' is 0.0"),
        ({"std": (60.0, 50.0, math.nan)}, "the std of band 'blue' is nan"),
        ({"mean": (math.inf, 0.0, 0.0)}, "the mean of band 'red' is inf"),
        ({"mean": (1.0,)}, "3 bands but 1 means and 3 stds"),
        ({"bands": (), "mean": (), "std": ()}, "it lists no input bands"),
        ({"tile_size": 0}, "tile size 0"),
        ({"gsd": 0.0}, "ground sample distance 0.0"),
        ({"gsd": math.nan}, "ground sample distance nan"),
    ],
)
def test_predict_model_refuses_what_cannot_be_applied(change: dict[str, object], says: str) -> None:
    with pytest.raises(CheckpointError, match=f"^model 'threeconv': {re.escape(says)}"):
        replace(three_conv_model(), **change)


def test_a_checkpoint_changed_while_predicting_is_refused(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    ref = model_ref(ckpt)
    assert load_model(ref).sha256 == ref.meta.sha256
    torch.manual_seed(1)
    save_checkpoint(replace(load_checkpoint(ckpt), metrics={"epoch": 2}), ckpt, overwrite=True)
    with pytest.raises(CheckpointError, match=r"m\.pt: the checkpoint changed while predicting"):
        load_model(ref)


class _OneChannel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1]


def test_a_model_failing_on_a_worker_is_one_error_naming_the_scene(tmp_path: Path) -> None:
    """The runner's own check fails inside the block task: one line, the scene, no folder."""
    model = PredictModel(
        module=_OneChannel(), bands=RGB, mean=(0.0,) * 3, std=(1.0,) * 3, schema=TWO,
        tile_size=32, gsd=0.05, name="one",
    )  # fmt: skip
    spec = random_scene(tmp_path, 40, 40)
    with pytest.raises(GeosegError) as info:
        predict_scenes([spec], model, tmp_path / "out", options=opts(tile_size=32, overlap=8))
    msg = str(info.value)
    assert msg.startswith(f"{spec.image}: scene {spec.id!r} failed in block (0, 0): ")
    assert "\n" not in msg and "nothing of it was written" in msg
    assert not (tmp_path / "out").exists()
