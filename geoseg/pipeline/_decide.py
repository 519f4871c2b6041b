"""Fingerprints and decisions: does a step of a scene run, or is it up to date?

A step's fingerprint is the SHA-256 of its input files' checksums and its options. A step
is up to date when its last run finished with the same fingerprint and every output it
recorded still exists with the recorded checksum; otherwise :func:`decide` says why it
runs (``new``, ``input changed: dsm``, ``options changed: min_area 1.0 -> 50.0``...).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, InputError
from geoseg.options import option_fields
from geoseg.pipeline._context import RunContext, vector_output
from geoseg.pipeline._manifest import sha256_file
from geoseg.raster import SceneSpec
from geoseg.raster.remote import RasterPath

__all__ = ["Decision", "decide", "fingerprint", "options_json", "step_inputs"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def options_json(record: Any, *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The job options of an option record as JSON-able data (for fingerprints).

    Only the fields a job file sets count (``job=True``); ``drop`` leaves out more
    (options that do not change the result, such as ``workers``).
    """
    return {
        f.name: _jsonable(getattr(record, f.name))
        for f, spec, _ in option_fields(type(record))
        if spec.job and f.name not in drop
    }


def _recorded_output(ctx: RunContext, scene: str, step: str, name: str) -> dict[str, Any] | None:
    rec = ctx.manifest.step(scene, step)
    if rec.get("status") not in ("done", "skipped"):
        return None
    for out in rec.get("outputs", []):
        if out["name"] == name:
            return dict(out)
    return None


def step_inputs(
    ctx: RunContext, spec: SceneSpec, step: str
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]] | None:
    """The step's input files ``{name: {path, sha256}}`` and options.

    None when an upstream output it needs was never recorded (that step has to run first).
    """
    job = ctx.job
    m = ctx.manifest
    inputs: dict[str, dict[str, Any]] = {}

    def add(name: str, path: RasterPath | None) -> None:
        if isinstance(path, str):  # a remote file: named, not hashed (taken as unchanged)
            inputs[name] = {"path": path, "sha256": None}
        elif path is not None:
            inputs[name] = {"path": str(path), "sha256": m.input_sha256(path)}

    def upstream(name: str, step: str = "predict") -> bool:
        out = _recorded_output(ctx, spec.id, step, name)
        if out is None:
            return False
        inputs[name] = {"path": out["path"], "sha256": out["sha256"]}
        return True

    if step == "predict":
        add("image", spec.image)
        add("dsm", spec.dsm)
        add("ndsm", spec.ndsm)
        inputs["model"] = {"path": str(job.model), "sha256": ctx.model_sha}
        opts = options_json(job.predict, drop=("allow_mixed_devices",))
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
        if job.vectorize_probabilities and not upstream("probabilities"):
            return None
        if v.split_buildings:  # the roof heights and, when the model has it, the contact band
            add("split_height", spec.ndsm if spec.ndsm is not None else spec.dsm)
            upstream("contact")
        opts = options_json(v, drop=("workers",))
        return inputs, {**opts, "probabilities": job.vectorize_probabilities, "schema": job.schema}
    if step == "evaluate":
        e = job.evaluate
        if e is None:
            raise ConfigError("evaluate is not a step of this job")
        if spec.labels is None:
            raise InputError(f"scene {spec.id}: no labels to evaluate against")
        add("labels", spec.labels)
        add("truth_buildings", job.evaluate_buildings)
        add("truth_roads", job.evaluate_roads)
        layers = [("buildings", job.evaluate_buildings), ("road_centerlines", job.evaluate_roads)]
        for layer, truth in layers:
            name = vector_output(ctx, spec.id, layer)[0]
            if truth is not None and not upstream(name, "vectorize"):
                return None
        # min_miou is a judgement of the result, not an input of the step.
        return inputs, {**options_json(e, drop=("min_miou",)), "schema": job.schema}
    raise ConfigError(f"unknown step {step!r}")


def fingerprint(inputs: dict[str, dict[str, Any]], options: dict[str, Any]) -> str:
    """The SHA-256 of a step's input checksums and options."""
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


def _outputs_problem(ctx: RunContext, rec: dict[str, Any]) -> str | None:
    for out in rec.get("outputs", []):
        p = ctx.root / out["path"]
        if not p.is_file():
            return f"output {out['path']} is missing"
        if sha256_file(p) != out["sha256"]:
            return f"output {out['path']} changed since it was written"
    return None


@dataclass(frozen=True)
class Decision:
    """Whether a step runs, and why.

    Attributes:
        run: The step runs.
        reason: Why it runs, or ``up to date``.
        inputs: Its input files, when they are known before it runs.
        options: Its options, likewise.
        fingerprint: Its fingerprint, likewise.
    """

    run: bool
    reason: str
    inputs: dict[str, dict[str, Any]] | None = None
    options: dict[str, Any] | None = None
    fingerprint: str | None = None


def decide(ctx: RunContext, spec: SceneSpec, step: str, *, upstream_runs: bool) -> Decision:
    """Whether ``step`` of scene ``spec`` runs (``upstream_runs``: predict runs again)."""
    rec = ctx.manifest.step(spec.id, step)
    if upstream_runs:
        return Decision(True, "predict runs again")
    found = step_inputs(ctx, spec, step)
    if found is None:
        return Decision(True, "new")
    inputs, options = found
    fp = fingerprint(inputs, options)
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
            return Decision(False, "up to date", inputs, options, fp)
        why = problem
    return Decision(True, why, inputs, options, fp)
