"""The geoseg error tree.

The library raises only these; the CLI maps them to exit codes at its boundary
(``geoseg.cli.main``). Messages say what is wrong, the offending file or value,
and how to fix it, in one line.
"""

from __future__ import annotations

__all__ = [
    "BandMismatchError",
    "CRSMismatchError",
    "CheckpointError",
    "ConfigError",
    "GeosegError",
    "GridMismatchError",
    "InputError",
    "NoValidDataError",
    "OutputError",
    "OutputExistsError",
    "SchemaError",
    "first_line",
]


class GeosegError(Exception):
    """Base of every error geoseg raises on purpose."""


class InputError(GeosegError):
    """An input file or value is unusable (not a raster, truncated, wrong dtype...)."""


class CRSMismatchError(InputError):
    """Sources have missing or irreconcilable coordinate reference systems."""


class GridMismatchError(InputError):
    """Two rasters that must share a grid do not (or do not overlap at all)."""


class BandMismatchError(InputError):
    """A scene lacks bands a model or command needs, or has an unexpected band count."""


class SchemaError(InputError):
    """A class schema is malformed or does not fit the data."""


class CheckpointError(InputError):
    """A checkpoint is missing, truncated, tampered with or not a geoseg checkpoint."""


class ConfigError(InputError):
    """A job or option file is invalid."""


class NoValidDataError(InputError):
    """The inputs hold no usable pixel (all nodata or NaN, or all below a validity threshold).

    Raised instead of writing an output that would be empty.
    """


class OutputError(GeosegError):
    """An output cannot be created where asked.

    A parent of the path is a file, the folder is not writable, the name is too long, or
    the path is a folder where a file is to be written (or a file where a folder is).
    """


class OutputExistsError(GeosegError):
    """An output exists and ``overwrite`` was not requested."""


def first_line(exc: BaseException, limit: int = 200, default: str | None = None) -> str:
    """The first line of ``exc``'s message, cut to ``limit`` characters.

    An empty message gives ``default``, or else the exception's type name.
    """
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else (default or type(exc).__name__)
