"""The sections of a job file as pydantic models; the step sections come from geoseg.options.

Every section is a :class:`Section`: unknown keys are refused (``extra="forbid"``), keys
spelled with ``-`` count as ``_`` (``tile-size`` is ``tile_size``), declared aliases count
as their key (``size`` is ``tile_size``; both given is a problem), and an empty section
(``evaluate:``) means the defaults.

The step sections are not declared here: :func:`step_section` builds each from the option
record of its command (:class:`~geoseg.options.PredictOptions`,
:class:`~geoseg.options.VectorizeOptions`, :class:`~geoseg.options.EvaluateOptions`), from
the fields whose :class:`~geoseg.options.OptionSpec` has ``job=True``: the key, aliases,
default, minimum, maximum, choices (or pattern) and help are the command line's. Integers
and booleans are strict (``yes`` is not true, ``1.5`` is not an integer); a number field
takes integers.
:meth:`Section.record` turns a validated step section back into its record.

Path fields resolve against the job file's folder and, when files are checked, must exist;
both come from the validation context (:func:`job_context`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_origin

from annotated_types import Ge, Le
from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    ValidationInfo,
    WithJsonSchema,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from geoseg.options import (
    EvaluateOptions,
    PredictOptions,
    VectorizeOptions,
    option_fields,
    strip_optional,
)
from geoseg.options import field_default as record_default
from geoseg.raster.remote import is_remote

__all__ = [
    "BandNames",
    "CreationOptions",
    "EvaluateSection",
    "ExistingDir",
    "ExistingFile",
    "JobPath",
    "Names",
    "PredictSection",
    "RasterFile",
    "Section",
    "Steps",
    "Template",
    "Text",
    "TileIds",
    "VectorizeSection",
    "checks_files",
    "describe",
    "job_context",
    "job_error",
    "resolve_path",
    "step_section",
]

_R = TypeVar("_R")

_BAND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TILE_ID_RE = re.compile(r"^\d+_\d+$")
_CO_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- messages and context ------------------------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a YAML value for messages (``text 'gpu'``, ``a list``)."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def job_error(message: str, *, key: str | None = None) -> PydanticCustomError:
    """A validation error with a finished message; ``key`` extends its YAML path."""
    ctx: dict[str, Any] = {"message": message}
    if key is not None:
        ctx["key"] = key
    return PydanticCustomError("job", "{message}", ctx)


def job_context(base: Path, *, check_files: bool) -> dict[str, Any]:
    """The validation context of a job file: its folder and whether files must exist."""
    return {"base": base, "check_files": check_files}


def _base(info: ValidationInfo) -> Path | None:
    ctx = info.context if isinstance(info.context, Mapping) else {}
    base = ctx.get("base")
    return base if isinstance(base, Path) else None


def checks_files(info: ValidationInfo) -> bool:
    """Whether this validation checks that files exist."""
    ctx = info.context if isinstance(info.context, Mapping) else {}
    return bool(ctx.get("check_files", False))


def resolve_path(base: Path | None, value: str) -> Path:
    """``value`` (``~`` expanded) relative to ``base``, normalised."""
    p = Path(os.path.expanduser(value))
    if not p.is_absolute() and base is not None:
        p = base / p
    return Path(os.path.normpath(p))


# -- value types ---------------------------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise job_error(f"expected text, got {describe(value)}")
    return value.strip()


Text = Annotated[str, BeforeValidator(_text)]
"""Non-empty text, stripped."""


def _path(value: Any, info: ValidationInfo) -> Path:
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise job_error(f"expected a path, got {describe(value)}")
    return resolve_path(_base(info), value)


def _exists(kind: Literal["file", "dir"]) -> Any:
    def check(p: Path, info: ValidationInfo) -> Path:
        if not checks_files(info):
            return p
        if not p.exists():
            raise job_error(f"{p} does not exist; fix the path (relative to {_base(info)})")
        if kind == "file" and not p.is_file():
            raise job_error(f"{p} is a folder; give a file")
        if kind == "dir" and not p.is_dir():
            raise job_error(f"{p} is a file; give a folder")
        return p

    return AfterValidator(check)


JobPath = Annotated[Path, BeforeValidator(_path)]
"""A path relative to the job file's folder."""
ExistingFile = Annotated[JobPath, _exists("file")]
"""A file relative to the job file's folder; it must exist when files are checked."""
ExistingDir = Annotated[JobPath, _exists("dir")]
"""A folder relative to the job file's folder; it must exist when files are checked."""


