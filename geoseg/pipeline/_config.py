"""Job files: typed configuration, validated as a whole before anything runs.

A job file is YAML::

    inputs:                        # one or more entries, each one of:
      - potsdam: data/potsdam      #   a Potsdam-layout folder (all tiles, or ids)
        ids: [2_13, 2_14]
        labels: all                #   all | noBoundary | none
      - glob: scenes/*.tif         #   image files by pattern (scene id = file stem)
        dsm: dsm/{stem}_dsm.tif    #   optional companions, {stem} = image file stem
        labels: labels/{stem}.tif
      - files: [a.tif, b.tif]      #   a list of image files (same options as glob)
      - image: c.tif               #   one explicit scene
        dsm: c_dsm.tif
        labels: c_labels.tif
    model: runs/unet/best.pt
    output: maps/potsdam
    schema: potsdam                # optional; built-in name or YAML/JSON file
    scheduler: tcp://10.0.0.5:8786 # optional Dask scheduler
    workers: 2                     # optional; scenes at once (and local threads)
    steps:
      predict: {tile_size: 512, overlap: 128}
      vectorize: {classes: [building, road], min_area: 4}
      evaluate: {eroded: 3, ignore_class: [clutter]}

Step options mirror the command-line options of ``geoseg predict``, ``geoseg vectorize``
and ``geoseg evaluate`` (``tile_size`` or ``tile-size`` for ``--tile-size``). Relative paths
resolve against the job file's folder. Every problem (unknown keys, with a suggestion;
wrong types; bad values; missing files) is collected and reported at once as a
:class:`JobConfigError`, one line per problem, each naming its YAML path.

YAML 1.1 reads ``2_13`` as the integer 213; job files are read with YAML 1.2 integers
(no ``_`` separators, no sexagesimal or octal forms), so Potsdam tile ids need no quotes.
"""

from __future__ import annotations

import difflib
import glob
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

from geoseg.errors import ConfigError
from geoseg.scene import SceneSpec

__all__ = [
    "STEPS",
    "EvaluateStep",
    "FilesInput",
    "ImageInput",
    "Job",
    "JobConfigError",
    "JobInput",
    "PotsdamInput",
    "PredictStep",
    "VectorizeStep",
    "load_job",
]

STEPS = ("predict", "landcover", "vectorize", "evaluate")
"""Steps in the order they run for a scene. ``landcover`` always follows ``predict``."""

_SCHEDULER_RE = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")
_BAND_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TILE_ID_RE = re.compile(r"^\d+_\d+$")
_CO_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]
TTA = Literal["none", "flip", "d4"]
Blend = Literal["hann", "spline", "mean"]
PotsdamLabels = Literal["all", "noBoundary", "none"]
VectorFormat = Literal["gpkg", "parquet"]

_T = TypeVar("_T")


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


# -- typed configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class PotsdamInput:
    """Tiles of an ISPRS Potsdam-layout folder.

    Attributes:
        root: Dataset root (``4_Ortho_RGBIR/``, ``1_DSM/``, ``5_Labels_all/``...).
        ids: Tile ids (``2_13``); None means every tile in the folder.
        labels: Label folder for evaluation: ``all``, ``noBoundary`` or ``none``.
        ndsm_files: Use ``1_DSM_normalisation``'s nDSM files instead of deriving the nDSM.
    """

    root: Path
    ids: tuple[str, ...] | None = None
    labels: PotsdamLabels = "all"
    ndsm_files: bool = False


@dataclass(frozen=True)
class FilesInput:
    """Image files, listed or matched by a glob; each is a scene named by its file stem.

    Attributes:
        files: The image files (a glob is expanded when the job is loaded).
        pattern: The glob, when the files came from one.
        band_names: Names of the image bands in file order (default: from the files).
        dsm: DSM path template, ``{stem}`` is the image file stem.
        ndsm: nDSM path template.
        labels: Label path template.
    """

    files: tuple[Path, ...]
    pattern: str | None = None
    band_names: tuple[str, ...] | None = None
    dsm: str | None = None
    ndsm: str | None = None
    labels: str | None = None


