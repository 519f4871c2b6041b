"""geoseg: large aerial and satellite scenes to GIS-ready land-cover maps."""

from __future__ import annotations

from geoseg.errors import (
    BandMismatchError,
    CheckpointError,
    ConfigError,
    CRSMismatchError,
    GeosegError,
    GridMismatchError,
    InputError,
    OutputExistsError,
    SchemaError,
)
from geoseg.grid import GeoBox, tile_windows
from geoseg.schema import IGNORE, POTSDAM, ClassSchema, load_schema

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
    "OutputExistsError",
    "SchemaError",
    "__version__",
    "load_schema",
    "tile_windows",
]
