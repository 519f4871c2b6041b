"""Hostile job files for ``geoseg run``: every mistake listed at once, nothing run or written.

A bad job file exits 2 with one ``Error`` line naming the file and the number of problems,
then one indented line per problem (``yaml.path: what is wrong; how to fix it``). A second run
while another holds the output root's lock exits 1 with one line and leaves the first run's
outputs alone.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.hostile.helpers import fails_cleanly, run, snapshot


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic Potsdam scene of 64 px and an untrained checkpoint (tile size 64)."""
    from geoseg.synth import synthesize
    from tests.pipeline.helpers import make_checkpoint

    root = tmp_path_factory.mktemp("jobs")
    synthesize(root / "data", scenes=1, size=64, seed=2)
    make_checkpoint(root / "model.pt", tile_size=64)
    return root


def good(world: Path, out: Path) -> dict[str, Any]:
    return {
        "inputs": [{"potsdam": str(world / "data")}],
        "model": str(world / "model.pt"),
        "output": str(out / "run"),
        "workers": 1,
        "steps": {"predict": {"tile_size": 64, "overlap": 8}},
    }


def _edit(**top: Any) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        job.update(top)

    return edit


def _step(step: str, **values: Any) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        job["steps"].setdefault(step, {}).update(values)

    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(job: dict[str, Any]) -> None:
        del job[key]

    return edit


def _twice(job: dict[str, Any]) -> None:
    job["inputs"] = job["inputs"] * 2


def _missing(job: dict[str, Any]) -> None:
    job["inputs"] = [{"potsdam": "no/such/folder"}]
    job["model"] = "no-such-model.pt"


# (case id, an edit of a good job or the file's text, the problem lines that must be listed)
CASES: list[tuple[str, Callable[[dict[str, Any]], None] | str, list[str]]] = [
    (
        "not-yaml",
        "inputs: [\n  {potsdam: data}\nmodel: x\n",
        ["not valid YAML at line 3, column 1: expected ',' or ']'"],
    ),
    ("control-character", "model: \x01\n", ["not valid YAML at character 8"]),
    ("a-list", "- a\n- b\n", ["(top level): expected a mapping, got a list"]),
    ("a-text", "just words\n", ["(top level): expected a mapping, got text 'just words'"]),
    (
        "empty",
        "",
        ["inputs: missing", "model: missing", "output: missing", "steps: missing"],
    ),
    ("unknown-key", _edit(workerz=2), ["workerz: unknown key; did you mean 'workers'?"]),
    (
        "unknown-step-key",
        _step("predict", tile_sise=64),
        ["steps.predict.tile_sise: unknown key; did you mean 'tile_size'?"],
    ),
    ("unknown-step", _step("predikt"), ["steps.predikt: unknown key; did you mean 'predict'?"]),
    (
        "wrong-types",
        _step("predict", overlap=1.5, batch_size="many"),
        [
            "steps.predict.overlap: expected an integer, got float 1.5",
            "steps.predict.batch_size: expected an integer, got text 'many'",
        ],
    ),
    ("workers-zero", _edit(workers=0), ["workers: 0 must be >= 1"]),
    (
        "bad-choices",
        _step("predict", tta="lots", blend="max"),
        [
            "steps.predict.tta: text 'lots' is not one of none, flip, d4",
            "steps.predict.blend: text 'max' is not one of hann, spline, mean",
        ],
    ),
    (
        "missing-files",
        _missing,
        ["inputs[0].potsdam: ", "no/such/folder does not exist", "model: "],
    ),
    ("missing-key", _drop("steps"), ["steps: missing; this key is required"]),
    (
        "duplicate-keys",
        "model: a.pt\nmodel: b.pt\n",
        ["line 2: key 'model' is given twice; keep one"],
    ),
    (
        "duplicate-scenes",
        _twice,
        ["inputs[1]: scene id '2_10'", "is also given by inputs[0]; give each scene once"],
    ),
    (
        "overlap-not-below-tile",
        _step("predict", tile_size=64, overlap=64),
        ["steps.predict.overlap: 64 must be smaller than tile_size (64)"],
    ),
    (
        "vectorize-probabilities-without-predict-probabilities",
        _step("vectorize", probabilities=True),
        ["steps.vectorize.probabilities: needs steps.predict.probabilities: true"],
    ),
    (
        "bad-scheduler",
        _edit(scheduler="localhost:8786"),
        ["scheduler: 'localhost:8786' is not a scheduler address; use tcp://HOST:PORT"],
    ),
    ("wrong-version", _edit(version=2), ["version: 2: this geoseg reads job version 1"]),
    (
        "unknown-ignore-class",
        _step("evaluate", ignore_class=["clouds"]),
        ["steps.evaluate.ignore_class: clouds: not a class of schema 'potsdam'"],
    ),
]


@pytest.mark.parametrize(("edit", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_job_file_lists_every_problem_and_runs_nothing(
    world: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None] | str, expected: list[str]
) -> None:
    job = tmp_path / "job.yaml"
    if isinstance(edit, str):
        job.write_text(edit)
    else:
        data = good(world, tmp_path)
        edit(data)
        job.write_text(yaml.safe_dump(data, sort_keys=False))
    f = fails_cleanly("run", job, watch=tmp_path, code=2, names=("job.yaml", "nothing was run"))
    problems = [ln.strip() for ln in f.output.splitlines() if ln.startswith("  ")]
    assert problems, f.output
    for line in problems:
        assert "\n" not in line and len(line) < 300 and "^" not in line, line
    for text in expected:
        assert any(text in p for p in problems), f"{text!r} not among:\n" + "\n".join(problems)
    n = len(problems)
    assert f"{n} problem{'s' if n != 1 else ''}" in f.message, f.output
    assert not (tmp_path / "run").exists()


def test_job_file_that_is_a_folder_or_absent(world: Path, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").mkdir()
    fails_cleanly("run", tmp_path / "job.yaml", watch=tmp_path, code=2, names="job.yaml")
    fails_cleanly("run", tmp_path / "nope.yaml", watch=tmp_path, code=2, names="nope.yaml")


def test_job_file_not_utf8(world: Path, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_bytes(b"model: \xff\xfe\n")
    f = fails_cleanly("run", tmp_path / "job.yaml", watch=tmp_path, code=2, names="job.yaml")
    assert "cannot read the job file" in f.output


_HOLD = """
import sys, time
from geoseg.pipeline._manifest import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_second_run_while_the_lock_is_held(world: Path, tmp_path: Path) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(good(world, tmp_path)))
    rc, output, exc = run("run", job)
    assert (rc, exc) == (0, None), output
    out = tmp_path / "run"
    assert (out / "maps" / "2_10_classes.tif").is_file()
    first = snapshot(out)
    # Another live process takes the lock, as a running `geoseg run` does.
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        held = snapshot(out)
        f = fails_cleanly(
            "run", job, "--force", watch=tmp_path, code=1,
            names=("run.lock", f"pid {holder.pid}", "still running"),
        )  # fmt: skip
        assert "Traceback" not in f.output
        assert snapshot(out) == held
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    lock = out / "run.lock"
    assert lock.exists()  # the killed holder leaves it; the next run takes it over
    lock.unlink()
    assert snapshot(out) == first, "the first run's outputs are untouched"
