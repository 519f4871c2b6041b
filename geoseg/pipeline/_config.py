"""Job files: typed configuration, validated as a whole before anything runs.

A job file is YAML::

    inputs:                        # one or more entries (see geoseg.pipeline._inputs)
      - potsdam: data/potsdam
        ids: [2_13, 2_14]
    model: runs/unet/best.pt
    output: maps/potsdam
    schema: potsdam                # optional; built-in name or YAML/JSON file
    scheduler: tcp://10.0.0.5:8786 # optional Dask scheduler
    workers: 2                     # optional; scenes at once (and local threads)
    steps:
      predict: {tile_size: 512, overlap: 128}
      vectorize: {classes: [building, road], min_area: 4}
      evaluate: {eroded: 3, ignore_class: [clutter]}

The file is read by pydantic models (:class:`JobFile`); the step sections are generated
from the option records of :mod:`geoseg.options`, so a step takes exactly the options,
defaults, choices and bounds of its command (``tile_size`` or ``tile-size`` for
``--tile-size``), and the loaded :class:`Job` holds those records. Relative paths resolve
against the job file's folder. Every problem (unknown keys, with a suggestion; wrong
types; bad values; missing files; steps that do not fit together) is collected and
reported at once as a :class:`JobConfigError`, one line per problem, each naming its YAML
path. :func:`job_json_schema` is the JSON Schema of a job file (``geoseg run --schema``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from geoseg._dask import SCHEDULER_RE
from geoseg.errors import ConfigError
from geoseg.options import EvaluateOptions, PredictOptions, VectorizeOptions, check_overlap
from geoseg.pipeline._inputs import InputEntry, JobInput, resolve_scenes
from geoseg.pipeline._problems import problems_of
from geoseg.pipeline._sections import (
    EvaluateSection,
    ExistingFile,
    JobPath,
    PredictSection,
    Section,
    Steps,
    Text,
    VectorizeSection,
    job_context,
    job_error,
    resolve_path,
)
from geoseg.pipeline._yaml import read_job_yaml
from geoseg.raster import SceneSpec

__all__ = [
    "SCHEDULER_RE",
    "STEPS",
    "Job",
    "JobConfigError",
    "JobFile",
    "job_json_schema",
    "load_job",
]

STEPS = ("predict", "landcover", "vectorize", "evaluate")
"""Steps in the order they run for a scene. ``landcover`` always follows ``predict``."""


_MISSING_HINTS = {"steps.predict": "every job predicts (write `predict: {}` for the defaults)"}


class JobConfigError(ConfigError):
    """A job file has problems; ``problems`` holds one line per problem.

    Attributes:
        path: The job file.
        problems: ``"yaml.path: what is wrong; how to fix it"``, one per problem.
    """

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        n = len(self.problems)
        head = f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was run"
        super().__init__("\n".join([head, *(f"  {p}" for p in self.problems)]))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.problems))


# -- the file as written -----------------------------------------------------------------------


def _version(value: int) -> int:
    if value != 1:
        raise job_error(f"{value}: this geoseg reads job version 1")
    return value


def _scheduler(value: str) -> str:
    if not SCHEDULER_RE.match(value):
        raise job_error(f"{value!r} is not a scheduler address; use tcp://HOST:PORT")
    return value


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


class JobFile(Section):
    """A geoseg job file: scenes, a model and the steps to run for every scene."""

    version: Annotated[int, Strict(), AfterValidator(_version), WithJsonSchema({"const": 1})] = (
        Field(default=1, description="Job file format version.")
    )
    name: Text | None = Field(default=None, description="Job name; default: the file stem.")
    inputs: Annotated[list[InputEntry], BeforeValidator(_listify)] = Field(
        min_length=1, description="Scenes: potsdam, glob, files or image entries."
    )
    model: ExistingFile = Field(description="Checkpoint file (relative to the job file).")
    output: JobPath = Field(description="Output root: manifest, maps, vectors, metrics.")
    class_schema: Text = Field(
        default="potsdam", alias="schema", description="Class schema: built-in name or file."
    )
    scheduler: (
        Annotated[
            Text,
            AfterValidator(_scheduler),
            WithJsonSchema({"type": "string", "pattern": SCHEDULER_RE.pattern}),
        ]
        | None
    ) = Field(default=None, description="Dask scheduler address; default: local threads.")
    workers: Annotated[int, Strict(), Ge(1)] = Field(
        default=2, description="Scenes at once; also the threads of the local scheduler."
    )
    steps: Steps = Field(description="The steps run for every scene.")


def job_json_schema() -> dict[str, Any]:
    """The JSON Schema of a job file (draft 2020-12), from the models that read it."""
    schema = JobFile.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# -- the validated job -------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A validated job.

    Attributes:
        source: The job file.
        name: Job name (default: the file stem).
        inputs: The input entries.
        scenes: The scenes they resolve to (empty when loaded without file checks).
        model: Checkpoint file.
        output: Output root (manifest, lock, maps, vectors, metrics, landcover.csv).
        schema: Class schema: built-in name or file.
        scheduler: Dask scheduler address, or None for local threads.
        workers: Scenes processed at once; also the threads of the local scheduler.
        predict: Predict options (one worker thread per call: the threads come from the
            shared cluster; outputs are replaced: the manifest decides what runs).
        vectorize: Vectorize options, or None when the step is not requested.
        evaluate: Evaluate options, or None when the step is not requested.
        vectorize_probabilities: Vectorize adds ``mean_prob`` from the scene's predicted
            probabilities (``steps.vectorize.probabilities``).
        evaluate_buildings: True building footprints that score the vectorized buildings
            (``steps.evaluate.buildings``), or None.
        evaluate_roads: True road centre-lines that score the vectorized centre-lines
            (``steps.evaluate.roads``), or None.
    """

    source: Path
    name: str
    inputs: tuple[JobInput, ...]
    scenes: tuple[SceneSpec, ...]
    model: Path
    output: Path
    schema: str = "potsdam"
    scheduler: str | None = None
    workers: int = 2
    predict: PredictOptions = field(
        default_factory=lambda: PredictOptions(workers=1, overwrite=True)
    )
    vectorize: VectorizeOptions | None = None
    evaluate: EvaluateOptions | None = None
    vectorize_probabilities: bool = False
    evaluate_buildings: Path | None = None
    evaluate_roads: Path | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps this job runs for every scene, in order."""
        on = {"vectorize": self.vectorize is not None, "evaluate": self.evaluate is not None}
        return tuple(s for s in STEPS if on.get(s, True))


@dataclass
class _Parts:
    """What validated of a job file (all of it, or the pieces that did)."""

    inputs: list[tuple[str, JobInput]]
    model: Path | None
    schema: str | None
    predict: Any = None
    vectorize: Any = None
    evaluate: Any = None
    has_evaluate: bool = False
    dropped: frozenset[str] = frozenset()

    @classmethod
    def of(cls, jf: JobFile) -> _Parts:
        steps = jf.steps
        return cls(
            inputs=[(f"inputs[{i}]", inp) for i, inp in enumerate(jf.inputs)],
            model=jf.model,
            schema=jf.class_schema,
            predict=steps.predict,
            vectorize=steps.vectorize,
            evaluate=steps.evaluate,
            has_evaluate=steps.evaluate is not None,
        )


def _try(adapter: TypeAdapter[Any], value: Any, context: dict[str, Any]) -> Any:
    try:
        return adapter.validate_python(value, context=context)
    except ValidationError:
        return None


def _try_section(
    section: type[Section], value: Any, context: dict[str, Any]
) -> tuple[Any, set[str]]:
    """A step section without its bad keys (their defaults instead), and those keys."""
    data = section.normalize(value)
    try:
        return section.model_validate(data, context=context), set()
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    if not isinstance(data, dict) or not bad:
        return None, set()
    try:
        rest = {k: v for k, v in data.items() if k not in bad}
        return section.model_validate(rest, context=context), bad
    except ValidationError:
        return None, bad


_ENTRY: TypeAdapter[Any] = TypeAdapter(InputEntry)
_FILE: TypeAdapter[Any] = TypeAdapter(ExistingFile)
_TEXT: TypeAdapter[Any] = TypeAdapter(Text)
_SECTIONS: dict[str, type[Section]] = {
    "predict": PredictSection,
    "vectorize": VectorizeSection,
    "evaluate": EvaluateSection,
}


def _salvage(data: dict[Any, Any], context: dict[str, Any]) -> _Parts:
    """The pieces of an invalid job file that validate on their own.

    The checks that look at several pieces (overlap and tile size, vectorize and predict
    probabilities, scenes) run on them, so that their problems are reported together with
    the others.
    """
    top = JobFile.normalize(data)
    raw_inputs = _listify(top.get("inputs"))
    inputs = []
    for i, raw in enumerate(raw_inputs if isinstance(raw_inputs, list) else []):
        entry = _try(_ENTRY, raw, context)
        if entry is not None:
            inputs.append((f"inputs[{i}]", entry))
    steps = Steps.normalize(top.get("steps")) if isinstance(top.get("steps"), dict) else {}
    sections: dict[str, Any] = {}
    dropped: set[str] = set()
    for key, section in _SECTIONS.items():
        if key in steps:
            sections[key], bad = _try_section(section, steps[key], context)
            dropped |= {f"{key}.{k}" for k in bad}
    return _Parts(
        inputs=inputs,
        model=_try(_FILE, top["model"], context) if "model" in top else None,
        schema=_try(_TEXT, top.get("schema", "potsdam"), context),
        predict=sections.get("predict"),
        vectorize=sections.get("vectorize"),
        evaluate=sections.get("evaluate"),
        has_evaluate="evaluate" in steps,
        dropped=frozenset(dropped),
    )


# -- checks across sections --------------------------------------------------------------------


def _check_schema(
    problems: list[str], value: str, base: Path, *, check_files: bool
) -> str | Path | None:
    """The schema as a built-in name or a resolved file; None when it is unusable."""
    from geoseg.errors import SchemaError
    from geoseg.schema import load_schema

    if re.fullmatch(r"[A-Za-z0-9_-]+", value) and not (base / value).exists():
        spec: str | Path = value
    else:
        spec = resolve_path(base, value)
        if not check_files:
            return spec
    try:
        load_schema(spec)
    except SchemaError as exc:
        problems.append(f"schema: {exc}")
        return None
    return spec


def _cross_checks(
    problems: list[str], parts: _Parts, schema: str | Path | None, *, check_files: bool
) -> None:
    from geoseg.errors import CheckpointError, SchemaError
    from geoseg.schema import load_schema

    predict, vectorize, evaluate = parts.predict, parts.vectorize, parts.evaluate
    tile = predict.tile_size if predict is not None else None
    tile_src = "tile_size"
    if parts.model is not None and check_files:
        from geoseg.checkpoint import load_checkpoint

        try:
            ckpt = load_checkpoint(parts.model)
        except CheckpointError as exc:
            problems.append(f"model: {exc}")
        else:
            if tile is None:
                tile, tile_src = ckpt.tile_size, "the checkpoint's tile size"
    overlap = predict.overlap if predict is not None else None
    judged = not {"predict.overlap", "predict.tile_size"} & parts.dropped
    if judged and tile is not None and overlap is not None:
        try:
            check_overlap(tile, overlap)
        except ConfigError:
            problems.append(
                f"steps.predict.overlap: {overlap} must be smaller than {tile_src} ({tile})"
            )
    sch = None
    if schema is not None and (check_files or isinstance(schema, str)):
        try:
            sch = load_schema(schema)
        except SchemaError:
            sch = None  # reported by _check_schema
    if vectorize is not None:
        judged = "predict.probabilities" not in parts.dropped
        if judged and vectorize.probabilities and predict is not None and not predict.probabilities:
            problems.append(
                "steps.vectorize.probabilities: needs steps.predict.probabilities: true "
                "(the probability rasters)"
            )
        if sch is not None:
            known = {"building", "road", *sch.classes}
            bad = [n for n in vectorize.classes if n not in known]
            if bad:
                problems.append(
                    f"steps.vectorize.classes: {', '.join(bad)}: not building, road or a class "
                    f"of schema {sch.name!r} ({', '.join(sch.classes)})"
                )
    if evaluate is not None:
        _check_vector_truth(problems, evaluate, vectorize)
    if evaluate is not None and sch is not None:
        bad = [n for n in evaluate.ignore_class if n not in sch.classes]
        if bad:
            problems.append(
                f"steps.evaluate.ignore_class: {', '.join(bad)}: not a class of schema "
                f"{sch.name!r} ({', '.join(sch.classes)})"
            )


def _check_vector_truth(problems: list[str], evaluate: Any, vectorize: Any) -> None:
    """True vectors need the vectors they score: buildings, and road centre-lines."""
    if getattr(evaluate, "buildings", None) is not None and (
        vectorize is None or "building" not in vectorize.classes
    ):
        problems.append(
            "steps.evaluate.buildings: needs steps.vectorize with classes including building "
            "(the polygons it scores)"
        )
    if getattr(evaluate, "roads", None) is not None and (
        vectorize is None or not vectorize.centerlines
    ):
        problems.append(
            "steps.evaluate.roads: needs steps.vectorize.centerlines: true (the centre-lines "
            "it scores)"
        )


# -- loading -----------------------------------------------------------------------------------


def load_job(path: str | os.PathLike[str], *, check_files: bool = True) -> Job:
    """Read and validate a job file as a whole.

    Args:
        path: The YAML job file.
        check_files: Check that every input, the model and the schema file exist (and
            that the checkpoint loads); False checks structure, types and values only
            (to validate a job written for another machine).

    Returns:
        The job, with its scenes resolved (none when ``check_files`` is false).

    Raises:
        JobConfigError: Every problem found, one line each (a :class:`ConfigError`).
    """
    src = Path(path)
    data, problems, fatal = read_job_yaml(src)
    if fatal:
        raise JobConfigError(src, fatal)
    base = src.resolve().parent
    context = job_context(base, check_files=check_files)
    jf: JobFile | None = None
    try:
        jf = JobFile.model_validate(data, context=context)
    except ValidationError as exc:
        problems += problems_of(exc, JobFile, hints=_MISSING_HINTS)
        if not isinstance(data, dict):
            raise JobConfigError(src, problems) from None
    parts = _Parts.of(jf) if jf is not None else _salvage(data, context)
    schema = None
    if parts.schema is not None:
        schema = _check_schema(problems, parts.schema, base, check_files=check_files)
    _cross_checks(problems, parts, schema, check_files=check_files)
    scenes: list[SceneSpec] = []
    if check_files:
        scene_schema = str(schema) if schema is not None else (parts.schema or "potsdam")
        scenes, more = resolve_scenes(parts.inputs, schema=scene_schema, base=base)
        problems += more
        unlabelled = [s.id for s in scenes if s.labels is None]
        if parts.has_evaluate and unlabelled:
            problems.append(
                f"steps.evaluate: scene(s) {', '.join(unlabelled)} have no labels to evaluate "
                "against; give labels for every scene or drop steps.evaluate"
            )
    if problems or jf is None:
        raise JobConfigError(src, problems or ["the job file is not valid"])
    return _job(src, jf, tuple(scenes), str(schema) if schema is not None else jf.class_schema)


def _job(src: Path, jf: JobFile, scenes: tuple[SceneSpec, ...], schema: str) -> Job:
    steps = jf.steps
    try:
        predict = steps.predict.record(PredictOptions, workers=1, overwrite=True)
        vectorize = None
        if steps.vectorize is not None:
            vectorize = steps.vectorize.record(VectorizeOptions, schema=schema, overwrite=True)
        evaluate = None if steps.evaluate is None else steps.evaluate.record(EvaluateOptions)
    except ConfigError as exc:  # the checks above should have caught it
        raise JobConfigError(src, [f"steps: {exc}"]) from None
    return Job(
        source=src.resolve(),
        name=jf.name or src.stem,
        inputs=tuple(jf.inputs),
        scenes=scenes,
        model=jf.model,
        output=jf.output,
        schema=schema,
        scheduler=jf.scheduler,
        workers=jf.workers,
        predict=predict,
        vectorize=vectorize,
        evaluate=evaluate,
        vectorize_probabilities=bool(steps.vectorize and steps.vectorize.probabilities),
        evaluate_buildings=steps.evaluate.buildings if steps.evaluate is not None else None,
        evaluate_roads=steps.evaluate.roads if steps.evaluate is not None else None,
    )
