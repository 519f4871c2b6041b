from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from geoseg.checkpoint import load_checkpoint
from geoseg.cli.main import cli

FAST = ["--model", "fcn_resnet18", "--chip-size", "32", "--batch-size", "4", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(train_store: Path) -> Path:
    return train_store


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    return res.exit_code, res.output


def assert_one_line_error(code: int, out: str, expected_code: int, *needles: str) -> None:
    assert code == expected_code, out
    assert "Traceback" not in out
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:"), out
    for n in needles:
        assert n in lines[-1], (n, lines[-1])


def test_train_writes_checkpoint_log_and_resume_state(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    args = [str(store), "-o", str(out), *FAST, "--epochs", "2", "--val-scenes", "s2"]
    code, text = run("train", *args, "--seed", "1", "--workers", "1")
    assert code == 0, text
    assert f"{out}: epoch " in text and "val mIoU" in text and "(s0, s1)" in text
    ckpt = load_checkpoint(out)
    assert ckpt.arch["name"] == "fcn_resnet18" and ckpt.config["seed"] == 1
    assert ckpt.config["val_scenes"] == ["s2"] and ckpt.config["workers"] == 1
    with (tmp_path / "model.metrics.csv").open() as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]
    assert (tmp_path / "model.pt.resume").is_file()
    # existing output: refused without --overwrite/--resume; --resume after the end: no-op
    code, text = run("train", *args, "--seed", "1", "--workers", "1")
    assert_one_line_error(code, text, 1, "already exists", "--resume", "--overwrite")
    code, text = run("train", *args, "--seed", "1", "--workers", "0", "--resume")
    assert code == 0, text
    code, text = run("train", *args, "--seed", "2", "--resume")
    assert_one_line_error(code, text, 1, "cannot resume", "seed")


def test_bad_input_exit_codes(store: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "m.pt")
    code, text = run("train", str(tmp_path), "-o", out)
    assert_one_line_error(code, text, 1, "not a geoseg tile store")
    code, text = run("train", str(store), "-o", out, "--model", "fcn_resnet7")
    assert_one_line_error(code, text, 2, "unknown model 'fcn_resnet7'", "fcn_resnet18")
    code, text = run("train", str(store), "-o", out, *FAST, "--val-scenes", "s2,9_9")
    assert_one_line_error(code, text, 1, "'9_9' is not in the store", "s0, s1, s2")
    code, text = run("train", str(store), "-o", out, "--val-scenes", "s2", "--val-fraction", "0.5")
    assert_one_line_error(code, text, 2, "--val-scenes or --val-fraction")
    code, text = run("train", str(store), "-o", out, "--loss", "ce+bce")
    assert_one_line_error(code, text, 2, "'bce'")
    code, text = run("train", str(store), "-o", out, "--lr", "-1")
    assert_one_line_error(code, text, 2, "--lr")
    code, text = run("train", str(store), "-o", out, "--class-weights", "median_frequency")
    assert_one_line_error(code, text, 1, "'wce'")
    code, text = run("train", str(tmp_path / "missing"), "-o", out)
    assert code == 2
    assert not Path(out).exists()


def test_help_shows_examples() -> None:
    code, text = run("train", "--help")
    assert code == 0 and "$ geoseg train" in text and "--val-fraction" in text
    code, text = run("--help")
    assert code == 0 and "train" in text
