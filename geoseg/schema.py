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
        problem = _problem(self.classes, self.colours)
        if problem is not None:
            raise SchemaError(f"schema {self.name!r}: {problem}")

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
            SchemaError: If the mapping is malformed; one line naming ``source``.
        """
        if data is None:
            raise SchemaError(f"{source}: the schema is empty; {_FORM}")
        if not isinstance(data, dict):
            raise SchemaError(
                f"{source}: expected a mapping with a 'classes' list, got {_kind(data)}; {_FORM}"
            )
        if "classes" not in data:
            raise SchemaError(f"{source}: no 'classes' key; {_FORM}")
        entries = data["classes"]
        if not isinstance(entries, list):
            raise SchemaError(
                f"{source}: expected a mapping with a 'classes' list, but 'classes' is "
                f"{_kind(entries)}; {_FORM}"
            )
        name = data.get("name", Path(source).stem)
        if isinstance(name, int | float) and not isinstance(name, bool):
            name = str(name)  # ``name: 2024`` in YAML
        if not isinstance(name, str) or not name.strip():
            raise SchemaError(f"{source}: 'name' {name!r} is not a text; give the schema a name")
        names: list[str] = []
        colours: list[tuple[int, int, int]] = []
        for i, entry in enumerate(entries, start=1):
            names.append(_entry_name(entry, i, source))
            colours.append(_entry_colour(entry, names[-1], source))
        problem = _problem(tuple(names), tuple(colours))
        if problem is not None:
            raise SchemaError(f"{source}: {problem}")
        return cls(name, tuple(names), tuple(colours))


_FORM = "list at least two classes as 'classes: [{name: building, colour: [0, 0, 255]}, ...]'"


def _kind(value: object) -> str:
    """``value``'s kind in words, for messages (``a list``, ``the number 3``)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return {"list": "a list", "dict": "a mapping"}.get(type(value).__name__, type(value).__name__)


def _entry_name(entry: object, i: int, source: str) -> str:
    """The name of class entry #``i`` (1-based), checked."""
    if not isinstance(entry, dict):
        raise SchemaError(
            f"{source}: class #{i} is {_kind(entry)}, not a mapping; write it as "
            "{name: NAME, colour: [r, g, b]}"
        )
    name = entry.get("name")
    if name is None:
        raise SchemaError(f"{source}: class #{i} has no 'name'; give every class a name")
    if not isinstance(name, str) or not name.strip():
        raise SchemaError(
            f"{source}: class #{i} name {name!r} is not a text; give a name such as building"
        )
    return name


def _entry_colour(entry: dict[str, object], name: str, source: str) -> tuple[int, int, int]:
    """The colour of class entry ``name``, checked: three integers of 0..255."""
    col = entry.get("colour", entry.get("color"))
    if col is None:
        raise SchemaError(
            f"{source}: class {name!r} has no 'colour'; give it one as [r, g, b] (0..255)"
        )
    if (
        not isinstance(col, list | tuple)
        or len(col) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in col)
    ):
        raise SchemaError(
            f"{source}: class {name!r} colour {col!r} is not [r, g, b]; give three integers "
            "of 0..255"
        )
    return (col[0], col[1], col[2])


def _problem(classes: tuple[str, ...], colours: tuple[tuple[int, int, int], ...]) -> str | None:
    """What is wrong with a legend, and how to fix it; None when it is valid."""
    if len(classes) < 2:
        got = f"only one class ({classes[0]!r})" if classes else "no classes"
        return f"{got}; {_FORM}"
    if len(classes) != len(colours):
        return f"{len(classes)} names but {len(colours)} colours; give one colour per class"
    if len(classes) >= IGNORE:
        return f"{len(classes)} classes; at most 254 are supported (255 means no class)"
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            return f"class {name!r} is listed twice; give each class a unique name"
        seen.add(name)
    for name, c in zip(classes, colours, strict=True):
        if len(c) != 3 or not all(0 <= int(v) <= 255 for v in c):
            return (
                f"class {name!r} colour {tuple(c)!r} is outside 0..255; give each of r, g, b "
                "as an integer of 0..255"
            )
    owner: dict[tuple[int, ...], str] = {}
    for name, c in zip(classes, colours, strict=True):
        key = tuple(int(v) for v in c)
        if key in owner:
            return (
                f"classes {owner[key]!r} and {name!r} share the colour {key!r}; give each "
                "class its own colour"
            )
        owner[key] = name
    return None


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
    if p.is_dir():
        raise SchemaError(f"{p}: is a folder, not a schema file; give a YAML or JSON file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SchemaError(f"{p}: not a text file; give a YAML or JSON schema file") from None
    except OSError as exc:
        raise SchemaError(
            f"{p}: cannot read the schema file ({exc.strerror or exc}); check the path and "
            "its permissions"
        ) from None
    return ClassSchema.from_dict(_parse(p, text), source=str(p))


def _parse(path: Path, text: str) -> object:
    """The data of a schema file: JSON for ``.json``, else YAML; a SchemaError if malformed."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise SchemaError(
                f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                "fix the file"
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(exc.problem or exc.context or "syntax error").split())
        raise SchemaError(f"{path}: not valid YAML{where}: {problem}; fix the file") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SchemaError(
            f"{path}: not valid YAML at character {exc.position + 1}: {exc.reason} "
            f"(#x{char:04x}); fix the file"
        ) from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())[:160]
        raise SchemaError(f"{path}: not valid YAML: {problem}; fix the file") from None
