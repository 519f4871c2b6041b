"""The model registry: architectures by name, JSON-able specs, parameter counts."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from geoseg.errors import InputError
from geoseg.models._fcn import FCNResNet
from geoseg.models._segnet import SegNet
from geoseg.models._smp import SmpSegmenter, check_encoder

__all__ = [
    "MODELS",
    "ModelInfo",
    "ModelSummary",
    "build_model",
    "count_parameters",
    "list_models",
    "model_spec",
    "summarize_models",
]

logger = logging.getLogger(__name__)

ArgValue = str | int


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one architecture.

    Attributes:
        name: Registry name, e.g. ``fcn_resnet18`` or ``unet``.
        family: Where the implementation comes from: ``fcn`` (torchvision ResNet + score
            heads), ``smp`` (segmentation_models_pytorch) or ``segnet``.
        description: One line for tables and help texts.
        defaults: Architecture arguments (besides ``in_channels`` and ``num_classes``) and
            their default values.
    """

    name: str
    family: str
    description: str
    defaults: Mapping[str, ArgValue] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    """One row of :func:`summarize_models`.

    Attributes:
        name: Registry name.
        family: Implementation family (see :class:`ModelInfo`).
        parameters: Number of parameters for the requested bands and classes.
        description: One-line description.
        defaults: Default architecture arguments.
    """

    name: str
    family: str
    parameters: int
    description: str
    defaults: Mapping[str, ArgValue]


def _positive_int(
    name: str, minimum: int, maximum: int | None = None
) -> Callable[[object], ArgValue]:
    def check(value: object) -> ArgValue:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            bounds = f">= {minimum}" if maximum is None else f"of {minimum}..{maximum}"
            raise InputError(f"{name}={value!r}: must be an integer {bounds}")
        return value

    return check


def _encoder(value: object) -> ArgValue:
    """A known smp encoder, or ``tu-NAME`` for a timm model that timm knows."""
    name = check_encoder(value)
    if name.startswith("tu-"):
        import timm

        if not timm.is_model(name[3:]):
            raise InputError(
                f"unknown encoder {name!r}: timm has no model {name[3:]!r}; see timm.list_models()"
            )
    return name


# Validators for the architecture arguments, by argument name.
_ARG_CHECKS: dict[str, Callable[[object], ArgValue]] = {
    "encoder": _encoder,
    "base_width": _positive_int("base_width", 1, maximum=1024),
}


def _fcn(depth: int) -> Callable[..., nn.Module]:
    def build(*, in_channels: int, num_classes: int) -> nn.Module:
        return FCNResNet(depth=depth, in_channels=in_channels, num_classes=num_classes)  # type: ignore[arg-type]

    return build


def _smp(arch: str) -> Callable[..., nn.Module]:
    def build(*, in_channels: int, num_classes: int, encoder: str) -> nn.Module:
        return SmpSegmenter(
            arch,  # type: ignore[arg-type]
            in_channels=in_channels,
            num_classes=num_classes,
            encoder=encoder,
        )

    return build


def _segnet(*, in_channels: int, num_classes: int, base_width: int) -> nn.Module:
    return SegNet(in_channels=in_channels, num_classes=num_classes, base_width=base_width)


_SMP_DEFAULTS: Mapping[str, ArgValue] = MappingProxyType({"encoder": "resnet34"})

_ENTRIES: list[tuple[ModelInfo, Callable[..., nn.Module]]] = [
    *(
        (
            ModelInfo(
                f"fcn_resnet{d}",
                "fcn",
                f"FCN, ResNet-{d} backbone, 1x1 score heads on strides 8/16/32, summed",
            ),
            _fcn(d),
        )
        for d in (18, 34, 50, 101)
    ),
    (
        ModelInfo("unet", "smp", "U-Net (smp), ResNet encoder + skip decoder", _SMP_DEFAULTS),
        _smp("unet"),
    ),
    (
        ModelInfo(
            "deeplabv3plus",
            "smp",
            "DeepLabV3+ (smp), ASPP at stride 16 + stride-4 decoder",
            _SMP_DEFAULTS,
        ),
        _smp("deeplabv3plus"),
    ),
    (
        ModelInfo(
            "pspnet", "smp", "PSPNet (smp), pyramid pooling on stride-8 features", _SMP_DEFAULTS
        ),
        _smp("pspnet"),
    ),
    (
        ModelInfo("fpn", "smp", "FPN (smp), feature pyramid decoder", _SMP_DEFAULTS),
        _smp("fpn"),
    ),
    (
        ModelInfo(
            "segnet",
            "segnet",
            "SegNet, VGG-style encoder-decoder with max-unpooling indices",
            MappingProxyType({"base_width": 32}),
        ),
        _segnet,
    ),
]

