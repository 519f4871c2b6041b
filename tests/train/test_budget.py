"""Training to a time budget (``minutes``) and the CPU defaults."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.checkpoint import load_checkpoint
from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.train import TrainConfig, adapt_store_to_cpu, train
from geoseg.train._budget import (
    CPU_CROP,
    SAFETY,
    adapt_to_cpu,
    epochs_that_fit,
    over_budget,
)
from tests.train_helpers import TINY, rows, same_weights, without_timing

pytestmark = pytest.mark.usefixtures("one_thread")


def test_epochs_that_fit_leave_a_margin_and_pay_for_the_first_epoch() -> None:
    assert epochs_that_fit(100.0, epoch_seconds=10.0) == int(SAFETY * 100 // 10)
    assert epochs_that_fit(100.0, epoch_seconds=10.0, first_epoch_seconds=30.0) == int(
        (SAFETY * 100 - 30) // 10
    )
    assert epochs_that_fit(5.0, epoch_seconds=10.0) == 0
    assert epochs_that_fit(-1.0, epoch_seconds=10.0) == 0


def test_over_budget_predicts_the_next_epoch_from_the_warm_ones() -> None:
    # the first epoch (cache filling) was slow; the warm ones take 10 s
    assert not over_budget(80.0, 100.0, [40.0, 10.0, 10.0], epoch=3, epochs=5)
    assert over_budget(95.0, 100.0, [40.0, 10.0, 10.0], epoch=3, epochs=5)
    assert not over_budget(95.0, 100.0, [40.0, 10.0], epoch=5, epochs=5)  # it was the last
    assert over_budget(70.0, 100.0, [40.0], epoch=1, epochs=5)  # only the first to go by


def test_the_cpu_defaults_adapt_only_what_was_not_given() -> None:
    base = TrainConfig(workers=2)
    # 512 px chips at 5 cm: 4x coarser leaves 128 px, one crop
    cfg, notes = adapt_to_cpu(
        base, store_gsd=0.05, chip_px=1024, chips=10, bands=5, given=(), memory_bytes=2**34
    )
    assert (cfg.downsample, cfg.chip_size, cfg.workers, cfg.cache) == (4, CPU_CROP, 0, True)
    assert len(notes) == 4 and "0.20 m" in notes[0]
    kept, notes = adapt_to_cpu(
        base,
        store_gsd=0.05,
        chip_px=1024,
        chips=10,
        bands=5,
        given=("downsample", "chip_size", "workers", "cache"),
    )
    assert kept == base and notes == []
    # 25 cm chips are not read coarser; 64 px chips are not cropped; no room: no cache
    coarse, _ = adapt_to_cpu(
        base, store_gsd=0.25, chip_px=64, chips=10, bands=5, given=(), memory_bytes=1000
    )
    assert (coarse.downsample, coarse.chip_size, coarse.cache) == (1, None, False)


def test_a_budgeted_run_is_the_run_of_its_fitted_epochs(store: Path, tmp_path: Path) -> None:
    cfg = replace(TINY, minutes=0.25)
    a = train(store, tmp_path / "new" / "a.pt", config=cfg)  # a folder made by the run
    assert a.budget is not None and a.budget["minutes"] == 0.25
    fitted = int(a.budget["epochs"])
    assert fitted >= 1 and a.budget["step_seconds"] > 0
    assert a.epochs == fitted or a.stopped_early
    saved = TrainConfig.from_dict(load_checkpoint(a.checkpoint).config)
    assert saved.epochs == fitted and saved.minutes == 0.25
    # the timing probe trained a copy: the same epochs without a budget give the same weights
    b = train(store, tmp_path / "b.pt", config=replace(TINY, epochs=a.epochs))
    assert same_weights(
        load_checkpoint(a.checkpoint).state_dict, load_checkpoint(b.checkpoint).state_dict
    )
    assert without_timing(rows(a.log)) == without_timing(rows(b.log))
    assert not list(tmp_path.rglob(".geoseg-probe-*"))


def test_a_budget_too_short_for_one_epoch_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    with pytest.raises(ConfigError, match=r"minutes=0\.0001: one epoch takes about"):
        train(store, out, config=replace(TINY, minutes=0.0001))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_budgeted_run_resumes_its_fitted_epochs(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    first = train(store, out, config=replace(TINY, minutes=0.25))
    assert first.budget is not None
    # a resumed budgeted run finishes the epochs the first one fitted (those it did not
    # reach if it stopped early), without fitting anew
    again = train(store, out, config=replace(TINY, minutes=0.25), resume=True)
    assert again.epochs == first.budget["epochs"] and again.budget is None
    assert len(rows(again.log)) == again.epochs


def test_cli_minutes_reports_the_fit_and_the_cpu_defaults(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    args = ["train", str(store), "-o", str(out), "--model", "fcn_resnet18", "--device", "cpu"]
    res = CliRunner().invoke(cli, [*args, "--minutes", "0.25", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    assert "time budget 0.25 min:" in res.output and "epochs fitted" in res.output
    # the toy store's 64 px chips at 5 cm are not read coarser (they would be smaller than
    # a crop); they are read in the main process and cached
    assert "CPU defaults: 0 loader workers" in res.output and "downsample" not in res.output
    saved = load_checkpoint(out).config
    assert (saved["downsample"], saved["workers"], saved["cache"]) == (1, 0, True)
    res = CliRunner().invoke(cli, [*args, "--epochs", "1", "--workers", "1", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(out).config["workers"] == 1 and "loader workers" not in res.output
    # 16 px crops of these chips allow reading them 4x coarser (20 cm)
    adapted, _ = adapt_store_to_cpu(store, replace(TINY, chip_size=16), given=())
    assert adapted.downsample == 4
    kept, _ = adapt_store_to_cpu(store, replace(TINY, chip_size=16), given=("downsample",))
    assert kept.downsample == TINY.downsample
