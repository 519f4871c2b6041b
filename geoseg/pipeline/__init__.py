"""Scheduled batch jobs: a YAML job -> predict, land cover, vectorize, evaluate per scene.

:func:`load_job` validates a job file as a whole (:mod:`._config`); :func:`plan_job` says
what a run would do; :func:`run_job` runs it under a lock on the output root, skipping
steps that are up to date and recording everything in a manifest (:mod:`._manifest`);
:func:`landcover_summary` computes the area per class of a class raster (:mod:`._summary`).

Example:
    >>> from geoseg.pipeline import load_job, run_job
    >>> report = run_job(load_job("pipelines/demo.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from geoseg.pipeline._config import (
    STEPS,
    EvaluateStep,
    FilesInput,
    ImageInput,
    Job,
    JobConfigError,
    JobInput,
    PotsdamInput,
    PredictStep,
    VectorizeStep,
    load_job,
)
from geoseg.pipeline._manifest import LOCK_NAME, MANIFEST_NAME, Manifest, RunLock, RunLockedError
from geoseg.pipeline._runner import (
    LANDCOVER_CSV,
    RunEvent,
    RunPlan,
    RunReport,
    SceneResult,
    StepPlan,
    plan_job,
    run_job,
)
from geoseg.pipeline._summary import LandcoverSummary, landcover_summary, write_landcover_csv

__all__ = [
    "LANDCOVER_CSV",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "STEPS",
    "EvaluateStep",
    "FilesInput",
    "ImageInput",
    "Job",
    "JobConfigError",
    "JobInput",
    "LandcoverSummary",
    "Manifest",
    "PotsdamInput",
    "PredictStep",
    "RunEvent",
    "RunLock",
    "RunLockedError",
    "RunPlan",
    "RunReport",
    "SceneResult",
    "StepPlan",
    "VectorizeStep",
    "landcover_summary",
    "load_job",
    "plan_job",
    "run_job",
    "write_landcover_csv",
]