MODELS: Mapping[str, ModelInfo] = MappingProxyType({info.name: info for info, _ in _ENTRIES})
"""Every architecture :func:`build_model` can build, by name."""

_BUILDERS: dict[str, Callable[..., nn.Module]] = {info.name: b for info, b in _ENTRIES}


def list_models() -> list[ModelInfo]:
    """Every registered architecture, in registry order."""
    return list(MODELS.values())


def _info(name: str) -> ModelInfo:
    info = MODELS.get(name)
    if info is None:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return info


def _resolve(
    name: str, in_channels: object, num_classes: object, arch_args: Mapping[str, Any]
) -> dict[str, ArgValue]:
    info = _info(name)
    unknown = sorted(set(arch_args) - set(info.defaults))
    if unknown:
        valid = ", ".join(info.defaults) or "none"
        raise InputError(
            f"model {name!r} has no argument {unknown[0]!r}; its arguments are: {valid}"
        )
    args: dict[str, ArgValue] = {
        "in_channels": _positive_int("in_channels", 1)(in_channels),
        "num_classes": _positive_int("num_classes", 1)(num_classes),
    }
    for key, default in info.defaults.items():
        args[key] = _ARG_CHECKS[key](arch_args.get(key, default))
    return args


def model_spec(
    name: str, *, in_channels: int, num_classes: int, **arch_args: Any
) -> dict[str, Any]:
    """A JSON-able description of an architecture, complete with defaults.

    ``build_model(spec["name"], **spec["args"])`` rebuilds the same architecture, so a
    checkpoint only needs to store this spec beside its state dict.

    Args:
        name: Registry name (see :data:`MODELS`).
        in_channels: Number of input bands.
        num_classes: Number of output classes.
        **arch_args: Architecture arguments (e.g. ``encoder="resnet18"``); missing ones take
            their defaults.

    Returns:
        ``{"name": name, "args": {"in_channels": ..., "num_classes": ..., ...}}``.

    Raises:
        InputError: Unknown model name, unknown argument or invalid value.
    """
    return {"name": name, "args": _resolve(name, in_channels, num_classes, arch_args)}


def build_model(name: str, *, in_channels: int, num_classes: int, **arch_args: Any) -> nn.Module:
    """Build an untrained model by registry name; nothing is ever downloaded.

    Every model maps a float (N, in_channels, H, W) batch to logits (N, num_classes, H, W) of
    the same H and W, for any H, W (inputs are padded to a multiple of 32 inside ``forward``).

    Args:
        name: Registry name (see :data:`MODELS` / :func:`list_models`).
        in_channels: Number of input bands.
        num_classes: Number of output classes.
        **arch_args: Architecture arguments: ``encoder`` for the smp models (default
            ``resnet34``), ``base_width`` for ``segnet`` (default 32); none for ``fcn_*``.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        InputError: Unknown model name (the message lists the known ones), unknown argument
            or invalid value.
    """
    args = _resolve(name, in_channels, num_classes, arch_args)
    logger.debug("building %s with %s", name, args)
    return _BUILDERS[name](**args)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def summarize_models(
    *, in_channels: int = 5, num_classes: int = 6, names: Sequence[str] | None = None
) -> list[ModelSummary]:
    """Build each model once with its defaults and report its size.

    Args:
        in_channels: Number of input bands to size the first convolution for.
        num_classes: Number of output classes to size the heads for.
        names: The models to describe; all registered models if None.

    Returns:
        One :class:`ModelSummary` per model, in registry order (or the order of ``names``).

    Raises:
        InputError: Unknown model name or invalid sizes.
    """
    rows = []
    for name in names if names is not None else list(MODELS):
        info = _info(name)
        model = build_model(name, in_channels=in_channels, num_classes=num_classes)
        rows.append(
            ModelSummary(
                name=name,
                family=info.family,
                parameters=count_parameters(model),
                description=info.description,
                defaults=dict(info.defaults),
            )
        )
    return rows
