"""Self-describing model checkpoints.

One file holds everything needed to use a model on a new scene: the architecture and its
arguments, the weights, the band names and their normalisation, the class schema, the tile
size and ground sample distance it was trained at, training metrics and the geoseg version.

The file is a plain ``torch.save`` of dicts, lists, strings, numbers and tensors, so it
loads with ``torch.load(..., weights_only=True)``: no pickled code is ever executed. A
tampered, truncated or foreign file raises :class:`~geoseg.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._io import atomic_path
from geoseg._torch import safe_load
from geoseg.errors import CheckpointError, SchemaError, first_line
from geoseg.schema import ClassSchema

if TYPE_CHECKING:
    import torch

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Checkpoint",
    "file_sha256",
    "load_checkpoint",
    "save_checkpoint",
]

FORMAT = "geoseg-checkpoint"
FORMAT_VERSION = 1


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

    def __post_init__(self) -> None:
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise CheckpointError(
                f"checkpoint has {len(self.bands)} bands but {len(self.mean)} means and "
                f"{len(self.std)} stds"
            )

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
        **arch_args: Any,
    ) -> Checkpoint:
        """A checkpoint of architecture ``name`` with fresh (random) weights.

        For benchmarks and tests; seed torch first for reproducible weights.
        """
        from geoseg.models import build_model, model_spec

        spec = model_spec(name, in_channels=len(bands), num_classes=len(schema), **arch_args)
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
        )

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.schema)

    def build_model(self) -> torch.nn.Module:
        """The architecture with these weights loaded, in eval mode.

        Raises:
            CheckpointError: The weights do not fit the architecture.
        """
        from geoseg.models import build_model

        args = dict(self.arch.get("args", {}))
        model = build_model(str(self.arch["name"]), **args)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint weights do not fit architecture {self.arch['name']!r}: "
                f"{first_line(exc)}"
            ) from None
        return model.eval()

    def to_payload(self) -> dict[str, Any]:
        """The plain-data form that is saved."""
        from geoseg import __version__

        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
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


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str = "cpu") -> Checkpoint:
    """Load and validate a checkpoint without executing any pickled code.

    Raises:
        CheckpointError: Missing, truncated, tampered with, or not a geoseg checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found; give the .pt file `geoseg train` wrote")
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
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{p}: checkpoint format version {version!r} is newer than this geoseg supports "
            f"({FORMAT_VERSION}); upgrade geoseg"
        )
    for key, typ in _REQUIRED.items():
        value = payload.get(key)
        if typ is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, typ):
            raise CheckpointError(f"{p}: checkpoint field {key!r} is missing or malformed")
        payload[key] = value
    if "name" not in payload["arch"]:
        raise CheckpointError(f"{p}: checkpoint field 'arch' has no model name")
    try:
        return Checkpoint(
            arch=payload["arch"],
            state_dict=payload["state_dict"],
            bands=tuple(payload["bands"]),
            mean=tuple(payload["mean"]),
            std=tuple(payload["std"]),
            schema=ClassSchema.from_dict(payload["schema"], source=str(p)),
            tile_size=payload["tile_size"],
            gsd=payload["gsd"],
            metrics=dict(payload.get("metrics") or {}),
            config=dict(payload.get("config") or {}),
            geoseg_version=str(payload.get("geoseg_version", "")),
        )
    except (TypeError, ValueError, SchemaError) as exc:
        raise CheckpointError(f"{p}: checkpoint content is malformed ({exc})") from None


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file (the "model hash" recorded in outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
