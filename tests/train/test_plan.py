from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from geoseg.checkpoint import load_checkpoint
from geoseg.errors import ConfigError
from geoseg.tiles import read_store
from geoseg.train import train
from tests.train_helpers import TINY, make_store, rows

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_keeps_every_scene_on_one_side(store: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=1, val_scenes=None, val_fraction=0.34, seed=3)
    rep = train(store, tmp_path / "m.pt", config=cfg)
    assert len(rep.val_scenes) == 1 and set(rep.train_scenes).isdisjoint(rep.val_scenes)
    assert set(rep.train_scenes) | set(rep.val_scenes) == {"s0", "s1", "s2"}
    _, index = read_store(store)
    assert rep.val_chips == int(index.scene.isin(rep.val_scenes).sum())
    assert rep.train_chips == int(index.scene.isin(rep.train_scenes).sum())


def test_single_scene_store_needs_val_fraction_0(tmp_path: Path) -> None:
    one = make_store(tmp_path, n=1, size=128, chip=64)
    cfg = replace(TINY, epochs=2, val_scenes=None)
    with pytest.raises(ConfigError, match="single scene"):
        train(one, tmp_path / "m.pt", config=cfg)
    rep = train(one, tmp_path / "m.pt", config=replace(cfg, val_fraction=0.0, epochs=2))
    assert rep.val_scenes == () and rep.best_epoch == 2 and rep.best_val_miou is None
    assert load_checkpoint(rep.checkpoint).metrics["epoch"] == 2  # best = last
    assert rows(rep.log)[0]["val_miou"] == ""