def _raster(value: Any, info: ValidationInfo) -> Path | str:
    if isinstance(value, str) and is_remote(value.strip()):
        return value.strip()
    return _path(value, info)


def _local_exists(p: Path | str, info: ValidationInfo) -> Path | str:
    return p if isinstance(p, str) else _exists("file").func(p, info)


RasterFile = Annotated[Path | str, BeforeValidator(_raster), AfterValidator(_local_exists)]
"""An existing file like :data:`ExistingFile`, or a remote raster or STAC item URL
(``https://...``, ``/vsicurl/...``, ``s3://...``), kept as given."""


def _names(value: Any) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            if not isinstance(v, str | int) or isinstance(v, bool):
                raise job_error(f"item {i} is {describe(v)}; expected a name")
            items.append(str(v).strip())
    else:
        raise job_error(
            f"expected a list of names or a comma-separated text, got {describe(value)}"
        )
    items = [v for v in items if v]
    if not items:
        raise job_error("give at least one name")
    dups = sorted({v for v in items if items.count(v) > 1})
    if dups:
        raise job_error(f"{', '.join(dups)} given more than once")
    return tuple(items)


_NAMES_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True},
        {"type": "string", "description": "comma-separated names"},
    ]
}

Names = Annotated[tuple[str, ...], BeforeValidator(_names), WithJsonSchema(_NAMES_SCHEMA)]
"""Distinct names: a YAML list or one comma-separated text (``building,road``)."""


def _band_names(names: tuple[str, ...]) -> tuple[str, ...]:
    bad = [n for n in names if not _BAND_RE.match(n)]
    if bad:
        raise job_error(
            f"band names must be lower-case identifiers (like nir, dsm): {', '.join(bad)}"
        )
    return names


def _tile_ids(ids: tuple[str, ...]) -> tuple[str, ...]:
    bad = [i for i in ids if not _TILE_ID_RE.match(i)]
    if bad:
        raise job_error(f"{', '.join(bad)}: not Potsdam tile ids; use ROW_COL such as 2_13")
    return ids


BandNames = Annotated[Names, AfterValidator(_band_names)]
"""Band names in file order (lower-case identifiers such as ``nir``)."""
TileIds = Annotated[Names, AfterValidator(_tile_ids)]
"""Potsdam tile ids (``2_13``; YAML 1.2 reads them as text without quotes)."""


def _template(value: str) -> str:
    try:
        value.format(stem="x")
    except (KeyError, IndexError, ValueError):
        raise job_error(f"{value!r}: the only placeholder allowed is {{stem}}") from None
    return value


Template = Annotated[Text, AfterValidator(_template)]
"""A path template relative to the job file; ``{stem}`` is the image file's stem."""


def _creation_options(value: Any) -> Any:
    items: list[tuple[str, str]] = []
    if isinstance(value, tuple):  # already pairs (a record's value)
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, bool):
                v = "YES" if v else "NO"
            items.append((str(k), str(v)))
    elif isinstance(value, list | str):
        for s in [value] if isinstance(value, str) else value:
            key, sep, val = str(s).partition("=")
            if not sep:
                raise job_error(f"{s!r} is not of the form KEY=VAL (e.g. COMPRESS=DEFLATE)")
            items.append((key.strip(), val.strip()))
    else:
        raise job_error(f"expected KEY: VALUE pairs or a list of KEY=VAL, got {describe(value)}")
    for k, _ in items:
        if not _CO_KEY_RE.match(k):
            raise job_error(f"{k!r} is not a GDAL creation option name")
    return tuple((k.upper(), v) for k, v in items)