@dataclass(frozen=True)
class ImageInput:
    """One scene from explicit files.

    Attributes:
        image: Image GeoTIFF (its grid is the scene grid).
        dsm: DSM file.
        ndsm: nDSM file.
        labels: Label raster.
        id: Scene id; default: the image file stem (``2_13`` for Potsdam names).
        band_names: Names of the image bands in file order.
    """

    image: Path
    dsm: Path | None = None
    ndsm: Path | None = None
    labels: Path | None = None
    id: str | None = None
    band_names: tuple[str, ...] | None = None


JobInput = PotsdamInput | FilesInput | ImageInput


@dataclass(frozen=True)
class PredictStep:
    """Options of the predict step (as ``geoseg predict``).

    Attributes:
        tile_size: Tile edge; None means the checkpoint's.
        overlap: Pixels shared by neighbouring tiles.
        batch_size: Tiles per model call; None: 32 on CUDA, 4 on the CPU.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``bf16`` or ``fp32``.
        tta: Test-time augmentation: ``none``, ``flip`` or ``d4``.
        probabilities: Also write per-class probabilities.
        blend: Weight window: ``hann``, ``spline`` or ``mean``.
        block_size: Output block edge (memory bound; never changes the result).
        creation_options: Extra GDAL creation options ``(KEY, VALUE)``.
    """

    tile_size: int | None = None
    overlap: int = 128
    batch_size: int | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: TTA = "none"
    probabilities: bool = False
    blend: Blend = "hann"
    block_size: int = 2048
    creation_options: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-able options (for fingerprints and the manifest)."""
        d = _asdict(self)
        d["creation_options"] = [list(kv) for kv in self.creation_options]
        return d


@dataclass(frozen=True)
class VectorizeStep:
    """Options of the vectorize step (as ``geoseg vectorize``).

    Attributes:
        classes: ``building``, ``road`` or class names of the schema.
        probabilities: Add ``mean_prob`` from the predicted probabilities (needs
            ``predict.probabilities``).
        min_area: Drop polygons under this many m².
        hole_area: Fill holes under this many m².
        simplify: Simplification tolerance in metres.
        regularize: Rectilinear building outlines.
        centerlines: Add a ``road_centerlines`` layer.
        spur_length: Prune centre-line dead ends shorter than this (m); None: 40 pixels.
        format: ``gpkg`` or ``parquet``.
        block_size: Block edge in pixels.
        workers: Worker processes (local runs; a cluster task uses one).
    """

    classes: tuple[str, ...] = ("building", "road")
    probabilities: bool = False
    min_area: float = 0.0
    hole_area: float = 0.0
    simplify: float = 0.0
    regularize: bool = False
    centerlines: bool = False
    spur_length: float | None = None
    format: VectorFormat = "gpkg"
    block_size: int = 2048
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        """JSON-able options without the runtime-only ``workers``."""
        d = _asdict(self)
        d.pop("workers")
        return d


@dataclass(frozen=True)
class EvaluateStep:
    """Options of the evaluate step (as ``geoseg evaluate`` in raster mode).

    Attributes:
        eroded: Ignore truth pixels within this many pixels of a class boundary.
        ignore_class: Classes left out of mIoU and mean F1.
        block_size: Block edge in pixels.
        min_miou: A scene whose mIoU is below this fails the run's check (exit 1).
    """

    eroded: int = 0
    ignore_class: tuple[str, ...] = ()
    block_size: int = 1024
    min_miou: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able options; ``min_miou`` is a judgement, not an input of the step."""
        d = _asdict(self)
        d.pop("min_miou")
        return d


