"""The steps of a scene: predict, landcover, vectorize, evaluate.

Each step takes the run's context and a scene, passes the job's option record to the
library, and returns its outputs (``{name: path}``, recorded with their checksums) and
extra data for the manifest. Predict is scheduled by the run's Dask client; with a
scheduler, the other steps run as tasks on its workers (:func:`landcover_task`,
:func:`vectorize_task`, :func:`evaluate_task`: paths in, files written atomically).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError
from geoseg.options import EvaluateOptions
from geoseg.pipeline._context import (
    MAPS_DIR,
    METRICS_DIR,
    VECTORS_DIR,
    RunContext,
    classes_path,
    contact_path,
    probs_path,
    vector_output,
)
from geoseg.pipeline._summary import landcover_summary
from geoseg.raster import SceneSpec
from geoseg.raster.qml import qml_path
from geoseg.raster.remote import RasterPath

logger = logging.getLogger(__name__)

__all__ = [
    "STEP_FUNCS",
    "Outputs",
    "StepFunc",
    "evaluate_task",
    "landcover_task",
    "vectorize_task",
]

Outputs = dict[str, Path]
StepFunc = Callable[[RunContext, SceneSpec], tuple[Outputs, dict[str, Any]]]


def _predict(ctx: RunContext, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    from geoseg.predict import output_paths, predict_scenes

    out = ctx.root / MAPS_DIR
    if ctx.force:
        shutil.rmtree(output_paths(out, spec.id)["work"], ignore_errors=True)
    if ctx.cluster is None:
        raise ConfigError("internal: no Dask cluster for predict")
    # job.predict: one thread per call (the threads are the shared cluster's, and the
    # options are recorded in the outputs' tags), outputs replaced (the manifest decides).
    (report,) = predict_scenes(
        [spec], ctx.job.model, out, options=ctx.job.predict, client=ctx.cluster.client()
    )
    outputs: Outputs = {"classes": report.classes}
    aux = report.classes.with_name(report.classes.name + ".aux.xml")
    if aux.is_file():
        outputs["class_names"] = aux
    if report.probabilities is not None:
        outputs["probabilities"] = report.probabilities
    # the model's extra outputs by name: "contact" (building contact, uint8 0..255)
    outputs.update(report.extras)
    # the QGIS styles beside the rasters ({stem}.qml: the exact legend, loaded on open)
    for name in ["classes", "probabilities", *report.extras]:
        style = qml_path(outputs[name]) if name in outputs else None
        if style is not None and style.is_file():
            outputs["class_style" if name == "classes" else f"{name}_style"] = style
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
    options: EvaluateOptions,
    schema: str,
    header: dict[str, Any],
    buildings: tuple[str, str] | None = None,
    roads: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Pixel metrics of a class raster, written as JSON to ``out`` (a Dask task).

    ``buildings`` and ``roads`` are ``(predicted vectors, true vectors)`` pairs: the truth is
    clipped to the class raster's extent, and the object metrics (``buildings``) and road
    graph metrics (``roads``) join the report.
    """
    import rasterio

    from geoseg.evaluate import evaluate_rasters, evaluate_roads, evaluate_vectors, write_report
    from geoseg.schema import load_schema

    sch = load_schema(schema)
    px = evaluate_rasters(
        classes,
        labels,
        schema=sch,
        eroded=options.eroded,
        ignore_classes=options.ignore_class,
        block_size=options.block_size,
    )
    report = {**header, "schema": sch.name, "eroded": options.eroded, **px.to_dict()}
    summary = {
        "overall_accuracy": report.get("overall_accuracy"),
        "miou": report.get("miou"),
        "mean_f1": report.get("mean_f1"),
    }
    extent = None
    if buildings is not None or roads is not None:  # the truth is clipped to the scene
        with rasterio.open(classes) as ds:
            extent = tuple(ds.bounds)
    if buildings is not None:
        obj = evaluate_vectors(
            buildings[0],
            buildings[1],
            layer="buildings",
            extent=extent,
        ).to_dict()
        report["buildings"] = obj
        summary["building_f1"] = obj.get("f1")
    if roads is not None:
        net = evaluate_roads(
            roads[0],
            roads[1],
            layer="road_centerlines",
            buffer=options.road_buffer,
            snap=options.road_snap,
            spacing=options.road_spacing,
            max_pairs=options.road_max_pairs,
            extent=extent,
        ).to_dict()
        report["roads"] = net
        summary["apls"] = net.get("apls")
    write_report(report, out, overwrite=True)
    return summary


