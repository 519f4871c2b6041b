"""The model: a checkpoint path predicts, tagged with the checkpoint file hash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from geoseg.checkpoint import file_sha256
from geoseg.predict import predict_scenes
from tests.predict.helpers import (
    opts,
    random_scene,
    save_tiny_checkpoint,
)


def test_checkpoint_path_model_and_its_hash(tmp_path: Path) -> None:
    ckpt = save_tiny_checkpoint(tmp_path / "m.pt")
    spec = random_scene(tmp_path, 70, 90)
    (rep,) = predict_scenes([spec], ckpt, tmp_path / "out", options=opts(overlap=16))
    with rasterio.open(rep.classes) as ds:
        assert ds.tags()["GEOSEG_MODEL_SHA256"] == file_sha256(ckpt)
        assert set(np.unique(ds.read())) <= set(range(6))
