"""The scene loop: one scene through its steps, each recorded in the manifest.

:func:`run_scene` decides, runs and records every step of a scene in order. A step that
fails with a known error is recorded as failed and the steps that need predict's outputs
are left pending; any other exception is recorded, then raised (a bug).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from geoseg.errors import InputError
from geoseg.pipeline._context import LANDCOVER_CSV, RunContext, known_errors, one_line
from geoseg.pipeline._decide import decide, fingerprint, step_inputs
from geoseg.pipeline._manifest import sha256_file, utc_now
from geoseg.pipeline._results import RunEvent, SceneResult
from geoseg.pipeline._steps import STEP_FUNCS
from geoseg.pipeline._summary import LandcoverSummary, write_landcover_csv
from geoseg.raster import SceneSpec

__all__ = ["failed_checks", "run_scene", "write_csv"]

logger = logging.getLogger(__name__)


def run_scene(ctx: RunContext, spec: SceneSpec) -> SceneResult:
    """Run the steps of one scene that are not up to date; record each in the manifest."""
    m = ctx.manifest
    known = known_errors()
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
            d = decide(ctx, spec, step, upstream_runs=predict_ran and step != "predict")
        except known as exc:
            msg = one_line(exc)
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
            outputs, extra = STEP_FUNCS[step](ctx, spec)
            found = step_inputs(ctx, spec, step)  # after predict: its new outputs
            if found is None:
                raise InputError(f"scene {spec.id}: {step} finished but its inputs are gone")
            inputs, options = found
            recorded = [
                {"name": k, "path": ctx.rel(p), "sha256": sha256_file(p), "size": p.stat().st_size}
                for k, p in outputs.items()
            ]
        except known as exc:
            seconds = time.perf_counter() - t0
            msg = one_line(exc)
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
            m.update_step(spec.id, step, status="failed", error=one_line(exc), finished=utc_now())
            raise
        seconds = time.perf_counter() - t0
        m.update_step(
            spec.id,
            step,
            status="done",
            finished=utc_now(),
            seconds=round(seconds, 3),
            fingerprint=fingerprint(inputs, options),
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
            write_csv(ctx)
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


def write_csv(ctx: RunContext) -> Path | None:
    """Write the land-cover CSV of every scene summarised so far; None when none is."""
    rows: list[tuple[str, LandcoverSummary]] = []
    for spec in ctx.job.scenes:
        rec = ctx.manifest.step(spec.id, "landcover")
        if rec.get("status") in ("done", "skipped") and "landcover" in rec:
            rows.append((spec.id, LandcoverSummary.from_dict(rec["landcover"])))
    if not rows:
        return None
    with ctx.csv_lock:
        return write_landcover_csv(rows, ctx.root / LANDCOVER_CSV)


def failed_checks(ctx: RunContext) -> list[str]:
    """The scenes whose mIoU is below ``evaluate.min_miou``, one line each."""
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
