"""Scheduled batch jobs: a YAML job -> predict, land cover, vectorize, evaluate per scene.

:func:`load_job` validates a job file as a whole (:mod:`._config`, with pydantic models
whose step sections come from :mod:`geoseg.options`); :func:`job_json_schema` is the JSON
Schema of a job file; :func:`plan_job` says what a run would do; :func:`run_job` runs it
under a lock on the output root, skipping steps that are up to date and recording
everything in a manifest (:mod:`._manifest`); :func:`landcover_summary` computes the area
per class of a class raster (:mod:`._summary`).

Modules: ``_yaml`` (reading the file), ``_sections`` and ``_inputs`` (the models),
``_problems`` (errors as YAML-path lines), ``_config`` (the job), ``_results`` (plans and
reports), ``_context`` (what steps share, the Dask client), ``_decide`` (fingerprints),
``_steps`` (the steps), ``_scene`` (the scene loop), ``_runner`` (entry points).

Example:
    >>> from geoseg.pipeline import load_job, run_job
    >>> report = run_job(load_job("pipelines/demo.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from geoseg.pipeline._config import (
    SCHEDULER_RE,
    STEPS,
    Job,
    JobConfigError,
    JobFile,
    job_json_schema,
    load_job,
)
from geoseg.pipeline._inputs import FilesInput, ImageInput, JobInput, PotsdamInput
from geoseg.pipeline._manifest import LOCK_NAME, MANIFEST_NAME, Manifest, RunLock, RunLockedError
from geoseg.pipeline._results import RunEvent, RunPlan, RunReport, SceneResult, StepPlan
from geoseg.pipeline._runner import LANDCOVER_CSV, plan_job, run_job
from geoseg.pipeline._summary import LandcoverSummary, landcover_summary, write_landcover_csv

__all__ = [
    "LANDCOVER_CSV",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "SCHEDULER_RE",
    "STEPS",
    "FilesInput",
    "ImageInput",
    "Job",
    "JobConfigError",
    "JobFile",
    "JobInput",
    "LandcoverSummary",
    "Manifest",
    "PotsdamInput",
    "RunEvent",
    "RunLock",
    "RunLockedError",
    "RunPlan",
    "RunReport",
    "SceneResult",
    "StepPlan",
    "job_json_schema",
    "landcover_summary",
    "load_job",
    "plan_job",
    "run_job",
    "write_landcover_csv",
]
