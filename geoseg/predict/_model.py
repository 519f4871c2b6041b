"""The model of a prediction and its identity: what tasks carry, and how workers load it.

:class:`PredictModel` is a network with what it needs to be applied (bands, normalisation,
classes, tile size, GSD, hash). Block tasks never carry the network when a checkpoint path
will do: they carry a :class:`ModelRef` (the model's :class:`ModelMeta` and the path, or the
model itself), and each worker process loads the model once (:func:`load_model`, which
checks that the checkpoint did not change while predicting).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.errors import CheckpointError
from geoseg.schema import ClassSchema

if TYPE_CHECKING:
    import torch

__all__ = [
    "ModelMeta",
    "ModelRef",
    "PredictModel",
    "load_model",
    "meta_of",
    "model_ref",
    "module_sha256",
]


@dataclass(frozen=True, eq=False)
class PredictModel:
    """A model ready to predict, with what it needs to be applied correctly.

    Build one from a checkpoint with :meth:`from_checkpoint`, or directly from any
    ``torch.nn.Module`` that maps (N, bands, H, W) to logits (N, classes, H, W).

    Attributes:
        module: The network (switched to eval mode and moved to the device when used).
        bands: Input band names, in channel order (mapped by name onto scene bands).
        mean: Per-band normalisation mean.
        std: Per-band normalisation standard deviation.
        schema: Output classes.
        tile_size: Tile edge the model was trained on.
        gsd: Ground sample distance of the training data (metres per pixel).
        name: Architecture name (for provenance).
        sha256: Model hash (of the checkpoint file, or of the name and weights when empty).
        extra_outputs: Outputs after the class logits, one channel each (``("contact",)``):
            each is a sigmoid probability, blended like the classes and written as
            ``{scene}_{name}.tif``.
    """

    module: torch.nn.Module
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    schema: ClassSchema
    tile_size: int
    gsd: float
    name: str = "model"
    sha256: str = ""
    extra_outputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem is not None:
            raise CheckpointError(f"model {self.name!r}: {problem}")
        if not self.sha256:
            object.__setattr__(self, "sha256", module_sha256(self.module, self.name))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> PredictModel:
        """Load a checkpoint (:func:`geoseg.checkpoint.load_checkpoint`) and build its model.

        Raises:
            CheckpointError: Missing, corrupt, foreign or unusable checkpoint (the message
                names the file): see :meth:`geoseg.checkpoint.Checkpoint.validate`.
        """
        from geoseg.checkpoint import file_sha256, load_checkpoint

        ckpt = load_checkpoint(path)
        return cls(
            module=ckpt.build_model(),
            bands=ckpt.bands,
            mean=ckpt.mean,
            std=ckpt.std,
            schema=ckpt.schema,
            tile_size=ckpt.tile_size,
            gsd=ckpt.gsd,
            name=str(ckpt.arch.get("name", "model")),
            sha256=file_sha256(path),
            extra_outputs=ckpt.extra_outputs,
        )


@dataclass(frozen=True)
class ModelMeta:
    """What block tasks and provenance need to know of a model, without its weights."""

    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    schema: ClassSchema
    tile_size: int
    gsd: float
    name: str
    sha256: str
    extra_outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelRef:
    """What a task needs to get the model: the checkpoint path, or the model itself."""

    meta: ModelMeta
    path: str | None = None
    inline: PredictModel | None = field(default=None, compare=False)


def meta_of(m: PredictModel) -> ModelMeta:
    """The metadata of ``m`` (plain tuples and floats)."""
    return ModelMeta(
        bands=tuple(m.bands),
        mean=tuple(float(v) for v in m.mean),
        std=tuple(float(v) for v in m.std),
        schema=m.schema,
        tile_size=int(m.tile_size),
        gsd=float(m.gsd),
        name=m.name,
        sha256=m.sha256,
        extra_outputs=tuple(m.extra_outputs),
    )


def model_ref(model: str | os.PathLike[str] | PredictModel) -> ModelRef:
    """What tasks carry for ``model``: a checkpoint's metadata and path, or the model itself.

    A checkpoint is checked completely here, in the calling process (its architecture,
    arguments and weights too: :meth:`geoseg.checkpoint.Checkpoint.validate`), so that no
    task is ever started with a model that cannot be built.

    Raises:
        CheckpointError: Missing, corrupt, foreign or unusable checkpoint (the message names
            the file and the first problem).
    """
    if isinstance(model, PredictModel):
        return ModelRef(meta=meta_of(model), inline=model)
    from geoseg.checkpoint import file_sha256, load_checkpoint

    path = Path(model)
    ckpt = load_checkpoint(path)
    meta = ModelMeta(
        bands=tuple(ckpt.bands),
        mean=tuple(ckpt.mean),
        std=tuple(ckpt.std),
        schema=ckpt.schema,
        tile_size=ckpt.tile_size,
        gsd=ckpt.gsd,
        name=str(ckpt.arch.get("name", "model")),
        sha256=file_sha256(path),
        extra_outputs=ckpt.extra_outputs,
    )
    return ModelRef(meta=meta, path=str(path.resolve()))


def _problem(m: PredictModel) -> str | None:
    """What keeps ``m`` from being applied, and how to fix it; None when it is usable."""
    from geoseg.checkpoint import extra_outputs_problem, normalisation_problem

    problem = normalisation_problem(
        m.bands, m.mean, m.std, fix="give one finite mean and one std > 0 per band"
    )
    if problem is None:
        problem = extra_outputs_problem(m.extra_outputs, fix="name each with a lower-case word")
    if problem is not None:
        return problem
    if len(m.schema) < 2:
        return "its schema has fewer than two classes; a model needs at least two"
    if isinstance(m.tile_size, bool) or not isinstance(m.tile_size, int) or m.tile_size < 1:
        return f"tile size {m.tile_size!r}; give a positive number of pixels"
    if not (math.isfinite(m.gsd) and m.gsd > 0):
        return f"ground sample distance {m.gsd!r}; give the metres per pixel (> 0)"
    return None


def module_sha256(module: torch.nn.Module, name: str) -> str:
    """A hash of a model without a checkpoint file: its name, class and weights."""
    import torch

    h = hashlib.sha256(name.encode())
    h.update(type(module).__qualname__.encode())
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_model(ref: ModelRef) -> PredictModel:
    """Load the checkpoint ``ref`` points to (on a worker), checking its hash.

    Raises:
        CheckpointError: No checkpoint path, or the checkpoint changed since it was planned.
    """
    if ref.path is None:
        raise CheckpointError("the model is neither a checkpoint path nor a model object")
    model = PredictModel.from_checkpoint(ref.path)
    if model.sha256 != ref.meta.sha256:
        raise CheckpointError(
            f"{ref.path}: the checkpoint changed while predicting (hash {model.sha256[:12]} "
            f"!= {ref.meta.sha256[:12]}); do not overwrite a model that is in use"
        )
    return model
