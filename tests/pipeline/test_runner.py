"""End-to-end runs of tiny jobs: skipping, reruns, failures, locks, cron kills, a Dask cluster."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from geoseg.checkpoint import file_sha256
from geoseg.errors import OutputExistsError
from geoseg.pipeline import (
    LOCK_NAME,
    RunEvent,
    RunLockedError,
    RunReport,
    load_job,
    plan_job,
    run_job,
)
from tests.conftest import write_raster
from tests.pipeline.helpers import (
    job_dict,
    make_data,
    manifest,
    product_digests,
    sha,
    shared_checkpoint,
    write_job,
)

STEPS = ("predict", "landcover", "vectorize", "evaluate")


@dataclass(frozen=True)
class Assets:
    data: Path
    model: Path
    ids: list[str]


@dataclass(frozen=True)
class Reference:
    job: Path
    out: Path
    report: RunReport
    digests: dict[str, str]
    events: list[RunEvent]


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    root = tmp_path_factory.mktemp("assets")
    ids = make_data(root / "data", scenes=3, size=256, seed=5)
    return Assets(root / "data", shared_checkpoint(tmp_path_factory), ids)


@pytest.fixture(scope="module")
def reference(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """An uninterrupted run; tests copy its output folder instead of running again."""
    root = tmp_path_factory.mktemp("reference")
    job = write_job(root / "job.yaml", job_dict(assets.data, assets.model, "out"))
    events: list[RunEvent] = []
    report = run_job(load_job(job), on_event=events.append)
    out = root / "out"
    return Reference(job, out, report, product_digests(out), events)


def _copy_run(ref: Reference, dest: Path, **changes: Any) -> Path:
    """A copy of the reference output and a job writing into it (with ``changes``)."""
    shutil.copytree(ref.out, dest / "out")
    job = _job_of(ref)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            job["steps"][section][name] = value
        else:
            job[section] = value
    return write_job(dest / "job.yaml", job)


def _job_of(ref: Reference) -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load(ref.job.read_text())
    return loaded


def _started(root: Path) -> dict[tuple[str, str], str]:
    m = manifest(root)
    return {
        (sc, st): rec["started"]
        for sc, entry in m["scenes"].items()
        for st, rec in entry["steps"].items()
        if rec["status"] in ("done", "skipped")
    }


# -- a run and its records ------------------------------------------------------------------------


def test_a_run_writes_products_a_manifest_and_the_landcover_csv(
    assets: Assets, reference: Reference
) -> None:
    report, out = reference.report, reference.out
    assert report.ok and report.failed == 0 and report.ran == 3 * len(STEPS)
    assert [s.scene for s in report.scenes] == assets.ids
    for sid in assets.ids:
        for rel in (f"maps/{sid}_classes.tif", f"vectors/{sid}.gpkg", f"metrics/{sid}.json"):
            assert (out / rel).is_file(), rel
    m = manifest(out)
    assert m["model"]["sha256"] == file_sha256(assets.model)
    assert {"geoseg", "torch", "rasterio", "gdal"} <= set(m["versions"])
    assert m["runs"][-1]["status"] == "done" and m["runs"][-1]["counts"]["ran"] == 12
    for sid in assets.ids:
        entry = m["scenes"][sid]
        assert entry["status"] == "done"
        for step in STEPS:
            rec = entry["steps"][step]
            assert rec["status"] == "done" and rec["started"] <= rec["finished"]
            for o in rec["outputs"]:
                assert sha(out / o["path"]) == o["sha256"], o
        image = entry["steps"]["predict"]["inputs"]["image"]
        assert image["sha256"] == file_sha256(image["path"])
        metrics = json.loads((out / "metrics" / f"{sid}.json").read_text())
        assert entry["steps"]["evaluate"]["metrics"]["miou"] == metrics["miou"]
        assert metrics["eroded"] == 2 and metrics["prediction"] == f"maps/{sid}_classes.tif"
    rows = list(csv.DictReader((out / "landcover.csv").read_text().splitlines()))
    assert len(rows) == 3 * 6
    for sid in assets.ids:
        lc = m["scenes"][sid]["steps"]["landcover"]["landcover"]
        mine = [r for r in rows if r["scene"] == sid]
        assert [int(r["pixels"]) for r in mine] == [c["pixels"] for c in lc["classes"]]
        assert lc["valid_pixels"] + lc["nodata_pixels"] == 256 * 256
    done = [(e.scene, e.step) for e in reference.events if e.status == "done"]
    assert sorted(done) == sorted((s, st) for s in assets.ids for st in STEPS)
    assert not (out / LOCK_NAME).exists()


def test_a_rerun_skips_every_step_and_keeps_their_times(
    reference: Reference, tmp_path: Path
) -> None:
    job = _copy_run(reference, tmp_path)
    out = tmp_path / "out"
    before = _started(out)
    plan = plan_job(load_job(job))
    assert {(s.action, s.reason) for s in plan.steps} == {("skip", "up to date")}
    report = run_job(load_job(job))
    assert report.ok and report.ran == 0 and report.skipped == 12
    assert _started(out) == before
    assert product_digests(out) == reference.digests
    m = manifest(out)
    assert len(m["runs"]) == 2
    assert {rec["status"] for e in m["scenes"].values() for rec in e["steps"].values()} == {
        "skipped"
    }


def test_a_changed_option_reruns_only_its_step(reference: Reference, tmp_path: Path) -> None:
    job = _copy_run(reference, tmp_path, vectorize__min_area=50.0)
    out = tmp_path / "out"
    before = _started(out)
    plan = plan_job(load_job(job))
    runs = {(s.scene, s.step): s.reason for s in plan.steps if s.action == "run"}
    assert set(runs) == {(sid, "vectorize") for sid in ("2_10", "2_11", "2_12")}
    assert set(runs.values()) == {"options changed: min_area 1.0 -> 50.0"}
    report = run_job(load_job(job))
    assert report.ok and report.ran == 3 and report.skipped == 9
    after = _started(out)
    for key, started in before.items():
        assert (after[key] == started) == (key[1] != "vectorize"), key


def test_missing_or_altered_outputs_are_rebuilt(reference: Reference, tmp_path: Path) -> None:
    job = _copy_run(reference, tmp_path)
    out = tmp_path / "out"
    (out / "vectors" / "2_10.gpkg").unlink()
    with (out / "metrics" / "2_11.json").open("a") as f:
        f.write(" ")
    plan = plan_job(load_job(job))
    runs = {(s.scene, s.step): s.reason for s in plan.steps if s.action == "run"}
    assert runs == {
        ("2_10", "vectorize"): "output vectors/2_10.gpkg is missing",
        ("2_11", "evaluate"): "output metrics/2_11.json changed since it was written",
    }
    report = run_job(load_job(job))
    assert report.ok and report.ran == 2
    assert product_digests(out) == reference.digests


def test_a_changed_input_reruns_predict_and_what_follows(
    reference: Reference, assets: Assets, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(assets.data, data)
    job = _copy_run(reference, tmp_path, inputs=[{"potsdam": str(data)}])
    dsm = data / "1_DSM" / "dsm_potsdam_02_11.tif"
    with open(dsm, "r+b") as f:  # same size, other bytes
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    plan = plan_job(load_job(job))
    runs = {(s.scene, s.step): s.reason for s in plan.steps if s.action == "run"}
    # The copied data has new paths but the same bytes: only 2_11's DSM changed.
    assert runs == {
        ("2_11", "predict"): "input changed: dsm",
        ("2_11", "landcover"): "predict runs again",
        ("2_11", "vectorize"): "predict runs again",
        ("2_11", "evaluate"): "predict runs again",
    }
    forced = plan_job(load_job(job), force=True)
    assert all(s.action == "run" for s in forced.steps)
    assert not (tmp_path / "out" / LOCK_NAME).exists()


# -- failures, locks, refusals ---------------------------------------------------------------------


def test_a_failed_scene_is_recorded_and_the_others_go_on(
    reference: Reference, assets: Assets, tmp_path: Path
) -> None:
    rgb = write_raster(tmp_path / "rgb.tif", np.full((3, 64, 64), 90, np.uint8))  # no nir, dsm
    job = _copy_run(
        reference,
        tmp_path,
        inputs=[{"potsdam": str(assets.data)}, {"image": str(rgb), "labels": str(rgb)}],
        vectorize__min_area=50.0,  # the other scenes have work to do
    )
    report = run_job(load_job(job))
    assert not report.ok and report.failed == 1
    *good, bad = report.scenes
    for sc in good:
        assert sc.status == "done" and sc.steps["vectorize"] == "done", sc
    assert bad.status == "failed" and bad.steps == {
        "predict": "failed",
        "landcover": "pending",
        "vectorize": "pending",
        "evaluate": "pending",
    }
    m = manifest(tmp_path / "out")
    err = m["scenes"]["rgb"]["steps"]["predict"]["error"]
    assert "rgb.tif" in err and "nir" in err
    assert m["scenes"]["rgb"]["status"] == "failed" and m["scenes"]["rgb"]["error"]
    assert m["scenes"]["rgb"]["steps"]["vectorize"]["reason"] == "not run: predict failed"
    assert m["runs"][-1]["status"] == "failed"
    plan = plan_job(load_job(job))
    runs = {(s.scene, s.step): s.reason for s in plan.steps if s.action == "run"}
    assert runs[("rgb", "predict")] == "failed last time"
    assert not any(sc != "rgb" for sc, _ in runs)


def test_dry_run_writes_nothing(assets: Assets, tmp_path: Path) -> None:
    job = write_job(tmp_path / "job.yaml", job_dict(assets.data, assets.model, "out"))
    plan = plan_job(load_job(job))
    assert len(plan.steps) == 12 and plan.to_run == 12
    assert plan.steps[0].reason == "new" and plan.steps[1].reason == "predict runs again"
    table = plan.format_table()
    assert "3 scene(s) x 4 step(s), 12 to run, 0 up to date" in table
    assert not (tmp_path / "out").exists()


def test_a_second_run_on_a_locked_output_stops(reference: Reference, tmp_path: Path) -> None:
    job = _copy_run(reference, tmp_path)
    out = tmp_path / "out"
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": "then",
        "create_time": psutil.Process().create_time(),
        "boot_time": psutil.boot_time(),
        "token": "t",
    }
    (out / LOCK_NAME).write_text(json.dumps(holder))
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        run_job(load_job(job))
    assert (out / "manifest.json").read_bytes() == before


def test_a_foreign_output_folder_is_refused(assets: Assets, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    job = write_job(tmp_path / "job.yaml", job_dict(assets.data, assets.model, "out"))
    with pytest.raises(OutputExistsError, match="holds no manifest.json"):
        run_job(load_job(job))


# -- cron: killed mid-run, run again --------------------------------------------------------------


def _wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _manifest_or_empty(root: Path) -> dict[str, Any]:
    try:
        return manifest(root)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_cron_a_killed_run_is_completed_by_the_next(
    reference: Reference, assets: Assets, tmp_path: Path
) -> None:
    job = job_dict(assets.data, assets.model, "out", workers=1)  # scenes one after the other
    path = write_job(tmp_path / "job.yaml", job)
    out = tmp_path / "out"
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoseg.cli", "run", str(path)], stdout=log, stderr=log
    )
    try:

        def first_scene_done() -> bool:
            m = _manifest_or_empty(out)
            steps = m.get("scenes", {}).get("2_10", {}).get("steps", {})
            return steps.get("evaluate", {}).get("status") == "done" or proc.poll() is not None

        _wait_for(first_scene_done, 180, "the first scene")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "run.log").read_text()
    finished_before = _started(out)
    assert ("2_10", "evaluate") in finished_before
    assert len(finished_before) < 12, "the kill must land mid-run"
    lock = json.loads((out / LOCK_NAME).read_text())
    assert lock["pid"] == proc.pid  # left behind by the killed run

    report = run_job(load_job(path))

    assert report.ok, report.format_table()
    assert product_digests(out) == reference.digests
    m = manifest(out)
    for (scene, step), started in finished_before.items():
        rec = m["scenes"][scene]["steps"][step]
        assert rec["status"] == "skipped" and rec["started"] == started, (scene, step)
    assert report.skipped == len(finished_before)
    assert report.ran == 12 - len(finished_before)
    leftovers = [p for p in out.rglob(".*")]
    assert leftovers == [], leftovers
    assert not (out / LOCK_NAME).exists()


# -- a Dask cluster (scheduler and two workers as processes), one worker killed ------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    logs = [(tmp_path / f"{n}.log").open("w") for n in ("scheduler", "w1", "w2")]
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    scheduler_opts = ["--no-dashboard", "--scheduler-file", str(sched_file)]
    worker_opts = ["--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--nthreads", "1"]
    worker_opts += ["--no-nanny", "--no-dashboard", "--memory-limit", "0"]
    try:
        procs.append(
            subprocess.Popen(
                [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", *scheduler_opts],
                stdout=logs[0],
                stderr=logs[0],
                env=env,
            )
        )
        _wait_for(sched_file.exists, 60, "the scheduler file")
        _wait_for(lambda: "address" in sched_file.read_text(), 10, "the scheduler address")
        address = json.loads(sched_file.read_text())["address"]
        for i in (1, 2):
            procs.append(
                subprocess.Popen(
                    [dask, "worker", "--name", f"w{i}", *worker_opts],
                    stdout=logs[i],
                    stderr=logs[i],
                    env=env,
                )
            )
        yield address, procs
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)  # reaped: no "subprocess still running" warning later
        for f in logs:
            f.close()


@pytest.mark.slow
def test_a_dask_cluster_survives_a_killed_worker(
    reference: Reference,
    assets: Assets,
    cluster: tuple[str, list[subprocess.Popen[bytes]]],
    tmp_path: Path,
) -> None:
    from distributed import Client

    address, procs = cluster
    assert address.startswith("tcp://127.0.0.1:")
    w1 = procs[1]
    with Client(address, timeout="30s", set_as_default=False) as monitor:
        monitor.wait_for_workers(2, timeout=60)
        w1_addr = next(
            a for a, w in monitor.scheduler_info()["workers"].items() if w["name"] == "w1"
        )
        job = job_dict(assets.data, assets.model, "out", scheduler=address)
        path = write_job(tmp_path / "job.yaml", job)
        result: dict[str, Any] = {}

        def drive() -> None:
            try:
                result["report"] = run_job(load_job(path))
            except BaseException as exc:  # handed to the test thread below
                result["error"] = exc

        busy: list[Any] = []

        def w1_busy() -> bool:
            busy.extend(monitor.processing().get(w1_addr) or ())
            return bool(busy) or not driver.is_alive()

        driver = threading.Thread(target=drive)
        driver.start()
        _wait_for(w1_busy, 120, "a task on worker w1")
        w1.send_signal(signal.SIGKILL)
        w1.wait(30)
        driver.join(300)
    assert not driver.is_alive()
    if "error" in result:
        raise result["error"]
    report: RunReport = result["report"]
    assert busy, "worker w1 must hold work when it is killed"
    assert w1.returncode == -signal.SIGKILL
    assert report.ok, report.format_table()
    assert product_digests(tmp_path / "out") == reference.digests
