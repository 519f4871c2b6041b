"""Class schemas: an ordered list of (name, RGB colour), index = position.

Class rasters are ``uint8`` with nodata :data:`IGNORE` (255). Colour-coded label images
decode to indices; colours not in the schema decode to :data:`IGNORE` and are counted.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import yaml

from geoseg.errors import SchemaError

__all__ = ["IGNORE", "POTSDAM", "ClassSchema", "load_schema"]

logger = logging.getLogger(__name__)

IGNORE = 255
"""Class value meaning "no class / ignore / nodata" in every class raster."""


@dataclass(frozen=True)
class ClassSchema:
    """An ordered class legend.

    Attributes:
        name: Schema name (``potsdam`` for the built-in ISPRS legend).
        classes: Class names, index order.
        colours: RGB triples, one per class.
    """

    name: str
    classes: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise SchemaError(f"schema {self.name!r}: it has no classes; list at least one")
        if len(self.classes) != len(self.colours):
            raise SchemaError(
                f"schema {self.name!r}: {len(self.classes)} names but {len(self.colours)} "
                "colours; give one colour per class"
            )
        if len(self.classes) >= IGNORE:
            raise SchemaError(f"schema {self.name!r}: at most 254 classes are supported")
        if len(set(self.classes)) != len(self.classes):
            raise SchemaError(f"schema {self.name!r}: class names must be unique")
        if len(set(self.colours)) != len(self.colours):
            raise SchemaError(f"schema {self.name!r}: class colours must be unique")
        for c in self.colours:
            if len(c) != 3 or not all(0 <= int(v) <= 255 for v in c):
                raise SchemaError(
                    f"schema {self.name!r}: colour {c!r} is not an RGB triple of 0..255"
                )

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def index(self, name: str) -> int:
        """Index of class ``name``.

        Raises:
            SchemaError: If the schema has no such class.
        """
        try:
            return self.classes.index(name)
        except ValueError:
            raise SchemaError(
                f"schema {self.name!r} has no class {name!r}; known: {', '.join(self.classes)}"
            ) from None

    @property
    def road_class(self) -> str:
        """The class roads come from: ``road`` if present, else ``impervious_surfaces``."""
        for cand in ("road", "roads", "impervious_surfaces"):
            if cand in self.classes:
                return cand
        raise SchemaError(
            f"schema {self.name!r} has neither a 'road' nor an 'impervious_surfaces' class"
        )

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table: class colours, 255 transparent black."""
        cmap = {i: (*c, 255) for i, c in enumerate(self.colours)}
        cmap[IGNORE] = (0, 0, 0, 0)
        return cmap

    def encode(self, indices: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """Class indices (H, W) to an RGB colour image (3, H, W); 255 becomes black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: len(self.colours)] = np.asarray(self.colours, dtype=np.uint8)
        return np.moveaxis(lut[indices], -1, 0)

    def decode(self, rgb: npt.NDArray[np.integer]) -> tuple[npt.NDArray[np.uint8], int]:
        """Colour-coded labels (3, H, W) to class indices (H, W).

        Returns:
            The indices and the number of pixels whose colour is not in the schema (set to 255).
        """
        if rgb.ndim != 3 or rgb.shape[0] < 3:
            raise SchemaError(f"colour labels must have 3 bands, got shape {rgb.shape}")
        rgb = rgb[:3].astype(np.uint32)
        key = (rgb[0] << 16) | (rgb[1] << 8) | rgb[2]
        out = np.full(key.shape, IGNORE, dtype=np.uint8)
        for i, (r, g, b) in enumerate(self.colours):
            out[key == ((r << 16) | (g << 8) | b)] = i
        unknown = int(np.count_nonzero(out == IGNORE))
        return out, unknown

    def to_dict(self) -> dict[str, object]:
        """A JSON-able form (stored in checkpoints and sidecars)."""
        return {
            "name": self.name,
            "classes": [
                {"name": n, "colour": list(c)}
                for n, c in zip(self.classes, self.colours, strict=True)
            ],
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "schema") -> ClassSchema:
        """Build a schema from :meth:`to_dict` output (or the YAML/JSON file form).

        Raises:
            SchemaError: If the mapping is malformed.
        """
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise SchemaError(
                f"{source}: expected a mapping with a 'classes' list of {{name, colour}} entries"
            )
        names: list[str] = []
        colours: list[tuple[int, int, int]] = []
        for i, entry in enumerate(data["classes"]):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get("colour", entry.get("color")), list | tuple)
            ):
                raise SchemaError(
                    f"{source}: class #{i} must be {{name: str, colour: [r, g, b]}}, got {entry!r}"
                )
            names.append(entry["name"])
            col = entry.get("colour", entry.get("color"))
            assert col is not None
            if len(col) != 3 or not all(isinstance(v, int) for v in col):
                raise SchemaError(
                    f"{source}: class {entry['name']!r} colour must be [r, g, b] ints"
                )
            colours.append((int(col[0]), int(col[1]), int(col[2])))
        return cls(str(data.get("name", Path(source).stem)), tuple(names), tuple(colours))


POTSDAM = ClassSchema(
    name="potsdam",
    classes=(
        "impervious_surfaces",
        "building",
        "low_vegetation",
        "tree",
        "car",
        "clutter",
    ),
    colours=(
        (255, 255, 255),
        (0, 0, 255),
        (0, 255, 255),
        (0, 255, 0),
        (255, 255, 0),
        (255, 0, 0),
    ),
)

_BUILTIN = {"potsdam": POTSDAM}


def load_schema(spec: str | os.PathLike[str] | ClassSchema) -> ClassSchema:
    """A schema by built-in name (``potsdam``) or from a YAML/JSON file.

    The file form is ``{name: ..., classes: [{name: building, colour: [0, 0, 255]}, ...]}``.

    Raises:
        SchemaError: Unknown name, unreadable or malformed file.
    """
    if isinstance(spec, ClassSchema):
        return spec
    s = str(spec)
    if s in _BUILTIN:
        return _BUILTIN[s]
    p = Path(s)
    if not p.exists():
        raise SchemaError(
            f"{s}: no such schema; use a built-in name ({', '.join(_BUILTIN)}) or a YAML/JSON file"
        )
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise SchemaError(f"{p}: cannot read schema ({exc}); fix the YAML/JSON syntax") from None
    return ClassSchema.from_dict(data, source=str(p))
