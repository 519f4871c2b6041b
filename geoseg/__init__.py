"""geoseg: large aerial and satellite scenes to GIS-ready land-cover maps."""

from __future__ import annotations

import typing as _typing

from geoseg.errors import (
    BandMismatchError,
    CheckpointError,
    ConfigError,
    CRSMismatchError,
    GeosegError,
    GridMismatchError,
    InputError,
    NoValidDataError,
    OutputError,
    OutputExistsError,
    SchemaError,
)

if _typing.TYPE_CHECKING:
    from geoseg.grid import GeoBox, tile_windows
    from geoseg.schema import IGNORE, POTSDAM, ClassSchema, load_schema

_LAZY = {
    "GeoBox": "geoseg.grid",
    "tile_windows": "geoseg.grid",
    "IGNORE": "geoseg.schema",
    "POTSDAM": "geoseg.schema",
    "ClassSchema": "geoseg.schema",
    "load_schema": "geoseg.schema",
}


def __getattr__(name: str) -> _typing.Any:
    # grid and schema import rasterio and numpy: only when asked for, so that the CLI
    # (geoseg --help) starts without them.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "IGNORE",
    "POTSDAM",
    "BandMismatchError",
    "CRSMismatchError",
    "CheckpointError",
    "ClassSchema",
    "ConfigError",
    "GeoBox",
    "GeosegError",
    "GridMismatchError",
    "InputError",
    "NoValidDataError",
    "OutputError",
    "OutputExistsError",
    "SchemaError",
    "__version__",
    "load_schema",
    "tile_windows",
]
