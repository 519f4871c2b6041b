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
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geoseg.errors import ConfigError, GeosegError, InputError, OutputExistsError
from geoseg.pipeline._config import EvaluateStep, Job, VectorizeStep
from geoseg.pipeline._manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    Manifest,
    RunLock,
    sha256_file,
    utc_now,
    versions,
)
from geoseg.pipeline._summary import LandcoverSummary, landcover_summary, write_landcover_csv
from geoseg.scene import SceneSpec

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "LANDCOVER_CSV",
    "RunEvent",
    "RunPlan",
    "RunReport",
    "SceneResult",
    "StepPlan",
    "plan_job",
    "run_job",
]

logger = logging.getLogger(__name__)

LANDCOVER_CSV = "landcover.csv"
MAPS_DIR = "maps"
VECTORS_DIR = "vectors"
METRICS_DIR = "metrics"

EventStatus = Literal["running", "done", "failed", "skipped", "pending"]


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPlan:
    """What a run would do with one step of one scene.

    Attributes:
        scene: Scene id.
        step: Step name.
        action: ``run`` or ``skip``.
        reason: Why (``new``, ``up to date``, ``options changed: ...``...).
    """

    scene: str
    step: str
    action: Literal["run", "skip"]
    reason: str


@dataclass(frozen=True)
class RunPlan:
    """The plan of a run: every scene × step, run or skipped as up to date.

    Attributes:
        job: The job.
        steps: One entry per scene and step, in run order.
    """

    job: Job
    steps: tuple[StepPlan, ...]

    @property
    def to_run(self) -> int:
        """Number of steps that would run."""
        return sum(s.action == "run" for s in self.steps)

    def format_table(self) -> str:
        """The plan as aligned text, one line per scene and step."""
        job = self.job
        n_sc, n_st = len(job.scenes), len(job.steps)
        head = (
            f"{job.source} -> {job.output}: {n_sc} scene(s) x {n_st} step(s), "
            f"{self.to_run} to run, {len(self.steps) - self.to_run} up to date"
        )
        w_sc = max([5, *(len(s.scene) for s in self.steps)])
        lines = [head, f"{'scene':<{w_sc}}  {'step':<9}  {'action':<6}  reason"]
        for s in self.steps:
            lines.append(f"{s.scene:<{w_sc}}  {s.step:<9}  {s.action:<6}  {s.reason}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunEvent:
    """A step changed state (passed to ``on_event``).

    Attributes:
        scene: Scene id.
        step: Step name.
        status: ``running``, ``done``, ``failed``, ``skipped`` or ``pending``.
        message: Reason, error or summary.
        seconds: Step duration for ``done`` and ``failed``.
    """

    scene: str
    step: str
    status: EventStatus
    message: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class SceneResult:
    """How one scene ended.

    Attributes:
        scene: Scene id.
        status: ``done``, ``failed`` or ``pending`` (the run was stopped).
        steps: Status per step in this run (``done``, ``skipped``, ``failed``, ``pending``).
        error: The first error message, if a step failed.
    """

    scene: str
    status: str
    steps: dict[str, str]
    error: str | None = None


@dataclass(frozen=True)
class RunReport:
    """What :func:`run_job` did.

    Attributes:
        output: Output root.
        manifest: The manifest file.
        landcover_csv: The land-cover CSV (None when no scene has a summary).
        scenes: One result per scene, in job order.
        ran: Steps run.
        skipped: Steps skipped as up to date.
        failed: Steps failed.
        failed_checks: Judgements that failed (``evaluate.min_miou``), one line each.
        seconds: Wall time.
    """

    output: Path
    manifest: Path
    landcover_csv: Path | None
    scenes: tuple[SceneResult, ...]
    ran: int
    skipped: int
    failed: int
    failed_checks: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """True when every scene finished and every check passed."""
        return not self.failed_checks and all(s.status == "done" for s in self.scenes)

    def format_table(self) -> str:
        """Per-scene step statuses as aligned text."""
        steps = list(self.scenes[0].steps) if self.scenes else []
        w = max([5, *(len(s.scene) for s in self.scenes)])
        lines = [f"{'scene':<{w}}  {'status':<7}  " + "  ".join(f"{s:<9}" for s in steps)]
        for sc in self.scenes:
            cells = "  ".join(f"{sc.steps.get(s, '-'):<9}" for s in steps)
            lines.append(f"{sc.scene:<{w}}  {sc.status:<7}  {cells}".rstrip())
        return "\n".join(lines)


# -- context ------------------------------------------------------------------------------------


class _Cluster:
    """The Dask client: in-process threads, or a scheduler; started on first use."""

    def __init__(self, scheduler: str | None, threads: int) -> None:
        self.scheduler = scheduler
        self.threads = threads
        self._client: Client | None = None
        self._cluster: Any = None
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        return self.scheduler is not None

    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = self._start()
            return self._client

    def _start(self) -> Client:
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            self._cluster = LocalCluster(
                processes=False,
                n_workers=1,
                threads_per_worker=self.threads,
                dashboard_address=None,
                memory_limit=0,
            )
            return Client(self._cluster)
        try:
            client = Client(self.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot connect to the Dask scheduler at {self.scheduler} ({exc}); check the "
                "address and that `dask scheduler` is running"
            ) from None
        logger.info(
            "connected to %s: %d workers, %d threads",
            self.scheduler,
            len(client.nthreads()),
            sum(client.nthreads().values()),
        )
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


@dataclass
class _Ctx:
    job: Job
    manifest: Manifest
    force: bool
    model_sha: str
    emit: Callable[[RunEvent], None]
    cluster: _Cluster | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    csv_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> Path:
        return self.job.output

    def rel(self, p: Path) -> str:
        return os.path.relpath(p, self.root)


def _known_errors() -> tuple[type[BaseException], ...]:
    """Errors that fail a scene (recorded) rather than the run."""
    from concurrent.futures import CancelledError

    from rasterio.errors import RasterioError

    errors: list[type[BaseException]] = [GeosegError, OSError, RasterioError, CancelledError]
    with contextlib.suppress(ImportError):
        from distributed import KilledWorker

        errors.append(KilledWorker)
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, GeosegError):
        text = f"{type(exc).__name__}: {text}"
    return text[:1000]