_CO_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "propertyNames": {"pattern": _CO_KEY_RE.pattern},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        },
        {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*="}},
    ],
    "examples": [{"COMPRESS": "DEFLATE"}],
}

CreationOptions = Annotated[
    tuple[tuple[str, str], ...], BeforeValidator(_creation_options), WithJsonSchema(_CO_SCHEMA)
]
"""GDAL creation options: ``{KEY: VAL}`` or ``[KEY=VAL, ...]``; keys are upper-cased."""


# -- sections ------------------------------------------------------------------------------


def _summary_only(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """JSON Schema descriptions: a model's docstring summary, without its Attributes."""
    doc = schema.get("description")
    if isinstance(doc, str):
        schema["description"] = doc.split("\n\n")[0].replace("\n", " ")


class Section(BaseModel):
    """A mapping of a job file: unknown keys refused, ``-`` read as ``_``, aliases honoured.

    Attributes:
        job_aliases: Other accepted spellings of keys (``{"size": "tile_size"}``).
        record_fields: For a step section: its key -> the record's field name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_summary_only)

    job_aliases: ClassVar[dict[str, str]] = {}
    record_fields: ClassVar[dict[str, str]] = {}

    @classmethod
    def job_keys(cls) -> list[str]:
        """The keys of this section as written in a job file."""
        return [f.alias or name for name, f in cls.model_fields.items()]

    @classmethod
    def canonical_key(cls, key: str) -> str:
        """The key that a spelling stands for (``tile-size`` and ``size``: ``tile_size``)."""
        norm = key.replace("-", "_")
        return cls.job_aliases.get(norm, norm)

    @classmethod
    def normalize(cls, data: Any) -> Any:
        """``data`` with its keys as this section declares them (a mapping; else as is).

        ``-`` is read as ``_`` and aliases as their key; a second spelling of a key that is
        already given stays as written, so that it is refused as a repeat. An empty value
        is an empty mapping.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            return data
        keys = set(cls.job_keys())
        out: dict[str, Any] = {k: v for k, v in data.items() if isinstance(k, str) and k in keys}
        for key, value in data.items():
            if isinstance(key, str) and key in keys:
                continue
            name = str(key)
            canonical = cls.canonical_key(name)
            out[canonical if canonical in keys and canonical not in out else name] = value
        return cls._prepare(out)

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        return cls.normalize(data)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    def record(self, record: type[_R], **extra: Any) -> _R:
        """The option record of a step section, with the fields a job sets itself."""
        values = {name: getattr(self, key) for key, name in self.record_fields.items()}
        return record(**values, **extra)


def _matching(pattern: str, values: tuple[str, ...]) -> Any:
    """Text that matches ``pattern`` (an option declared with one, such as a device)."""
    forms = ", ".join(values) if values else f"text matching {pattern}"

    def check(value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise job_error(f"{describe(value)} is not one of {forms}")
        return value

    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if values:
        schema["examples"] = [v for v in values if re.fullmatch(pattern, v)]
    return Annotated[str, BeforeValidator(check), WithJsonSchema(schema)]


def _job_type(
    tp: Any,
    minimum: float | None,
    maximum: float | None,
    pattern: str | None = None,
    values: tuple[str, ...] = (),
) -> Any:
    """The pydantic type of an option field: strict, bounded, with its choices or pattern."""
    inner, optional = strip_optional(tp)
    bounds: list[Any] = []
    if minimum is not None:
        bounds.append(Ge(minimum))
    if maximum is not None:
        bounds.append(Le(maximum))
    out: Any
    if inner is str and pattern is not None:
        out = _matching(pattern, values)
    elif get_origin(inner) is Literal or inner is bool:
        out = StrictBool if inner is bool else inner
    elif inner is int:
        out = Annotated[(int, Strict(), *bounds)]
    elif inner is float:
        out = Annotated[(float, Strict(), AllowInfNan(False), *bounds)]
    elif inner == tuple[str, ...]:
        out = Names
    elif inner == tuple[tuple[str, str], ...]:
        out = CreationOptions
    else:
        raise TypeError(f"no job-file type for option type {tp!r}")
    return out | None if optional else out


def step_section(record: type) -> type[Section]:
    """A section model built from the job fields of an option record.

    A step section subclasses it: ``class PredictSection(step_section(PredictOptions))``
    (and may add job-only keys).

    Args:
        record: The option record (e.g. :class:`~geoseg.options.PredictOptions`).
    """
    fields: dict[str, Any] = {}
    aliases: dict[str, str] = {}
    record_fields: dict[str, str] = {}
    for f, spec, tp in option_fields(record):
        if not spec.job:
            continue
        key = spec.key or f.name
        record_fields[key] = f.name
        aliases.update(dict.fromkeys(spec.aliases, key))
        help_text = spec.help
        if spec.aliases:
            help_text = f"{help_text} Also spelled: {', '.join(spec.aliases)}."
        if spec.show_default:
            help_text = f"{help_text} Default: {spec.show_default}."
        if callable(f.default_factory):
            info = Field(default_factory=f.default_factory, description=help_text)
        else:
            info = Field(default=record_default(f), description=help_text)
        job_type = _job_type(tp, spec.minimum, spec.maximum, spec.pattern, spec.values)
        fields[key] = (job_type, info)
    name = f"{record.__name__}Fields"
    model: type[Section] = create_model(name, __base__=Section, __module__=__name__, **fields)
    model.job_aliases = aliases
    model.record_fields = record_fields
    return model


class PredictSection(step_section(PredictOptions)):  # type: ignore[misc]
    """The predict step: the options of `geoseg predict` (PredictOptions)."""


class VectorizeSection(step_section(VectorizeOptions)):  # type: ignore[misc]
    """The vectorize step: the options of `geoseg vectorize` (VectorizeOptions)."""

    probabilities: StrictBool = Field(
        default=False,
        description="Add mean_prob from the scene's predicted probabilities "
        "(needs steps.predict.probabilities: true).",
    )


class EvaluateSection(step_section(EvaluateOptions)):  # type: ignore[misc]
    """The evaluate step: the options of `geoseg evaluate` (EvaluateOptions).

    Beside the pixel metrics, true vectors (one file for all scenes, clipped to each) score
    the vectorize step's output: ``buildings`` (polygons, as `geoseg evaluate --vectors`)
    and ``roads`` (centre-lines, as `geoseg evaluate --roads`).
    """

    buildings: ExistingFile | None = Field(
        default=None,
        description="True building footprints (vector file): adds building F1, IoU, C-IoU, "
        "PoLiS of the vectorized buildings (needs steps.vectorize).",
    )
    roads: ExistingFile | None = Field(
        default=None,
        description="True road centre-lines (vector file): adds APLS and buffer "
        "precision/recall (needs steps.vectorize.centerlines: true).",
    )


class Steps(Section):
    """The ``steps`` section: predict always; vectorize and evaluate when given."""

    predict: PredictSection = Field(
        description="Options of `geoseg predict`; every job predicts (`predict: {}`)."
    )
    vectorize: VectorizeSection | None = Field(
        default=None, description="Options of `geoseg vectorize`; absent: no vectors."
    )
    evaluate: EvaluateSection | None = Field(
        default=None, description="Options of `geoseg evaluate`; absent: no scoring."
    )

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        # ``vectorize:`` with no value asks for the step with its defaults.
        return {k: ({} if v is None and k in cls.model_fields else v) for k, v in data.items()}
