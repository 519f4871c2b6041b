"""Running a job: scenes in parallel, steps in order, resumable, recorded in the manifest.

For every scene the steps run in the order ``predict`` → ``landcover`` → ``vectorize`` →
``evaluate`` (the last three read the class raster that ``predict`` writes). A step is
skipped as up to date when its last run finished, its fingerprint (the checksums of its
input files and the model, and its options) is unchanged, every output it recorded still
exists with the recorded SHA-256, and no step it depends on runs again. Otherwise it runs,
and so do the steps after it. ``force`` runs everything.

Scenes run in a pool of ``job.workers`` threads. Prediction is always scheduled by Dask:
by an in-process cluster of ``job.workers`` threads shared by all scenes (one model in
memory), or, with a scheduler address, by that cluster, whose workers then also run the
landcover, vectorize and evaluate steps as tasks. Tasks get paths and write atomically,
so Dask may rerun a task whose worker died: the result is the same.

A scene whose step fails with a known error (:class:`~geoseg.errors.GeosegError`, an
``OSError``, a raster read error, a lost Dask task) is recorded as failed, with the
message, and the other scenes go on; steps that need the failed step's outputs are left
pending. Any other exception is a bug: it is recorded, then raised.

Output layout::

    OUTPUT/manifest.json          the run manifest (see geoseg.pipeline._manifest)
    OUTPUT/run.lock               present while a run holds the output root
    OUTPUT/landcover.csv          area per scene and class
    OUTPUT/maps/{scene}_classes.tif (+ .aux.xml, _probs.tif, {scene}.json)
    OUTPUT/vectors/{scene}.gpkg   (or vectors/{scene}/ with format: parquet)
    OUTPUT/metrics/{scene}.json
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from geoseg._io import TEMP_NAME, check_output_path
from geoseg.errors import ConfigError, OutputExistsError
from geoseg.pipeline._config import Job
from geoseg.pipeline._context import (
    LANDCOVER_CSV,
    MAPS_DIR,
    METRICS_DIR,
    VECTORS_DIR,
    RunContext,
    SharedClient,
)
from geoseg.pipeline._decide import decide
from geoseg.pipeline._manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    RunLock,
    sha256_file,
    utc_now,
    versions,
)
from geoseg.pipeline._results import RunEvent, RunPlan, RunReport, SceneResult, StepPlan
from geoseg.pipeline._scene import failed_checks, run_scene, write_csv

__all__ = ["LANDCOVER_CSV", "plan_job", "run_job"]

logger = logging.getLogger(__name__)


def _check_root(root: Path) -> None:
    check_output_path(root, kind="dir")
    if root.exists() and not root.is_dir():
        raise OutputExistsError(f"{root}: the output root is a file; give a folder")
    if root.is_dir() and not (root / MANIFEST_NAME).exists():
        others = [p.name for p in root.iterdir() if not p.name.startswith(LOCK_NAME)]
        if others:
            raise OutputExistsError(
                f"{root}: the folder exists and holds no {MANIFEST_NAME} (it has "
                f"{', '.join(sorted(others)[:3])}...); a job writes into its own folder: choose "
                "a new or empty output folder"
            )


def _clean_leftovers(root: Path) -> None:
    """Remove temporary files that a killed run left (the lock is held: none is in use)."""
    for d in (root, root / MAPS_DIR, root / VECTORS_DIR, root / METRICS_DIR):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if TEMP_NAME.match(p.name):
                logger.info("%s: removing a temporary file of an interrupted run", p)
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()


def _with_overrides(job: Job, scheduler: str | None, workers: int | None) -> Job:
    if workers is not None and workers < 1:
        raise ConfigError(f"workers={workers}: must be >= 1")
    return replace(
        job,
        scheduler=scheduler if scheduler is not None else job.scheduler,
        workers=workers if workers is not None else job.workers,
    )


def _require_scenes(job: Job) -> None:
    if not job.scenes:
        raise ConfigError(
            f"{job.source}: the job has no scenes (was it loaded with check_files=False?)"
        )


def plan_job(job: Job, *, force: bool = False) -> RunPlan:
    """What :func:`run_job` would do; runs and writes nothing (no lock is taken).

    Args:
        job: A job from :func:`load_job`.
        force: Plan as if everything must run again.

    Returns:
        The plan: every scene × step, with the reason to run or skip it.

    Raises:
        InputError: The manifest is unreadable or an input file disappeared.
    """
    _require_scenes(job)
    _check_root(job.output)
    manifest = Manifest.load(job.output)
    ctx = RunContext(job, manifest, force, manifest.input_sha256(job.model), emit=lambda e: None)
    steps: list[StepPlan] = []
    for spec in job.scenes:
        predict_runs = False
        for step in job.steps:
            d = decide(ctx, spec, step, upstream_runs=predict_runs and step != "predict")
            steps.append(StepPlan(spec.id, step, "run" if d.run else "skip", d.reason))
            if step == "predict":
                predict_runs = d.run
    return RunPlan(job, tuple(steps))


def run_job(
    job: Job,
    *,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
) -> RunReport:
    """Run a job: every scene through its steps, skipping what is up to date.

    Args:
        job: A job from :func:`load_job`.
        force: Run every step again.
        scheduler: Dask scheduler address; overrides the job's.
        workers: Scenes at once (and local threads); overrides the job's.
        on_event: Called (from worker threads) whenever a step changes state.

    Returns:
        The report; ``report.ok`` is False when a scene failed or a check did not pass.

    Raises:
        RunLockedError: Another run holds the output root.
        OutputExistsError: The output root exists and is not a run folder.
        InputError: The Dask scheduler cannot be reached, or the manifest is unreadable.
    """
    t_start = time.perf_counter()
    job = _with_overrides(job, scheduler, workers)
    _require_scenes(job)
    _check_root(job.output)
    emit = on_event or (lambda e: None)
    with RunLock(job.output):
        _clean_leftovers(job.output)
        manifest = Manifest.load(job.output)
        ctx = RunContext(
            job,
            manifest,
            force,
            manifest.input_sha256(job.model),
            emit=emit,
        )
        manifest.set(
            "job",
            {"path": str(job.source), "name": job.name, "sha256": sha256_file(job.source)},
        )
        manifest.set("model", {"path": str(job.model), "sha256": ctx.model_sha})
        manifest.set("versions", versions())
        run_index = manifest.start_run(
            {
                "started": utc_now(),
                "finished": None,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "force": force,
                "scheduler": job.scheduler,
                "workers": job.workers,
                "status": "running",
            }
        )
        for spec in job.scenes:
            manifest.update_scene(
                spec.id,
                save=False,
                inputs={
                    "image": str(spec.image),
                    "dsm": str(spec.dsm) if spec.dsm else None,
                    "ndsm": str(spec.ndsm) if spec.ndsm else None,
                    "labels": str(spec.labels) if spec.labels else None,
                },
            )
        manifest.save()
        results: list[SceneResult] = []
        status = "failed"
        cluster = SharedClient(job.scheduler, job.workers)
        ctx.cluster = cluster
        try:
            if job.scheduler is not None:
                cluster.client()  # fail fast when the scheduler cannot be reached
            with _pool(min(job.workers, len(job.scenes))) as pool:
                futures = [pool.submit(run_scene, ctx, spec) for spec in job.scenes]
                try:
                    results = [f.result() for f in futures]
                except BaseException:
                    ctx.stop.set()  # running scenes stop after their current step
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            status = "done"
        finally:
            cluster.close()
            csv_path = write_csv(ctx)
            counts = _counts(results)
            manifest.update_run(
                run_index,
                finished=utc_now(),
                status=status if not counts["failed"] else "failed",
                counts=counts,
            )
            manifest.save()
    checks = failed_checks(ctx)
    return RunReport(
        output=job.output,
        manifest=manifest.path,
        landcover_csv=csv_path,
        scenes=tuple(results),
        ran=counts["ran"],
        skipped=counts["skipped"],
        failed=counts["failed"],
        failed_checks=tuple(checks),
        seconds=time.perf_counter() - t_start,
    )


@contextlib.contextmanager
def _pool(n: int) -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="geoseg-scene")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True)


def _counts(results: list[SceneResult]) -> dict[str, int]:
    c = {"ran": 0, "skipped": 0, "failed": 0}
    for r in results:
        for s in r.steps.values():
            if s == "done":
                c["ran"] += 1
            elif s == "skipped":
                c["skipped"] += 1
            elif s == "failed":
                c["ran"] += 1
                c["failed"] += 1
    return c
