"""The option machinery: a field's spec, reading and validating records, the value types.

:class:`OptionSpec` and :func:`option` declare a field; :func:`option_fields` and
:func:`validate_record` read and check records; the overlap rule and the shared value types
live here too (see :mod:`geoseg.options`).
"""

from __future__ import annotations

import math
import re
import types
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from geoseg.errors import ConfigError

__all__ = [
    "DEVICE_PATTERN",
    "DEVICE_VALUES",
    "TTA",
    "BlendKind",
    "ChipCompression",
    "Device",
    "OptionSpec",
    "PotsdamLabels",
    "Precision",
    "VectorFormat",
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

Device = str
"""A device option: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked against
:data:`DEVICE_PATTERN`, not a ``Literal``: the GPU index is open-ended)."""
Precision = Literal["auto", "bf16", "fp32"]
TTA = Literal["none", "flip", "d4"]
BlendKind = Literal["hann", "spline", "mean"]
ChipCompression = Literal["deflate", "zstd", "lzw", "none"]
VectorFormat = Literal["gpkg", "parquet"]
PotsdamLabels = Literal["all", "noBoundary", "none"]

DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
"""What a device option accepts: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (N a GPU index).

The JSON Schema ``pattern`` of the job files; Python matches it with ``re.fullmatch``."""
DEVICE_VALUES = ("auto", "cpu", "cuda", "cuda:N")
"""The forms of a device option, for messages and ``--help``."""
_DEVICE_RE = re.compile(DEVICE_PATTERN)


def check_device(device: object, *, what: str = "device") -> str:
    """``device`` when it is a device option (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Args:
        device: The value given.
        what: Its name, for the message.

    Raises:
        ConfigError: Anything else; the message lists the accepted forms.
    """
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ConfigError(f"{what}={device!r}: use one of {', '.join(DEVICE_VALUES)}")
    return device


def default_workers() -> int:
    """Default worker count: the CPU count, at most 8."""
    import os

    return max(1, min(8, os.cpu_count() or 1))


# -- declaration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OptionSpec:
    """What the CLI and the job files need to know about one option field.

    Attributes:
        help: One-line help, shown by ``--help`` and in the JSON Schema.
        minimum: Smallest allowed value (numbers).
        maximum: Largest allowed value (numbers).
        pattern: Regular expression a text value must match (anchored; also the JSON
            Schema ``pattern``): a text option with open-ended values, such as a device.
        values: The forms a ``pattern`` option takes, for messages and ``--help``.
        flags: CLI spellings; default ``--field-name``.
        key: Job-file key; default the field name. None with ``job=False``.
        aliases: Other accepted job-file keys.
        repeat: A tuple option given by repeating the flag (else comma-separated).
        show_default: Text for ``--help`` when the default is computed.
        cli: Whether the CLI has this option (else the command sets it otherwise).
        job: Whether job-file steps have this key (else the job sets it otherwise).
    """

    help: str
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    values: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    key: str | None = None
    aliases: tuple[str, ...] = ()
    show_default: str | None = None
    repeat: bool = False
    cli: bool = True
    job: bool = True


def option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    pattern: str | None = None,
    values: tuple[str, ...] = (),
    flags: tuple[str, ...] = (),
    key: str | None = None,
    aliases: tuple[str, ...] = (),
    show_default: str | None = None,
    repeat: bool = False,
    cli: bool = True,
    job: bool = True,
) -> Any:
    """A dataclass field that carries its :class:`OptionSpec`.

    ``default`` may be a callable (a default computed when a record is made, such as
    :func:`default_workers`).
    """
    spec = OptionSpec(
        help=help,
        minimum=minimum,
        maximum=maximum,
        pattern=pattern,
        values=values,
        flags=flags,
        key=key,
        aliases=aliases,
        show_default=show_default,
        repeat=repeat,
        cli=cli,
        job=job,
    )
    if callable(default):
        return field(default_factory=default, metadata={"geoseg": spec})
    return field(default=default, metadata={"geoseg": spec})


def option_fields(record: type) -> list[tuple[Field[Any], OptionSpec, Any]]:
    """The option fields of a record class: ``(field, spec, resolved type)`` in order."""
    hints = get_type_hints(record)
    out = []
    for f in fields(record):
        spec = f.metadata.get("geoseg")
        if isinstance(spec, OptionSpec):
            out.append((f, spec, hints[f.name]))
    return out


def strip_optional(tp: Any) -> tuple[Any, bool]:
    """``(T, True)`` for ``T | None`` (or ``Optional[T]``), else ``(tp, False)``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def choices_of(tp: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` type (optionally ``| None``), else None."""
    tp, _ = strip_optional(tp)
    if get_origin(tp) is Literal:
        return tuple(str(a) for a in get_args(tp))
    return None


def field_default(f: Field[Any]) -> Any:
    """The default value of a dataclass field."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


# -- validation ----------------------------------------------------------------------------


def validate_record(record: Any, *, prefix: str = "") -> None:
    """Check every option of ``record`` against its declaration.

    Raises:
        ConfigError: A value is outside its choices, does not match its pattern, is below
            its minimum, above its maximum, or not finite; the message names the option and
            the allowed values.
    """
    for f, spec, tp in option_fields(type(record)):
        value = getattr(record, f.name)
        if value is None:
            continue
        name = f"{prefix}{f.name}"
        allowed = choices_of(tp)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{name}={value!r}: use one of {', '.join(allowed)}")
        if spec.pattern is not None and not (
            isinstance(value, str) and re.fullmatch(spec.pattern, value)
        ):
            forms = ", ".join(spec.values)
            fix = f"use one of {forms}" if forms else f"must match {spec.pattern}"
            raise ConfigError(f"{name}={value!r}: {fix}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value!r}: must be a finite number")
        if spec.minimum is not None and value < spec.minimum:
            raise ConfigError(f"{name}={value!r}: must be >= {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise ConfigError(f"{name}={value!r}: must be <= {spec.maximum:g}")


def default_overlap(tile_size: int) -> int:
    """The default overlap of a tile size: a quarter of it (128 for 512)."""
    return tile_size // 4


def resolve_overlap(tile_size: int, overlap: int | None) -> int:
    """The overlap to use: ``overlap``, or the default of the tile size, checked.

    Raises:
        ConfigError: See :func:`check_overlap`.
    """
    resolved = default_overlap(tile_size) if overlap is None else overlap
    check_overlap(tile_size, resolved)
    return resolved


def check_overlap(tile_size: int, overlap: int, *, what: str = "overlap") -> None:
    """The one overlap rule: ``0 <= overlap < tile_size``.

    Raises:
        ConfigError: The overlap is negative or not smaller than the tile.
    """
    if overlap < 0:
        raise ConfigError(f"{what}={overlap}: must be >= 0")
    if overlap >= tile_size:
        raise ConfigError(
            f"{what}={overlap} must be smaller than the tile size ({tile_size}); "
            "use a smaller overlap or a larger tile size"
        )
