"""``python -m geoseg.bench.device``: the device smoke test, dry-run on the CPU."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from geoseg.bench import device
from geoseg.bench.device import (
    CHECKS,
    CheckError,
    SmokeConfig,
    main,
    run_check,
    run_checks,
    summary_line,
)


def test_every_check_passes_on_the_cpu_with_small_sizes(tmp_path: Path) -> None:
    out = io.StringIO()
    report = tmp_path / "smoke.json"
    args = ["--device", "cpu", "--small", "--workdir", str(tmp_path / "work")]
    rc = main([*args, "--json", str(report)], stream=out)
    text = out.getvalue()
    assert rc == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("geoseg device smoke: torch ")
    for name, _ in CHECKS:
        assert any(line.startswith(f"[PASS] {name} (") for line in lines), text
    assert "[FAIL]" not in text
    assert lines[-1] == f"smoke: {len(CHECKS)} passed, 0 failed"
    results = json.loads(report.read_text())
    assert [r["name"] for r in results] == [name for name, _ in CHECKS]
    assert all(r["ok"] and r["seconds"] >= 0 for r in results)


def _boom(config: SmokeConfig) -> str:
    raise ValueError(f"boom on {config.device}")


def _wrong(config: SmokeConfig) -> str:
    raise CheckError("classes differ")


def _fine(config: SmokeConfig) -> str:
    return "all good"


def test_a_failing_check_is_recorded_with_its_error_and_the_next_one_runs(
    tmp_path: Path,
) -> None:
    out = io.StringIO()
    config = SmokeConfig(device="cpu", small=True, workdir=tmp_path)
    checks = [("boom", _boom), ("wrong", _wrong), ("fine", _fine)]
    results = run_checks(checks, config, stream=out)
    assert [(r.name, r.ok) for r in results] == [("boom", False), ("wrong", False), ("fine", True)]
    assert results[0].detail == "ValueError: boom on cpu"
    assert results[1].detail == "CheckError: classes differ"
    assert results[2].detail == "all good"
    text = out.getvalue()
    assert "Traceback" in text and "raise ValueError" in text  # the traceback is kept
    assert "[FAIL] boom (" in text and "[FAIL] wrong (" in text and "[PASS] fine (" in text
    assert text.splitlines()[-1] == "smoke: 1 passed, 2 failed (boom, wrong)"


def test_run_check_times_and_reports_a_passing_check(tmp_path: Path) -> None:
    out = io.StringIO()
    config = SmokeConfig(device="cpu", small=True, workdir=tmp_path)
    result = run_check("fine", _fine, config, stream=out)
    assert result.ok and result.detail == "all good" and result.seconds >= 0
    assert out.getvalue().startswith("[PASS] fine (") and out.getvalue().endswith(": all good\n")
    assert summary_line([result]) == "smoke: 1 passed, 0 failed"


def test_main_exits_1_when_a_check_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "CHECKS", (("fine", _fine), ("boom", _boom)))
    out = io.StringIO()
    rc = main(["--device", "cpu", "--workdir", str(tmp_path)], stream=out)
    assert rc == 1
    assert out.getvalue().splitlines()[-1] == "smoke: 1 passed, 1 failed (boom)"


def test_only_runs_the_named_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "CHECKS", (("fine", _fine), ("boom", _boom)))
    out = io.StringIO()
    rc = main(["--device", "cpu", "--only", "fine", "--workdir", str(tmp_path)], stream=out)
    assert rc == 0 and "boom" not in out.getvalue()


def test_a_device_that_is_not_there_exits_2_with_one_line(tmp_path: Path) -> None:
    out = io.StringIO()
    rc = main(["--device", "cuda:99", "--workdir", str(tmp_path)], stream=out)
    assert rc == 2
    assert out.getvalue().startswith("Error: --device cuda:99: ")
    assert len(out.getvalue().splitlines()) == 1