@dataclass(frozen=True)
class Job:
    """A validated job.

    Attributes:
        source: The job file.
        name: Job name (default: the file stem).
        inputs: The input entries as written.
        scenes: The scenes they resolve to (empty when loaded without file checks).
        model: Checkpoint file.
        output: Output root (manifest, lock, maps, vectors, metrics, landcover.csv).
        schema: Class schema: built-in name or file.
        scheduler: Dask scheduler address, or None for local threads.
        workers: Scenes processed at once; also the threads of the local scheduler.
        predict: Predict options.
        vectorize: Vectorize options, or None when the step is not requested.
        evaluate: Evaluate options, or None when the step is not requested.
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
    predict: PredictStep = field(default_factory=PredictStep)
    vectorize: VectorizeStep | None = None
    evaluate: EvaluateStep | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps this job runs for every scene, in order."""
        on = {"vectorize": self.vectorize is not None, "evaluate": self.evaluate is not None}
        return tuple(s for s in STEPS if on.get(s, True))


def _asdict(obj: Any) -> dict[str, Any]:
    return {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in ((f, getattr(obj, f)) for f in obj.__dataclass_fields__)
    }


# -- YAML reading ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 integers and duplicate-key detection."""

    duplicates: list[str]


_Loader.yaml_implicit_resolvers = {
    ch: [r for r in resolvers if r[0] != "tag:yaml.org,2002:int"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:
            continue
        if dup:
            loader.duplicates.append(
                f"line {key_node.start_mark.line + 1}: key {key!r} is given twice; keep one"
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> tuple[Any, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobConfigError(path, [f"cannot read the job file ({exc})"]) from None
    loader = _Loader(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise JobConfigError(path, [f"not valid YAML: {msg}"]) from None
    finally:
        loader.dispose()
    return data, loader.duplicates


# -- validation --------------------------------------------------------------------------------


_MISSING = object()


class _Checker:
    """Reads values out of plain YAML data, collecting every problem instead of stopping."""

    def __init__(self, base: Path, *, check_files: bool) -> None:
        self.base = base
        self.check_files = check_files
        self.problems: list[str] = []
        self.bad: set[str] = set()

    def add(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}" if where else msg)

    def mapping(
        self,
        value: Any,
        where: str,
        allowed: Sequence[str],
        *,
        required: Sequence[str] = (),
    ) -> dict[str, Any] | None:
        """A mapping with only ``allowed`` keys (``-`` spelled keys count as ``_``)."""
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.add(where or "(top level)", f"expected a mapping, got {_kind(value)}")
            return None
        out: dict[str, Any] = {}
        for key, v in value.items():
            if not isinstance(key, str):
                self.add(_join(where, str(key)), "keys must be text")
                continue
            norm = key.replace("-", "_")
            if norm not in allowed:
                self.add(_join(where, key), _unknown(norm, allowed))
                continue
            if norm in out:
                self.add(_join(where, key), f"given twice (also as {norm!r}); keep one")
                continue
            out[norm] = v
        for key in required:
            if key not in out:
                self.add(_join(where, key), "missing; this key is required")
        return out

    def get(
        self,
        m: Mapping[str, Any],
        key: str,
        where: str,
        conv: Callable[[Any, str], _T],
        default: _T,
        *,
        nullable: bool = False,
    ) -> _T:
        """``conv(m[key])``, or ``default`` when absent or when the value is bad."""
        value = m.get(key, _MISSING)
        if value is _MISSING:
            return default
        path = _join(where, key)
        if value is None:
            if nullable:
                return cast(_T, None)
            self.add(path, "a value is required here (got an empty value)")
            return default
        try:
            return conv(value, path)
        except _Bad as exc:
            self.add(path, str(exc))
            self.bad.add(path)
            return default

    def path(self, value: Any, where: str, *, kind: Literal["file", "dir"]) -> Path | None:
        """A path relative to the job folder; must exist when files are checked."""
        if not isinstance(value, str) or not value.strip():
            self.add(where, f"expected a path, got {_kind(value)}")
            return None
        p = _resolve(self.base, value)
        if self.check_files:
            if not p.exists():
                self.add(where, f"{p} does not exist; fix the path (relative to {self.base})")
                return None
            if kind == "file" and not p.is_file():
                self.add(where, f"{p} is a folder; give a file")
                return None
            if kind == "dir" and not p.is_dir():
                self.add(where, f"{p} is a file; give a folder")
                return None
        return p


class _Bad(Exception):  # noqa: N818 (internal signal, never escapes this module)
    """A value problem, caught by :meth:`_Checker.get`."""


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value!r}"
    return f"{type(value).__name__} {value!r}"


def _unknown(key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    return f"unknown key; known keys: {', '.join(allowed)}"


def _resolve(base: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


def _int(minimum: int) -> Callable[[Any, str], int]:
    def conv(value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise _Bad(f"{value} must be >= {minimum}")
        return value

    return conv


def _float(minimum: float, maximum: float = math.inf) -> Callable[[Any, str], float]:
    def conv(value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Bad(f"expected a number, got {_kind(value)}")
        v = float(value)
        if not math.isfinite(v) or v < minimum or v > maximum:
            rng = f"between {minimum:g} and {maximum:g}" if math.isfinite(maximum) else None
            raise _Bad(f"{value} must be a finite number {rng or f'>= {minimum:g}'}")
        return v

    return conv


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_kind(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected text, got {_kind(value)}")
    return value.strip()


def _choice(*allowed: str) -> Callable[[Any, str], Any]:
    def conv(value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in allowed:
            hint = ""
            if isinstance(value, str):
                close = difflib.get_close_matches(value, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _Bad(f"{_kind(value)} is not one of {', '.join(allowed)}{hint}")
        return value

    return conv


def _names(value: Any, where: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string."""
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, list):
        items = []
        for i, v in enumerate(value):
            if not isinstance(v, str | int) or isinstance(v, bool):
                raise _Bad(f"item {i} is {_kind(v)}; expected a name")
            items.append(str(v).strip())
    else:
        raise _Bad(f"expected a list of names or a comma-separated text, got {_kind(value)}")
    items = [v for v in items if v]
    if not items:
        raise _Bad("give at least one name")
    dups = sorted({v for v in items if items.count(v) > 1})
    if dups:
        raise _Bad(f"{', '.join(dups)} given more than once")
    return tuple(items)


def _band_names(value: Any, where: str) -> tuple[str, ...]:
    names = _names(value, where)
    bad = [n for n in names if not _BAND_RE.match(n)]
    if bad:
        raise _Bad(f"band names must be lower-case identifiers (like nir, dsm): {', '.join(bad)}")
    return names


def _tile_ids(value: Any, where: str) -> tuple[str, ...]:
    ids = _names(value, where)
    bad = [i for i in ids if not _TILE_ID_RE.match(i)]
    if bad:
        raise _Bad(f"{', '.join(bad)}: not Potsdam tile ids; use ROW_COL such as 2_13")
    return ids


def _creation_options(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    items: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, bool):
                v = "YES" if v else "NO"
            items.append((str(k), str(v)))
    elif isinstance(value, list | str):
        for s in [value] if isinstance(value, str) else value:
            key, sep, val = str(s).partition("=")
            if not sep:
                raise _Bad(f"{s!r} is not of the form KEY=VAL (e.g. COMPRESS=DEFLATE)")
            items.append((key.strip(), val.strip()))
    else:
        raise _Bad(f"expected KEY: VALUE pairs or a list of KEY=VAL, got {_kind(value)}")
    for k, _ in items:
        if not _CO_KEY_RE.match(k):
            raise _Bad(f"{k!r} is not a GDAL creation option name")
    return tuple((k.upper(), v) for k, v in items)


def _scheduler(value: Any, where: str) -> str:
    s = _text(value, where)
    if not _SCHEDULER_RE.match(s):
        raise _Bad(f"{s!r} is not a scheduler address; use tcp://HOST:PORT")
    return s


# -- sections ----------------------------------------------------------------------------------


_TOP = ("version", "name", "inputs", "model", "output", "schema", "scheduler", "workers", "steps")
_STEP_KEYS = ("predict", "vectorize", "evaluate")
_PREDICT = (
    "tile_size",
    "size",
    "overlap",
    "batch_size",
    "device",
    "precision",
    "tta",
    "probabilities",
    "blend",
    "block_size",
    "co",
)
_VECTORIZE = (
    "classes",
    "probabilities",
    "min_area",
    "hole_area",
    "simplify",
    "regularize",
    "centerlines",
    "spur_length",
    "format",
    "block_size",
    "workers",
)
_EVALUATE = ("eroded", "ignore_class", "block_size", "min_miou")
_POTSDAM = ("potsdam", "ids", "labels", "ndsm_files")
_FILES = ("files", "glob", "band_names", "dsm", "ndsm", "labels")
_IMAGE = ("image", "dsm", "ndsm", "labels", "id", "band_names")


def _predict(c: _Checker, raw: Any, where: str) -> PredictStep:
    m = c.mapping(raw, where, _PREDICT)
    if m is None:
        return PredictStep()
    if "size" in m and "tile_size" in m:
        c.add(_join(where, "size"), "given together with tile_size; keep one")
    tile_key = "tile_size" if "tile_size" in m else "size"
    return PredictStep(
        tile_size=c.get(m, tile_key, where, _int(16), None, nullable=True),
        overlap=c.get(m, "overlap", where, _int(0), 128),
        batch_size=c.get(m, "batch_size", where, _int(1), None, nullable=True),
        device=c.get(m, "device", where, _choice("auto", "cpu", "cuda"), "auto"),
        precision=c.get(m, "precision", where, _choice("auto", "bf16", "fp32"), "auto"),
        tta=c.get(m, "tta", where, _choice("none", "flip", "d4"), "none"),
        probabilities=c.get(m, "probabilities", where, _bool, False),
        blend=c.get(m, "blend", where, _choice("hann", "spline", "mean"), "hann"),
        block_size=c.get(m, "block_size", where, _int(64), 2048),
        creation_options=c.get(m, "co", where, _creation_options, ()),
    )


def _vectorize(c: _Checker, raw: Any, where: str) -> VectorizeStep:
    m = c.mapping(raw, where, _VECTORIZE)
    if m is None:
        return VectorizeStep()
    return VectorizeStep(
        classes=c.get(m, "classes", where, _names, ("building", "road")),
        probabilities=c.get(m, "probabilities", where, _bool, False),
        min_area=c.get(m, "min_area", where, _float(0.0), 0.0),
        hole_area=c.get(m, "hole_area", where, _float(0.0), 0.0),
        simplify=c.get(m, "simplify", where, _float(0.0), 0.0),
        regularize=c.get(m, "regularize", where, _bool, False),
        centerlines=c.get(m, "centerlines", where, _bool, False),
        spur_length=c.get(m, "spur_length", where, _float(0.0), None, nullable=True),
        format=c.get(m, "format", where, _choice("gpkg", "parquet"), "gpkg"),
        block_size=c.get(m, "block_size", where, _int(16), 2048),
        workers=c.get(m, "workers", where, _int(1), 1),
    )


def _evaluate(c: _Checker, raw: Any, where: str) -> EvaluateStep:
    m = c.mapping(raw, where, _EVALUATE)
    if m is None:
        return EvaluateStep()
    return EvaluateStep(
        eroded=c.get(m, "eroded", where, _int(0), 0),
        ignore_class=c.get(m, "ignore_class", where, _names, ()),
        block_size=c.get(m, "block_size", where, _int(1), 1024),
        min_miou=c.get(m, "min_miou", where, _float(0.0, 1.0), None, nullable=True),
    )


def _template(c: _Checker, m: Mapping[str, Any], key: str, where: str) -> str | None:
    t = c.get(m, key, where, _text, None, nullable=True)
    if t is None:
        return None
    try:
        t.format(stem="x")
    except (KeyError, IndexError, ValueError):
        c.add(_join(where, key), f"{t!r}: the only placeholder allowed is {{stem}}")
        return None
    return t


def _input(c: _Checker, raw: Any, where: str) -> JobInput | None:
    if not isinstance(raw, dict):
        c.add(where, f"expected a mapping with potsdam, glob, files or image; got {_kind(raw)}")
        return None
    kinds = [k for k in ("potsdam", "glob", "files", "image") if k in raw]
    if len(kinds) != 1:
        what = "none" if not kinds else ", ".join(kinds)
        c.add(where, f"give exactly one of potsdam, glob, files, image (found {what})")
        return None
    kind = kinds[0]
    if kind == "potsdam":
        m = c.mapping(raw, where, _POTSDAM)
        if m is None:
            return None
        root = c.path(m["potsdam"], _join(where, "potsdam"), kind="dir")
        inp = PotsdamInput(
            root=root or Path(),
            ids=c.get(m, "ids", where, _tile_ids, None, nullable=True),
            labels=c.get(m, "labels", where, _choice("all", "noBoundary", "none"), "all"),
            ndsm_files=c.get(m, "ndsm_files", where, _bool, False),
        )
        return inp if root is not None else None
    if kind in ("glob", "files"):
        m = c.mapping(raw, where, _FILES)
        if m is None:
            return None
        files: list[Path] = []
        pattern = None
        if kind == "glob":
            pattern = c.get(m, "glob", where, _text, None, nullable=True)
            if pattern is not None and c.check_files:
                full = str(_resolve(c.base, pattern))
                files = [Path(p) for p in sorted(glob.glob(full)) if Path(p).is_file()]
                if not files:
                    c.add(_join(where, "glob"), f"{full!r} matches no file; fix the pattern")
        else:
            listed = m["files"]
            if not isinstance(listed, list) or not listed:
                c.add(_join(where, "files"), f"expected a list of image files, got {_kind(listed)}")
            else:
                for i, v in enumerate(listed):
                    p = c.path(v, f"{where}.files[{i}]", kind="file")
                    if p is not None:
                        files.append(p)
        return FilesInput(
            files=tuple(files),
            pattern=pattern,
            band_names=c.get(m, "band_names", where, _band_names, None, nullable=True),
            dsm=_template(c, m, "dsm", where),
            ndsm=_template(c, m, "ndsm", where),
            labels=_template(c, m, "labels", where),
        )
    m = c.mapping(raw, where, _IMAGE)
    if m is None:
        return None
    image = c.path(m["image"], _join(where, "image"), kind="file")
    extra: dict[str, Path | None] = {}
    for key in ("dsm", "ndsm", "labels"):
        v = m.get(key)
        extra[key] = None if v is None else c.path(v, _join(where, key), kind="file")
    scene_id = c.get(m, "id", where, _text, None, nullable=True)
    if scene_id is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", scene_id):
        c.add(_join(where, "id"), f"{scene_id!r}: use letters, digits, '_', '.' or '-' only")
    if image is None:
        return None
    return ImageInput(
        image=image,
        dsm=extra["dsm"],
        ndsm=extra["ndsm"],
        labels=extra["labels"],
        id=scene_id,
        band_names=c.get(m, "band_names", where, _band_names, None, nullable=True),
    )


def _scenes(
    c: _Checker, inputs: Sequence[tuple[str, JobInput]], schema: str
) -> list[tuple[str, SceneSpec]]:
    """Resolve inputs to scenes, reporting missing files and unknown tile ids."""
    from geoseg.errors import InputError
    from geoseg.scene import list_potsdam_ids, potsdam_scene, resolve_scenes

    out: list[tuple[str, SceneSpec]] = []
    for where, inp in inputs:
        if isinstance(inp, PotsdamInput):
            try:
                ids = list(inp.ids) if inp.ids else list_potsdam_ids(inp.root)
            except InputError as exc:
                c.add(_join(where, "potsdam"), str(exc))
                continue
            if not ids:
                c.add(_join(where, "potsdam"), f"{inp.root}: no tiles in 4_Ortho_RGBIR/")
            for i, tid in enumerate(ids):
                try:
                    spec = potsdam_scene(
                        inp.root,
                        tid,
                        labels=None if inp.labels == "none" else inp.labels,
                        use_ndsm_file=inp.ndsm_files,
                        schema=schema,
                    )
                except InputError as exc:
                    c.add(f"{where}.ids[{i}]" if inp.ids else _join(where, "potsdam"), str(exc))
                    continue
                out.append((where, spec))
        elif isinstance(inp, FilesInput):
            for img in inp.files:
                comp: dict[str, Path | None] = {}
                for key in ("dsm", "ndsm", "labels"):
                    t = getattr(inp, key)
                    comp[key] = None
                    if t is not None:
                        p = _resolve(c.base, t.format(stem=img.stem))
                        if not p.is_file():
                            c.add(_join(where, key), f"{p} (for {img.name}) does not exist")
                        comp[key] = p
                out.append(
                    (
                        where,
                        SceneSpec(
                            id=img.stem,
                            image=img,
                            dsm=comp["dsm"],
                            ndsm=comp["ndsm"],
                            labels=comp["labels"],
                            image_bands=inp.band_names,
                            schema=schema,
                        ),
                    )
                )
        else:
            (spec,) = resolve_scenes(
                image=inp.image,
                dsm=inp.dsm,
                ndsm=inp.ndsm,
                labels=inp.labels,
                band_names=inp.band_names,
                schema=schema,
            )
            out.append((where, replace(spec, id=inp.id) if inp.id else spec))
    seen: dict[str, str] = {}
    for where, spec in out:
        if spec.id in seen:
            c.add(
                where,
                f"scene id {spec.id!r} ({spec.image}) is also given by {seen[spec.id]}; "
                "give each scene once (set id: for explicit images)",
            )
        seen.setdefault(spec.id, where)
    return out


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
    data, duplicates = _read_yaml(src)
    base = src.resolve().parent
    c = _Checker(base, check_files=check_files)
    c.problems.extend(duplicates)
    top = c.mapping(data, "", _TOP, required=("inputs", "model", "output", "steps"))
    if top is None:
        raise JobConfigError(src, c.problems)
    version = c.get(top, "version", "", _int(1), 1)
    if version != 1:
        c.add("version", f"{version}: this geoseg reads job version 1")
    name = c.get(top, "name", "", _text, src.stem)
    # inputs
    inputs: list[tuple[str, JobInput]] = []
    raw_inputs = top.get("inputs")
    if isinstance(raw_inputs, dict):
        raw_inputs = [raw_inputs]
    if "inputs" in top and (not isinstance(raw_inputs, list) or not raw_inputs):
        c.add("inputs", f"expected a list of input entries, got {_kind(top['inputs'])}")
        raw_inputs = []
    for i, raw in enumerate(raw_inputs or []):
        inp = _input(c, raw, f"inputs[{i}]")
        if inp is not None:
            inputs.append((f"inputs[{i}]", inp))
    # model, output, schema, scheduler, workers
    model = c.path(top["model"], "model", kind="file") if "model" in top else None
    output = None
    if "output" in top:
        out_s = c.get(top, "output", "", _text, None)
        output = _resolve(base, out_s) if out_s else None
    schema_s = c.get(top, "schema", "", _text, "potsdam")
    schema = _check_schema(c, schema_s, base)
    scheduler = c.get(top, "scheduler", "", _scheduler, None, nullable=True)
    workers = c.get(top, "workers", "", _int(1), 2)
    # steps
    predict = PredictStep()
    vectorize: VectorizeStep | None = None
    evaluate: EvaluateStep | None = None
    steps = c.mapping(top.get("steps"), "steps", _STEP_KEYS) if "steps" in top else None
    if steps is not None:
        if "predict" not in steps:
            c.add(
                "steps.predict",
                "missing; every job predicts (write `predict: {}` for the defaults)",
            )
        else:
            predict = _predict(c, steps["predict"], "steps.predict")
        if "vectorize" in steps:
            vectorize = _vectorize(c, steps["vectorize"], "steps.vectorize")
        if "evaluate" in steps:
            evaluate = _evaluate(c, steps["evaluate"], "steps.evaluate")
    _cross_checks(c, predict, vectorize, evaluate, schema, model)
    scenes: list[tuple[str, SceneSpec]] = []
    if check_files:
        scenes = _scenes(c, inputs, schema_s if schema is None else str(schema))
        if evaluate is not None:
            unlabelled = [s.id for _, s in scenes if s.labels is None]
            if unlabelled:
                c.add(
                    "steps.evaluate",
                    f"scene(s) {', '.join(unlabelled)} have no labels to evaluate against; "
                    "give labels for every scene or drop steps.evaluate",
                )
    if c.problems or model is None or output is None:
        raise JobConfigError(src, c.problems or ["model and output are required"])
    return Job(
        source=src.resolve(),
        name=name,
        inputs=tuple(inp for _, inp in inputs),
        scenes=tuple(s for _, s in scenes),
        model=model,
        output=output,
        schema=str(schema) if schema is not None else schema_s,
        scheduler=scheduler,
        workers=workers,
        predict=predict,
        vectorize=vectorize,
        evaluate=evaluate,
    )


def _check_schema(c: _Checker, value: str, base: Path) -> str | Path | None:
    """The schema as a built-in name or a resolved file; None when it is unusable."""
    from geoseg.errors import SchemaError
    from geoseg.schema import load_schema

    if re.fullmatch(r"[A-Za-z0-9_-]+", value) and not (base / value).exists():
        spec: str | Path = value
    else:
        spec = _resolve(base, value)
        if not c.check_files:
            return spec
    try:
        load_schema(spec)
    except SchemaError as exc:
        c.add("schema", str(exc))
        return None
    return spec


def _cross_checks(
    c: _Checker,
    predict: PredictStep,
    vectorize: VectorizeStep | None,
    evaluate: EvaluateStep | None,
    schema: str | Path | None,
    model: Path | None,
) -> None:
    from geoseg.errors import CheckpointError, SchemaError
    from geoseg.schema import load_schema

    tile = predict.tile_size
    tile_src = "tile_size"
    if model is not None and c.check_files:
        from geoseg.checkpoint import load_checkpoint

        try:
            ckpt = load_checkpoint(model)
        except CheckpointError as exc:
            c.add("model", str(exc))
        else:
            if tile is None:
                tile, tile_src = ckpt.tile_size, "the checkpoint's tile size"
    judged = not {"steps.predict.overlap", "steps.predict.tile_size", "steps.predict.size"} & c.bad
    if judged and tile is not None and predict.overlap >= tile:
        c.add(
            "steps.predict.overlap",
            f"{predict.overlap} must be smaller than {tile_src} ({tile})",
        )
    sch = None
    if schema is not None and (c.check_files or isinstance(schema, str)):
        try:
            sch = load_schema(schema)
        except SchemaError:
            sch = None  # reported by _check_schema
    if vectorize is not None:
        if vectorize.probabilities and not predict.probabilities:
            c.add(
                "steps.vectorize.probabilities",
                "needs steps.predict.probabilities: true (the probability rasters)",
            )
        if sch is not None:
            known = {"building", "road", *sch.classes}
            bad = [n for n in vectorize.classes if n not in known]
            if bad:
                c.add(
                    "steps.vectorize.classes",
                    f"{', '.join(bad)}: not building, road or a class of schema {sch.name!r} "
                    f"({', '.join(sch.classes)})",
                )
    if evaluate is not None and sch is not None:
        bad = [n for n in evaluate.ignore_class if n not in sch.classes]
        if bad:
            c.add(
                "steps.evaluate.ignore_class",
                f"{', '.join(bad)}: not a class of schema {sch.name!r} ({', '.join(sch.classes)})",
            )
