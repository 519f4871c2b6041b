"""Self-describing model checkpoints.

One file holds everything needed to use a model on a new scene: the architecture and its
arguments, the weights, the band names and their normalisation, the class schema, the tile
size and ground sample distance it was trained at, training metrics and the geoseg version.

A model may have outputs beyond its classes: ``extra_outputs`` names them (e.g.
``["contact"]``, the building-contact logit learnt from a store tiled with footprints). Its
architecture is then built with ``num_classes = len(schema) + len(extra_outputs)`` output
channels: the first ``len(schema)`` are the class logits, the others the extra outputs in
order. Such a checkpoint is written as format version 2; one without extra outputs as
version 1 (and a checkpoint without the field has none).

The file is a plain ``torch.save`` of dicts, lists, strings, numbers and tensors, so it
loads with ``torch.load(..., weights_only=True)``: no pickled code is ever executed. A
tampered, truncated or foreign file raises :class:`~geoseg.errors.CheckpointError`, and so
does a well-formed file that could not be used: :func:`load_checkpoint` checks everything
(:meth:`Checkpoint.validate`: the architecture, its arguments, the weights against it, the
normalisation, the classes, the tile size and the GSD) before anyone starts work with it.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._io import atomic_path
from geoseg._torch import safe_load
from geoseg.errors import CheckpointError, InputError, SchemaError, first_line
from geoseg.schema import ClassSchema

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MIN_TILE_SIZE",
    "Checkpoint",
    "extra_outputs_problem",
    "file_sha256",
    "load_checkpoint",
    "normalisation_problem",
    "save_checkpoint",
]

FORMAT = "geoseg-checkpoint"
FORMAT_VERSION = 2
"""The newest format this geoseg reads (2 added ``extra_outputs``; 1 is written without)."""

_EXTRA_OUTPUT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RESERVED_OUTPUTS = frozenset({"classes", "probs"})


@dataclass(frozen=True)
class Checkpoint:
    """A trained model and what it needs to be applied correctly.

    Attributes:
        arch: ``{"name": str, "args": dict}``; rebuilt with ``build_model(name, **args)``.
        state_dict: Model weights.
        bands: Input band names, in model channel order.
        mean: Per-band normalisation mean (same order as ``bands``).
        std: Per-band normalisation standard deviation.
        schema: Output classes.
        tile_size: Tile edge the model was trained on, in pixels.
        gsd: Ground sample distance of the training data, metres per pixel.
        metrics: Training/validation metrics of this checkpoint (e.g. ``val_miou``, ``epoch``).
        config: The training options, for provenance.
        geoseg_version: Version that wrote the file.
        extra_outputs: Names of the model's outputs after the class logits (one channel
            each, e.g. ``("contact",)``); empty for a plain class model.
    """

    arch: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    schema: ClassSchema
    tile_size: int
    gsd: float
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    extra_outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = normalisation_problem(self.bands, self.mean, self.std)
        if problem is None:
            problem = extra_outputs_problem(self.extra_outputs)
        if problem is not None:
            raise CheckpointError(f"checkpoint of {self.arch.get('name', 'a model')!r}: {problem}")
        object.__setattr__(self, "extra_outputs", tuple(self.extra_outputs))

    @classmethod
    def untrained(
        cls,
        name: str,
        *,
        bands: tuple[str, ...],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        schema: ClassSchema,
        tile_size: int,
        gsd: float,
        config: dict[str, Any] | None = None,
        extra_outputs: tuple[str, ...] = (),
        **arch_args: Any,
    ) -> Checkpoint:
        """A checkpoint of architecture ``name`` with fresh (random) weights.

        For benchmarks and tests; seed torch first for reproducible weights.
        """
        from geoseg.models import build_model, model_spec

        spec = model_spec(
            name,
            in_channels=len(bands),
            num_classes=len(schema) + len(extra_outputs),
            **arch_args,
        )
        model = build_model(spec["name"], **spec["args"])
        return cls(
            arch=spec,
            state_dict=model.state_dict(),
            bands=bands,
            mean=mean,
            std=std,
            schema=schema,
            tile_size=tile_size,
            gsd=gsd,
            config=dict(config or {}),
            extra_outputs=tuple(extra_outputs),
        )

    @property
    def num_classes(self) -> int:
        """Number of output classes (the first channels of the model's output)."""
        return len(self.schema)

    @property
    def num_outputs(self) -> int:
        """Number of output channels: the classes, then the extra outputs."""
        return len(self.schema) + len(self.extra_outputs)

    def validate(self, source: str | os.PathLike[str] | None = None) -> None:
        """Check that this checkpoint can be applied, without building the real model.

        Checked: the architecture is registered and its arguments are valid and match the
        bands and classes; the weights fit it exactly (every key, shape and kind, all values
        finite; checked on torch's ``meta`` device, so nothing is allocated); one finite
        mean and one finite std > 0 per band, band names unique; at least two classes; a
        tile size of at least :data:`MIN_TILE_SIZE` pixels; a finite GSD > 0.

        Args:
            source: The checkpoint's file, named in the message (``checkpoint`` if None).

        Raises:
            CheckpointError: ``"{source}: {what is wrong}; {how to fix it}"``, one line.
        """
        where = str(source) if source is not None else "checkpoint"
        for check in (self._fields_problem, self._arch_problem, self._weights_problem):
            problem = check()
            if problem is not None:
                raise CheckpointError(f"{where}: {problem}")

    def _fields_problem(self) -> str | None:
        """What is wrong with the bands, normalisation, classes, tile size or GSD."""
        problem = normalisation_problem(self.bands, self.mean, self.std)
        if problem is not None:
            return problem
        if len(self.schema) < 2:
            return (
                f"its class schema has {len(self.schema)} class; a model needs at least two "
                f"classes; {_RETRAIN}"
            )
        if (
            isinstance(self.tile_size, bool)
            or not isinstance(self.tile_size, int)
            or self.tile_size < MIN_TILE_SIZE
        ):
            return f"tile size {self.tile_size!r} is not an integer >= {MIN_TILE_SIZE}; {_RETRAIN}"
        if not _is_real(self.gsd) or not math.isfinite(self.gsd) or self.gsd <= 0:
            return (
                f"ground sample distance {self.gsd!r} is not a number > 0 (metres per pixel); "
                f"{_RETRAIN}"
            )
        return None

    def _arch_problem(self) -> str | None:
        """What is wrong with the architecture's name and arguments."""
        from geoseg.models import MODELS

        name, args = self.arch.get("name"), self.arch.get("args", {})
        if not isinstance(name, str) or name not in MODELS:
            return (
                f"unknown architecture {name!r} (known: {', '.join(MODELS)}); it was written "
                "by another program or a newer geoseg; use a checkpoint of this geoseg"
            )
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            return f"the arguments of architecture {name!r} are not a mapping; {_RETRAIN}"
        outputs = f"{len(self.schema)} classes"
        if self.extra_outputs:
            outputs += f" and {len(self.extra_outputs)} extra output(s)"
        for key, want, what in (
            ("in_channels", len(self.bands), f"{len(self.bands)} bands"),
            ("num_classes", self.num_outputs, outputs),
        ):
            if args.get(key) != want:
                return (
                    f"architecture {name!r} has {key}={args.get(key)!r} but the checkpoint "
                    f"lists {what}; {_RETRAIN}"
                )
        return None

    def _weights_problem(self) -> str | None:
        """What keeps the weights from loading into the architecture (on the meta device)."""
        import torch

        from geoseg.models import build_model

        name, args = str(self.arch["name"]), dict(self.arch.get("args", {}))
        try:
            with torch.device("meta"):
                model = build_model(name, **args)
        except (InputError, TypeError, ValueError, RuntimeError) as exc:
            return (
                f"architecture {name!r} cannot be built with its arguments {args} "
                f"({first_line(exc, 160)}); {_RETRAIN}"
            )
        want = model.state_dict()
        missing = [k for k in want if k not in self.state_dict]
        if missing:
            return (
                f"the weights lack {missing[0]!r} ({len(missing)} of {len(want)} missing) for "
                f"architecture {name!r}; {_DAMAGED}"
            )
        unexpected = [k for k in self.state_dict if k not in want]
        if unexpected:
            return (
                f"the weights hold {unexpected[0]!r}, which architecture {name!r} does not "
                f"have ({len(unexpected)} unexpected); {_DAMAGED}"
            )
        for key, ref in want.items():
            value = self.state_dict[key]
            if not isinstance(value, torch.Tensor):
                return f"weight {key!r} is a {type(value).__name__}, not a tensor; {_DAMAGED}"
            if tuple(value.shape) != tuple(ref.shape):
                return (
                    f"weight {key!r} has shape {list(value.shape)} but architecture {name!r} "
                    f"needs {list(ref.shape)}; {_DAMAGED}"
                )
            if value.is_complex() or value.is_floating_point() != ref.is_floating_point():
                return (
                    f"weight {key!r} is {str(value.dtype).removeprefix('torch.')} but "
                    f"architecture {name!r} needs {str(ref.dtype).removeprefix('torch.')}; "
                    f"{_DAMAGED}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"weight {key!r} holds NaN or infinite values; {_RETRAIN}"
        return None

    def build_model(self) -> torch.nn.Module:
        """The architecture with these weights loaded, in eval mode.

        Raises:
            CheckpointError: The architecture cannot be built, or the weights do not fit it
                (:meth:`validate` says which first).
        """
        from geoseg.models import build_model

        name = str(self.arch.get("name"))
        try:
            model = build_model(name, **dict(self.arch.get("args", {})))
            model.load_state_dict(self.state_dict)
        except (InputError, TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"checkpoint weights do not fit architecture {name!r} "
                f"({first_line(exc, 160)}); {_DAMAGED}"
            ) from None
        return model.eval()

    def to_payload(self) -> dict[str, Any]:
        """The plain-data form that is saved."""
        from geoseg import __version__

        payload = {
            "format": FORMAT,
            # version 1 unless the model has extra outputs: older geoseg reads it
            "format_version": 2 if self.extra_outputs else 1,
            "arch": {"name": str(self.arch["name"]), "args": dict(self.arch.get("args", {}))},
            "state_dict": self.state_dict,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "schema": self.schema.to_dict(),
            "tile_size": int(self.tile_size),
            "gsd": float(self.gsd),
            "metrics": dict(self.metrics),
            "config": dict(self.config),
            "geoseg_version": self.geoseg_version or __version__,
        }
        if self.extra_outputs:
            payload["extra_outputs"] = list(self.extra_outputs)
        return payload


def save_checkpoint(
    ckpt: Checkpoint, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a checkpoint atomically (temporary name, then rename).

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is false.
    """
    import torch

    payload = ckpt.to_payload()
    payload["state_dict"] = {k: v.detach().cpu() for k, v in ckpt.state_dict.items()}
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


MIN_TILE_SIZE = 16
"""The smallest tile size a checkpoint may record (as ``--tile-size`` allows)."""

_RETRAIN = "the file is damaged or was not written by `geoseg train`; train the model again"
_DAMAGED = "the file is damaged or its weights were edited; use the .pt `geoseg train` wrote"


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def extra_outputs_problem(names: object, *, fix: str = _RETRAIN) -> str | None:
    """What is wrong with a model's extra output names, and ``fix``; None when usable.

    Names are lower-case identifiers (``contact``), unique, and not ``classes`` or ``probs``.
    """
    if not isinstance(names, list | tuple):
        return f"its extra outputs {names!r} are not a list of names; {fix}"
    for name in names:
        if (
            not isinstance(name, str)
            or not _EXTRA_OUTPUT_NAME.fullmatch(name)
            or name in _RESERVED_OUTPUTS
        ):
            return f"extra output name {name!r} is not a lower-case identifier; {fix}"
    if len(set(names)) != len(names):
        return f"its extra outputs {list(names)} repeat a name; {fix}"
    return None


def normalisation_problem(
    bands: tuple[object, ...],
    mean: tuple[object, ...],
    std: tuple[object, ...],
    *,
    fix: str = _RETRAIN,
) -> str | None:
    """What is wrong with the bands and their normalisation, and ``fix``; None when usable.

    The one check of a model's inputs, for checkpoints and for in-memory models alike.
    """
    if not bands:
        return f"it lists no input bands; {fix}"
    if not (len(bands) == len(mean) == len(std)):
        return (
            f"{len(bands)} bands but {len(mean)} means and {len(std)} stds (one of each per "
            f"band is needed); {fix}"
        )
    for b in bands:
        if not isinstance(b, str) or not b:
            return f"band name {b!r} is not a text; {fix}"
    if len(set(bands)) != len(bands):
        dup = next(b for b in bands if bands.count(b) > 1)
        return f"band {dup!r} is listed twice; {fix}"
    for b, m, s in zip(bands, mean, std, strict=True):
        if not _is_real(m) or not math.isfinite(m):  # type: ignore[arg-type]
            return f"the mean of band {b!r} is {m!r}, not a finite number; {fix}"
        if not _is_real(s) or not math.isfinite(s) or s <= 0:  # type: ignore[arg-type,operator]
            return (
                f"the std of band {b!r} is {s!r}; it must be a finite number > 0 "
                f"(inputs are divided by it); {fix}"
            )
    return None


_REQUIRED = {
    "arch": dict,
    "state_dict": dict,
    "bands": list,
    "mean": list,
    "std": list,
    "schema": dict,
    "tile_size": int,
    "gsd": float,
}


_ZIP_MAGIC = b"PK\x03\x04"


def _check_archive(p: Path) -> None:
    """Refuse what ``torch.save`` did not write as a whole zip archive, before unpickling.

    Every checkpoint geoseg writes is one (torch's default format), so an empty file, a
    text file or a bare pickle never reaches the unpickler, and a truncated or bit-flipped
    copy is named as such (the zip directory and every member's CRC are checked).
    """
    try:
        with p.open("rb") as f:
            head = f.read(len(_ZIP_MAGIC))
        if not head:
            raise CheckpointError(f"{p}: the file is empty (0 bytes); re-copy it or train again")
        if head != _ZIP_MAGIC:
            raise CheckpointError(
                f"{p}: not a geoseg checkpoint (not a torch archive: it starts with {head!r}); "
                "use the .pt file `geoseg train` wrote"
            )
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(
            f"{p}: the checkpoint is truncated or corrupt ({first_line(exc, 120)}); re-copy it "
            "or train again"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{p}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if bad is not None:
        raise CheckpointError(
            f"{p}: the checkpoint is corrupt (entry {bad!r} fails its checksum); re-copy it or "
            "train again"
        )


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str = "cpu") -> Checkpoint:
    """Load and validate a checkpoint without executing any pickled code.

    The checkpoint is checked completely (:meth:`Checkpoint.validate`), so a file that
    loads is one that can be used.

    Raises:
        CheckpointError: Missing, truncated, tampered with, not a geoseg checkpoint, or one
            that cannot be used (the message names the file and the first problem).
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a checkpoint file" if p.is_dir() else "checkpoint not found"
        raise CheckpointError(f"{p}: {what}; give the .pt file `geoseg train` wrote")
    _check_archive(p)
    payload = safe_load(
        p,
        map_location=map_location,
        what="checkpoint",
        hint="re-copy it or train again",
    )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}: not a geoseg checkpoint (no '{FORMAT}' marker); use a file written by "
            "`geoseg train`"
        )
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{p}: checkpoint format version {version!r} is invalid; {_RETRAIN}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {version!r} is newer than this geoseg supports "
            f"({FORMAT_VERSION}); upgrade geoseg"
        )
    for key, typ in _REQUIRED.items():
        value = payload.get(key)
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise CheckpointError(
                f"{p}: checkpoint field {key!r} is missing or not a {typ.__name__}; {_RETRAIN}"
            )
        payload[key] = value
    if "name" not in payload["arch"]:
        raise CheckpointError(f"{p}: checkpoint field 'arch' has no model name; {_RETRAIN}")
    bands, mean, std = (tuple(payload[k]) for k in ("bands", "mean", "std"))
    problem = normalisation_problem(bands, mean, std)
    if problem is None:
        problem = extra_outputs_problem(payload.get("extra_outputs", []))
    if problem is not None:
        raise CheckpointError(f"{p}: {problem}")
    try:
        # The schema's own message names the file and says what is wrong.
        schema = ClassSchema.from_dict(payload["schema"], source=f"{p} (its class schema)")
    except SchemaError as exc:
        raise CheckpointError(str(exc)) from None
    try:
        ckpt = Checkpoint(
            arch=payload["arch"],
            state_dict=payload["state_dict"],
            bands=bands,
            mean=mean,
            std=std,
            schema=schema,
            tile_size=payload["tile_size"],
            gsd=payload["gsd"],
            metrics=dict(payload.get("metrics") or {}),
            config=dict(payload.get("config") or {}),
            geoseg_version=str(payload.get("geoseg_version", "")),
            extra_outputs=tuple(payload.get("extra_outputs", [])),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{p}: checkpoint content is malformed ({first_line(exc, 160)}); {_RETRAIN}"
        ) from None
    ckpt.validate(p)
    return ckpt


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (the "model hash" recorded in outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
