"""Every option of geoseg, declared once: its choices, default, minimum and help.

The typed option records (:class:`TileOptions`, :class:`PredictOptions`,
:class:`VectorizeOptions`, :class:`EvaluateOptions`) are frozen dataclasses whose fields
carry an :class:`OptionSpec`. Three consumers read them and nothing else re-declares a
default:

- the library, which validates a record on construction (:func:`validate_record`);
- the CLI (``geoseg.cli.options.record_option``), which builds each ``--flag`` from the
  field: name, default, choices (from the ``Literal`` type), minimum and help;
- the job files (``geoseg.pipeline``), whose step sections are pydantic models generated
  from the same fields (:func:`option_fields`), which also give the JSON Schema of
  ``geoseg run --schema``.

The one overlap rule lives here too: a tile size ``t`` takes a default overlap of ``t // 4``
(:func:`default_overlap`) and any overlap must be smaller than the tile
(:func:`check_overlap`).
"""

from __future__ import annotations

from geoseg.options._records import (
    EvaluateOptions,
    ExportOptions,
    PredictOptions,
    TileOptions,
    VectorizeOptions,
)
from geoseg.options._spec import (
    DEVICE_PATTERN,
    DEVICE_VALUES,
    TTA,
    BlendKind,
    ChipCompression,
    Device,
    OptionSpec,
    PotsdamLabels,
    Precision,
    VectorFormat,
    check_device,
    check_overlap,
    choices_of,
    default_overlap,
    default_workers,
    field_default,
    option,
    option_fields,
    resolve_overlap,
    strip_optional,
    validate_record,
)

__all__ = [
    "DEVICE_PATTERN",
    "DEVICE_VALUES",
    "TTA",
    "BlendKind",
    "ChipCompression",
    "Device",
    "EvaluateOptions",
    "ExportOptions",
    "OptionSpec",
    "PotsdamLabels",
    "Precision",
    "PredictOptions",
    "TileOptions",
    "VectorFormat",
    "VectorizeOptions",
    "check_device",
    "check_overlap",
    "choices_of",
    "default_overlap",
    "default_workers",
    "field_default",
    "option",
    "option_fields",
    "resolve_overlap",
    "strip_optional",
    "validate_record",
]
