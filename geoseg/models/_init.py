"""Initialise a model's ResNet backbone from a local pretrained state dict file."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from geoseg._torch import safe_load
from geoseg.errors import BandMismatchError, CheckpointError, InputError

__all__ = ["RGB", "InitReport", "find_resnet_backbone", "load_init_weights"]

logger = logging.getLogger(__name__)

RGB = ("red", "green", "blue")
"""Band order of torchvision / ImageNet first convolutions."""

# Containers that wrap a state dict, and key prefixes stripped from its names.
_WRAPPERS = ("state_dict", "model", "model_state_dict")
_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_CONV1 = "conv1.weight"


@dataclass(frozen=True)
class InitReport:
    """What :func:`load_init_weights` did.

    Attributes:
        path: The file that was read.
        backbone: Name of the backbone module inside the model (e.g. ``backbone``).
        loaded: Backbone keys set from the file (first convolution included).
        missing: Backbone keys the file lacked (left at their initialisation; only
            ``num_batches_tracked`` buffers unless ``strict=False``).
        unused: Keys of the file not used (e.g. ``fc.weight``), after prefix stripping.
        band_sources: For each model band, where its first-conv filter came from: a source
            band name or ``mean(red,green,blue)``.
        first_conv_scale: The factor the whole first-conv weight was multiplied by.
    """

    path: str
    backbone: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unused: tuple[str, ...]
    band_sources: tuple[tuple[str, str], ...]
    first_conv_scale: float


def find_resnet_backbone(model: nn.Module) -> tuple[str, torchvision.models.ResNet]:
    """The first torchvision ResNet inside ``model`` (fcn_* backbones, smp ResNet encoders).

    Raises:
        InputError: If the model has no ResNet backbone.
    """
    for name, module in model.named_modules():
        if isinstance(module, torchvision.models.ResNet):
            return name, module
    raise InputError(
        f"{type(model).__name__} has no ResNet backbone; pretrained initialisation works for "
        "fcn_* models and smp models with a resnet encoder"
    )


def load_init_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    band_names: Sequence[str],
    source_bands: Sequence[str] = RGB,
    strict: bool = True,
) -> InitReport:
    """Load a local torchvision or TorchGeo ResNet state dict into the model's ResNet backbone.

    Works for ``fcn_*`` and for smp models whose encoder is a ResNet. The file is read with
    ``torch.load(path, weights_only=True)``; it may be a plain state dict, a dict holding one
    under ``state_dict``, ``model`` or ``model_state_dict``, and its keys may carry
    ``module.``, ``backbone.``, ``encoder.`` or ``model.`` prefixes. Keys the backbone does
    not have (``fc.*``, decoder weights) are ignored and listed in the report.

    First convolution, mapped by band NAME: the file's filters are taken to be in
    ``source_bands`` order (torchvision/ImageNet: red, green, blue). Each model band whose
    name is a source band gets that band's filter; every other band (nir, ndsm, dsm, ...) gets
    the mean of the source filters, a neutral start that responds to the band's overall
    brightness like the pretrained filters do to a grey image. Then the whole first-conv
    weight is multiplied by ``len(source_bands) / len(band_names)`` (3/n for RGB files): with
    bands normalised alike, the first layer's response is a sum over bands, and this keeps
    its scale, and so the pretrained BatchNorm statistics, as they were for the source
    (the convention of segmentation_models_pytorch). An RGB model is loaded unchanged.

    Args:
        model: A model from :func:`geoseg.models.build_model` with a ResNet backbone.
        path: A LOCAL state dict file; nothing is downloaded.
        band_names: The model's input bands, in order (one per input channel).
        source_bands: The file's first-conv input bands, in order.
        strict: If true, every backbone weight must be in the file (BatchNorm
            ``num_batches_tracked`` counters excepted); if false, missing ones keep their
            initialisation and are listed in the report.

    Returns:
        An :class:`InitReport` naming the loaded, missing and unused keys.

    Raises:
        InputError: The file does not exist or the model has no ResNet backbone.
        BandMismatchError: ``band_names`` does not match the model's input channels.
        CheckpointError: The file is unreadable, holds no ResNet weights, or its shapes do
            not fit the backbone (e.g. a resnet50 file for a resnet18 model).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such weights file; give the path of a local ResNet state dict")
    prefix, backbone = find_resnet_backbone(model)
    target = backbone.state_dict()
    conv = target[_CONV1]
    bands = [b.lower() for b in band_names]
    if len(bands) != conv.shape[1]:
        raise BandMismatchError(
            f"{len(bands)} band names ({', '.join(band_names)}) for a model with "
            f"{conv.shape[1]} input channels; give one name per input channel"
        )
    if len(set(bands)) != len(bands):
        raise BandMismatchError(f"band names {list(band_names)} repeat a name; make them unique")
    source = _read_state_dict(p)

    mismatched = [
        f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k != _CONV1 and k in source and source[k].shape != v.shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{p}: {len(mismatched)} weights do not fit the {type(model).__name__} backbone "
            f"(file vs model: {mismatched[0]}); is it for another ResNet depth, e.g. a resnet50 "
            "file for a resnet18 model? use weights of the model's own depth"
        )
    present = [k for k in target if k in source]
    if not present:
        raise CheckpointError(
            f"{p}: none of its {len(source)} keys is a ResNet backbone weight (e.g. "
            f"{next(iter(source), 'none')!r}); give a torchvision or TorchGeo ResNet state dict"
        )
    missing = [k for k in target if k not in source]
    if strict and any(not k.endswith("num_batches_tracked") for k in missing):
        first = next(k for k in missing if not k.endswith("num_batches_tracked"))
        raise CheckpointError(
            f"{p}: {len(missing)} backbone weights are missing (e.g. {first}); use a complete "
            "ResNet state dict, or pass strict=False to load it partially"
        )

    new_state = dict(target)
    for k in present:
        if k != _CONV1:
            new_state[k] = source[k].to(dtype=target[k].dtype)
    band_sources: tuple[tuple[str, str], ...] = ()
    scale = 1.0
    if _CONV1 in source:
        new_state[_CONV1], band_sources, scale = _map_first_conv(
            source[_CONV1], conv, bands, [s.lower() for s in source_bands], p
        )
    backbone.load_state_dict(new_state, strict=True)
    unused = tuple(sorted(set(source) - set(target)))
    report = InitReport(
        path=str(p),
        backbone=prefix,
        loaded=tuple(present),
        missing=tuple(missing),
        unused=unused,
        band_sources=band_sources,
        first_conv_scale=scale,
    )
    logger.info(
        "%s: loaded %d backbone tensors into %s (%d missing, %d unused)",
        p,
        len(report.loaded),
        prefix,
        len(report.missing),
        len(report.unused),
    )
    return report


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    hint = "give a file saved with torch.save(model.state_dict(), path)"
    with p.open("rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (PK..); the legacy format is a pickle (protocol byte 0x80)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":
        raise CheckpointError(f"{p}: not a readable torch state dict (not a torch file); {hint}")
    obj = safe_load(p, what="torch state dict", hint=hint)
    while isinstance(obj, Mapping):
        inner = next((obj[w] for w in _WRAPPERS if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: holds a {type(obj).__name__}, not a state dict; {hint}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            continue
        name = key
        stripped = True
        while stripped:
            stripped = False
            for pre in _PREFIXES:
                if name.startswith(pre):
                    name = name[len(pre) :]
                    stripped = True
        out.setdefault(name, value)
    return out


def _map_first_conv(
    src: torch.Tensor, dst: torch.Tensor, bands: list[str], source_bands: list[str], p: Path
) -> tuple[torch.Tensor, tuple[tuple[str, str], ...], float]:
    if src.ndim != 4 or src.shape[0] != dst.shape[0] or src.shape[2:] != dst.shape[2:]:
        raise CheckpointError(
            f"{p}: first convolution has shape {tuple(src.shape)} but the model needs "
            f"({dst.shape[0]}, n, {dst.shape[2]}, {dst.shape[3]}); is it a ResNet state dict?"
        )
    if src.shape[1] != len(source_bands):
        raise CheckpointError(
            f"{p}: first convolution takes {src.shape[1]} bands but source_bands names "
            f"{len(source_bands)} ({', '.join(source_bands)}); name the file's bands in order"
        )
    src = src.to(dtype=dst.dtype)
    mean = src.mean(dim=1)
    mean_name = f"mean({','.join(source_bands)})"
    filters = []
    sources = []
    for band in bands:
        if band in source_bands:
            filters.append(src[:, source_bands.index(band)])
            sources.append((band, band))
        else:
            filters.append(mean)
            sources.append((band, mean_name))
    scale = len(source_bands) / len(bands)
    return torch.stack(filters, dim=1) * scale, tuple(sources), scale