# -- fingerprints and decisions ------------------------------------------------------------------


def _classes_path(ctx: _Ctx, scene: str) -> Path:
    from geoseg.predict import output_paths

    return output_paths(ctx.root / MAPS_DIR, scene)["classes"]


def _probs_path(ctx: _Ctx, scene: str) -> Path:
    from geoseg.predict import output_paths

    return output_paths(ctx.root / MAPS_DIR, scene)["probs"]


def _recorded_output(ctx: _Ctx, scene: str, step: str, name: str) -> dict[str, Any] | None:
    rec = ctx.manifest.step(scene, step)
    if rec.get("status") not in ("done", "skipped"):
        return None
    for out in rec.get("outputs", []):
        if out["name"] == name:
            return dict(out)
    return None


def _step_inputs(
    ctx: _Ctx, spec: SceneSpec, step: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
    """The step's input files ``{name: {path, sha256}}`` and options.

    None when an upstream output it needs was never recorded (that step has to run first).
    """
    job = ctx.job
    m = ctx.manifest
    inputs: dict[str, dict[str, Any]] = {}

    def add(name: str, path: Path | None) -> None:
        if path is not None:
            inputs[name] = {"path": str(path), "sha256": m.input_sha256(path)}

    def upstream(name: str) -> bool:
        out = _recorded_output(ctx, spec.id, "predict", name)
        if out is None:
            return False
        inputs[name] = {"path": out["path"], "sha256": out["sha256"]}
        return True

    if step == "predict":
        add("image", spec.image)
        add("dsm", spec.dsm)
        add("ndsm", spec.ndsm)
        inputs["model"] = {"path": str(job.model), "sha256": ctx.model_sha}
        opts = job.predict.to_json()
        opts["image_bands"] = list(spec.image_bands) if spec.image_bands else None
        return inputs, opts
    if not upstream("classes"):
        return None
    if step == "landcover":
        return inputs, {"schema": job.schema}
    if step == "vectorize":
        v = job.vectorize
        if v is None:
            raise ConfigError("vectorize is not a step of this job")
        if v.probabilities and not upstream("probabilities"):
            return None
        return inputs, {**v.to_json(), "schema": job.schema}
    if step == "evaluate":
        e = job.evaluate
        if e is None:
            raise ConfigError("evaluate is not a step of this job")
        if spec.labels is None:
            raise InputError(f"scene {spec.id}: no labels to evaluate against")
        add("labels", spec.labels)
        return inputs, {**e.to_json(), "schema": job.schema}
    raise ConfigError(f"unknown step {step!r}")


def _fingerprint(inputs: dict[str, dict[str, Any]], options: dict[str, Any]) -> str:
    ident = {"inputs": {k: v["sha256"] for k, v in inputs.items()}, "options": options}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _what_changed(
    rec: dict[str, Any], inputs: dict[str, dict[str, Any]], options: dict[str, Any]
) -> str:
    old_in = rec.get("inputs", {})
    names = sorted(
        {k for k in inputs if old_in.get(k, {}).get("sha256") != inputs[k]["sha256"]}
        | (set(old_in) - set(inputs))
    )
    if names:
        return "input changed: " + ", ".join(names)
    old_opt = rec.get("options", {})
    diffs = [
        f"{k} {old_opt.get(k)!r} -> {options.get(k)!r}"
        for k in sorted(set(options) | set(old_opt))
        if old_opt.get(k) != options.get(k)
    ]
    if diffs:
        return "options changed: " + ", ".join(diffs)
    return "fingerprint changed"


def _outputs_problem(ctx: _Ctx, rec: dict[str, Any]) -> str | None:
    for out in rec.get("outputs", []):
        p = ctx.root / out["path"]
        if not p.is_file():
            return f"output {out['path']} is missing"
        if sha256_file(p) != out["sha256"]:
            return f"output {out['path']} changed since it was written"
    return None


@dataclass(frozen=True)
class _Decision:
    run: bool
    reason: str
    inputs: dict[str, dict[str, Any]] | None = None
    options: dict[str, Any] | None = None
    fingerprint: str | None = None


def _decide(ctx: _Ctx, spec: SceneSpec, step: str, *, upstream_runs: bool) -> _Decision:
    rec = ctx.manifest.step(spec.id, step)
    if upstream_runs:
        return _Decision(True, "predict runs again")
    found = _step_inputs(ctx, spec, step)
    if found is None:
        return _Decision(True, "new")
    inputs, options = found
    fp = _fingerprint(inputs, options)
    status = rec.get("status")
    if ctx.force:
        why = "--force"
    elif not rec:
        why = "new"
    elif status == "running":
        why = "interrupted: the last run stopped during this step"
    elif status == "failed":
        why = "failed last time"
    elif status not in ("done", "skipped") or not rec.get("fingerprint"):
        why = "not run yet"
    elif rec["fingerprint"] != fp:
        why = _what_changed(rec, inputs, options)
    else:
        problem = _outputs_problem(ctx, rec)
        if problem is None:
            return _Decision(False, "up to date", inputs, options, fp)
        why = problem
    return _Decision(True, why, inputs, options, fp)


# -- steps --------------------------------------------------------------------------------------

Outputs = dict[str, Path]


def _predict(ctx: _Ctx, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    from geoseg.predict import PredictOptions, output_paths, predict_scenes

    p = ctx.job.predict
    out = ctx.root / MAPS_DIR
    if ctx.force:
        shutil.rmtree(output_paths(out, spec.id)["work"], ignore_errors=True)
    options = PredictOptions(
        tile_size=p.tile_size,
        overlap=p.overlap,
        batch_size=p.batch_size,
        device=p.device,
        precision=p.precision,
        tta=p.tta,
        probabilities=p.probabilities,
        blend=p.blend,
        block_size=p.block_size,
        workers=1,  # threads come from the shared cluster; constant so that tags are too
        overwrite=True,  # the manifest decides what runs; an interrupted run still resumes
        creation_options=p.creation_options,
    )
    if ctx.cluster is None:
        raise ConfigError("internal: no Dask cluster for predict")
    (report,) = predict_scenes(
        [spec], ctx.job.model, out, options=options, client=ctx.cluster.client()
    )
    outputs: Outputs = {"classes": report.classes}
    aux = report.classes.with_name(report.classes.name + ".aux.xml")
    if aux.is_file():
        outputs["class_names"] = aux
    if report.probabilities is not None:
        outputs["probabilities"] = report.probabilities
    outputs["sidecar"] = report.sidecar
    extra = {
        "blocks": report.blocks,
        "blocks_resumed": report.blocks_resumed,
        "tiles": report.tiles,
        "tiles_computed": report.tiles_computed,
        "megapixels": round(report.megapixels, 4),
        "warnings": list(report.warnings),
    }
    return outputs, extra


def landcover_task(classes: str, schema: str) -> dict[str, Any]:
    """Land-cover summary of a class raster as JSON-able data (a Dask task)."""
    return landcover_summary(classes, schema=schema).to_dict()


def vectorize_task(classes: str, out: str, options: Any) -> dict[str, int]:
    """Vectorize a class raster; feature count per layer (a Dask task)."""
    from geoseg.vectorize import vectorize_raster

    return dict(vectorize_raster(classes, out, options=options).layers)


def evaluate_task(
    classes: str,
    labels: str,
    out: str,
    *,
    step: EvaluateStep,
    schema: str,
    header: dict[str, Any],
) -> dict[str, Any]:
    """Pixel metrics of a class raster, written as JSON to ``out`` (a Dask task)."""
    from geoseg.evaluate import evaluate_rasters, write_report
    from geoseg.schema import load_schema

    sch = load_schema(schema)
    px = evaluate_rasters(
        classes,
        labels,
        schema=sch,
        eroded=step.eroded,
        ignore_classes=step.ignore_class,
        block_size=step.block_size,
    )
    report = {**header, "schema": sch.name, "eroded": step.eroded, **px.to_dict()}
    write_report(report, out, overwrite=True)
    return {
        "overall_accuracy": report.get("overall_accuracy"),
        "miou": report.get("miou"),
        "mean_f1": report.get("mean_f1"),
    }


def _call(ctx: _Ctx, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` here, or as a task on the cluster when there is a scheduler."""
    if ctx.cluster is not None and ctx.cluster.remote:
        fut = ctx.cluster.client().submit(fn, *args, pure=False, **kwargs)
        try:
            return fut.result()
        finally:
            fut.release()
    return fn(*args, **kwargs)


def _landcover(ctx: _Ctx, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    summary = _call(ctx, landcover_task, str(_classes_path(ctx, spec.id)), ctx.job.schema)
    return {}, {"landcover": summary}


def _vectorize(ctx: _Ctx, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    from geoseg.vectorize import VectorizeOptions

    v: VectorizeStep | None = ctx.job.vectorize
    if v is None:
        raise ConfigError("vectorize is not a step of this job")
    remote = ctx.cluster is not None and ctx.cluster.remote
    options = VectorizeOptions(
        classes=v.classes,
        probabilities=_probs_path(ctx, spec.id) if v.probabilities else None,
        min_area=v.min_area,
        hole_area=v.hole_area,
        simplify=v.simplify,
        regularize=v.regularize,
        centerlines=v.centerlines,
        spur_length=v.spur_length,
        format=v.format,
        block_size=v.block_size,
        workers=1 if remote else v.workers,
        schema=ctx.job.schema,
        overwrite=True,
    )
    suffix = ".gpkg" if v.format == "gpkg" else ""
    out = ctx.root / VECTORS_DIR / f"{spec.id}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    layers = _call(ctx, vectorize_task, str(_classes_path(ctx, spec.id)), str(out), options)
    if out.is_dir():
        outputs = {f"vectors/{f.name}": f for f in sorted(out.iterdir()) if f.is_file()}
    else:
        outputs = {"vectors": out}
    return outputs, {"layers": layers}


def _evaluate(ctx: _Ctx, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    e = ctx.job.evaluate
    if e is None or spec.labels is None:
        raise ConfigError(f"scene {spec.id}: nothing to evaluate against")
    out = ctx.root / METRICS_DIR / f"{spec.id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = _classes_path(ctx, spec.id)
    header = {
        "mode": "pixels",
        "scene": spec.id,
        "prediction": ctx.rel(classes),
        "truth": str(spec.labels),
    }
    metrics = _call(
        ctx,
        evaluate_task,
        str(classes),
        str(spec.labels),
        str(out),
        step=e,
        schema=ctx.job.schema,
        header=header,
    )
    return {"metrics": out}, {"metrics": metrics}


_STEP_FUNCS: dict[str, Callable[[_Ctx, SceneSpec], tuple[Outputs, dict[str, Any]]]] = {
    "predict": _predict,
    "landcover": _landcover,
    "vectorize": _vectorize,
    "evaluate": _evaluate,
}


# -- the scene loop -----------------------------------------------------------------------------


def _run_scene(ctx: _Ctx, spec: SceneSpec) -> SceneResult:
    m = ctx.manifest
    known = _known_errors()
    statuses: dict[str, str] = {}
    first_error: str | None = None
    predict_ok = True
    predict_ran = False
    m.update_scene(spec.id, status="running")
    for step in ctx.job.steps:
        if ctx.stop.is_set():
            statuses[step] = "pending"
            continue
        if step != "predict" and not predict_ok:
            m.update_step(spec.id, step, status="pending", reason="not run: predict failed")
            ctx.emit(RunEvent(spec.id, step, "pending", "not run: predict failed"))
            statuses[step] = "pending"
            continue
        try:
            d = _decide(ctx, spec, step, upstream_runs=predict_ran and step != "predict")
        except known as exc:
            msg = _one_line(exc)
            m.update_step(spec.id, step, status="failed", error=msg, finished=utc_now())
            ctx.emit(RunEvent(spec.id, step, "failed", msg))
            statuses[step] = "failed"
            first_error = first_error or f"{step}: {msg}"
            predict_ok = predict_ok and step != "predict"
            continue
        if not d.run:
            m.update_step(spec.id, step, status="skipped", reason=d.reason, checked=utc_now())
            ctx.emit(RunEvent(spec.id, step, "skipped", d.reason))
            statuses[step] = "skipped"
            continue
        t0 = time.perf_counter()
        m.update_step(
            spec.id,
            step,
            replace=True,
            status="running",
            reason=d.reason,
            started=utc_now(),
            finished=None,
            pid=os.getpid(),
            host=socket.gethostname(),
        )
        ctx.emit(RunEvent(spec.id, step, "running", d.reason))
        try:
            outputs, extra = _STEP_FUNCS[step](ctx, spec)
            found = _step_inputs(ctx, spec, step)  # after predict: its new outputs
            if found is None:
                raise InputError(f"scene {spec.id}: {step} finished but its inputs are gone")
            inputs, options = found
            recorded = [
                {"name": k, "path": ctx.rel(p), "sha256": sha256_file(p), "size": p.stat().st_size}
                for k, p in outputs.items()
            ]
        except known as exc:
            seconds = time.perf_counter() - t0
            msg = _one_line(exc)
            m.update_step(
                spec.id,
                step,
                status="failed",
                error=msg,
                finished=utc_now(),
                seconds=round(seconds, 3),
            )
            logger.error("%s %s failed: %s", spec.id, step, msg)
            ctx.emit(RunEvent(spec.id, step, "failed", msg, seconds))
            statuses[step] = "failed"
            first_error = first_error or f"{step}: {msg}"
            predict_ok = predict_ok and step != "predict"
            continue
        except BaseException as exc:
            m.update_step(spec.id, step, status="failed", error=_one_line(exc), finished=utc_now())
            raise
        seconds = time.perf_counter() - t0
        m.update_step(
            spec.id,
            step,
            status="done",
            finished=utc_now(),
            seconds=round(seconds, 3),
            fingerprint=_fingerprint(inputs, options),
            inputs=inputs,
            options=options,
            outputs=recorded,
            error=None,
            **extra,
        )
        ctx.emit(RunEvent(spec.id, step, "done", _summary_text(step, extra), seconds))
        statuses[step] = "done"
        if step == "predict":
            predict_ran = True
        if step == "landcover":
            _write_csv(ctx)
    if "failed" in statuses.values():
        status = "failed"
    elif "pending" in statuses.values():
        status = "pending"
    else:
        status = "done"
    m.update_scene(spec.id, status=status, error=first_error)
    return SceneResult(spec.id, status, statuses, first_error)


def _summary_text(step: str, extra: dict[str, Any]) -> str:
    if step == "predict":
        resumed = extra.get("blocks_resumed") or 0
        return f"{extra.get('megapixels')} Mpx" + (f", {resumed} blocks resumed" if resumed else "")
    if step == "vectorize":
        return ", ".join(f"{k}: {v}" for k, v in extra.get("layers", {}).items())
    if step == "evaluate":
        miou = extra.get("metrics", {}).get("miou")
        return f"mIoU {miou:.4f}" if isinstance(miou, float) else "mIoU undefined"
    return ""


def _write_csv(ctx: _Ctx) -> Path | None:
    rows: list[tuple[str, LandcoverSummary]] = []
    for spec in ctx.job.scenes:
        rec = ctx.manifest.step(spec.id, "landcover")
        if rec.get("status") in ("done", "skipped") and "landcover" in rec:
            rows.append((spec.id, LandcoverSummary.from_dict(rec["landcover"])))
    if not rows:
        return None
    with ctx.csv_lock:
        return write_landcover_csv(rows, ctx.root / LANDCOVER_CSV)


def _failed_checks(ctx: _Ctx) -> list[str]:
    from geoseg.evaluate import below_minimum

    e = ctx.job.evaluate
    if e is None or e.min_miou is None:
        return []
    out = []
    for spec in ctx.job.scenes:
        rec = ctx.manifest.step(spec.id, "evaluate")
        if rec.get("status") not in ("done", "skipped"):
            continue
        miou = rec.get("metrics", {}).get("miou")
        msg = below_minimum("mIoU", float("nan") if miou is None else float(miou), e.min_miou)
        if msg is not None:
            out.append(f"{spec.id}: {msg}")
    return out


# -- entry points -------------------------------------------------------------------------------


def _check_root(root: Path) -> None:
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


_LEFTOVER = re.compile(r"^\..+\.[0-9a-f]{8}\.partial(?:\..*)?$")
"""Temporary names of atomic writes (``geoseg._io.temp_sibling``)."""


def _clean_leftovers(root: Path) -> None:
    """Remove temporary files that a killed run left (the lock is held: none is in use)."""
    for d in (root, root / MAPS_DIR, root / VECTORS_DIR, root / METRICS_DIR):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if _LEFTOVER.match(p.name):
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
    ctx = _Ctx(job, manifest, force, manifest.input_sha256(job.model), emit=lambda e: None)
    steps: list[StepPlan] = []
    for spec in job.scenes:
        predict_runs = False
        for step in job.steps:
            d = _decide(ctx, spec, step, upstream_runs=predict_runs and step != "predict")
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
        ctx = _Ctx(
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
        cluster = _Cluster(job.scheduler, job.workers)
        ctx.cluster = cluster
        try:
            if job.scheduler is not None:
                cluster.client()  # fail fast when the scheduler cannot be reached
            with _pool(min(job.workers, len(job.scenes))) as pool:
                futures = [pool.submit(_run_scene, ctx, spec) for spec in job.scenes]
                try:
                    results = [f.result() for f in futures]
                except BaseException:
                    ctx.stop.set()  # running scenes stop after their current step
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
            status = "done"
        finally:
            cluster.close()
            csv_path = _write_csv(ctx)
            counts = _counts(results)
            manifest.update_run(
                run_index,
                finished=utc_now(),
                status=status if not counts["failed"] else "failed",
                counts=counts,
            )
            manifest.save()
    checks = _failed_checks(ctx)
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