def _call(ctx: RunContext, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` here, or as a task on the cluster when there is a scheduler."""
    if ctx.cluster is not None and ctx.cluster.remote:
        fut = ctx.cluster.client().submit(fn, *args, pure=False, **kwargs)
        try:
            return fut.result()
        finally:
            fut.release()
    return fn(*args, **kwargs)


def _landcover(ctx: RunContext, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    summary = _call(ctx, landcover_task, str(classes_path(ctx, spec.id)), ctx.job.schema)
    return {}, {"landcover": summary}


def _vectorize(ctx: RunContext, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    v = ctx.job.vectorize
    if v is None:
        raise ConfigError("vectorize is not a step of this job")
    remote = ctx.cluster is not None and ctx.cluster.remote
    dsm, contact = _split_sources(ctx, spec)
    options = replace(
        v,
        probabilities=probs_path(ctx, spec.id) if ctx.job.vectorize_probabilities else None,
        workers=1 if remote else v.workers,  # a cluster task uses one process
        dsm=dsm,
        contact=contact,
    )
    suffix = ".gpkg" if v.format == "gpkg" else ""
    out = ctx.root / VECTORS_DIR / f"{spec.id}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    layers = _call(ctx, vectorize_task, str(classes_path(ctx, spec.id)), str(out), options)
    if out.is_dir():
        outputs = {f"vectors/{f.name}": f for f in sorted(out.iterdir()) if f.is_file()}
    else:
        outputs = {"vectors": out}
    return outputs, {"layers": layers}


def _split_sources(ctx: RunContext, spec: SceneSpec) -> tuple[Path | None, Path | None]:
    """The scene's height and contact rasters when the job splits buildings (else none).

    The nDSM (or the DSM) gives the roof heights; the contact band is there when the model
    has a contact output. Either may be absent: the split uses what there is.
    """
    v = ctx.job.vectorize
    if v is None or not v.split_buildings:
        return None, None
    contact = contact_path(ctx, spec.id)
    height: RasterPath | None = spec.ndsm if spec.ndsm is not None else spec.dsm
    if isinstance(height, str):  # vectorize reads heights from local files only
        logger.warning("%s: a remote height raster; buildings are split without heights", height)
        height = None
    return height, contact if contact.is_file() else None


def _evaluate(ctx: RunContext, spec: SceneSpec) -> tuple[Outputs, dict[str, Any]]:
    e = ctx.job.evaluate
    if e is None or spec.labels is None:
        raise ConfigError(f"scene {spec.id}: nothing to evaluate against")
    out = ctx.root / METRICS_DIR / f"{spec.id}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    classes = classes_path(ctx, spec.id)
    header = {
        "mode": "pixels",
        "scene": spec.id,
        "prediction": ctx.rel(classes),
        "truth": str(spec.labels),
    }
    pairs: dict[str, tuple[str, str] | None] = {"buildings": None, "roads": None}
    for key, layer, truth in (
        ("buildings", "buildings", ctx.job.evaluate_buildings),
        ("roads", "road_centerlines", ctx.job.evaluate_roads),
    ):
        if truth is not None:
            pairs[key] = (str(vector_output(ctx, spec.id, layer)[1]), str(truth))
    metrics = _call(
        ctx,
        evaluate_task,
        str(classes),
        str(spec.labels),
        str(out),
        options=e,
        schema=ctx.job.schema,
        header=header,
        **pairs,
    )
    return {"metrics": out}, {"metrics": metrics}


STEP_FUNCS: dict[str, StepFunc] = {
    "predict": _predict,
    "landcover": _landcover,
    "vectorize": _vectorize,
    "evaluate": _evaluate,
}
"""The function of each step."""
