"""Segmentation models: a registry of architectures by name, and pretrained initialisation.

Every model is a plain :class:`torch.nn.Module` mapping a float (N, C, H, W) batch to class
logits (N, num_classes, H, W) of the same H and W, for any H and W. Nothing here downloads
anything: backbones start random, or from a LOCAL file via :func:`load_init_weights`.

Example:
    >>> from geoseg.models import build_model, model_spec
    >>> spec = model_spec("unet", in_channels=5, num_classes=6, encoder="resnet18")
    >>> model = build_model(spec["name"], **spec["args"])
"""

from __future__ import annotations

from geoseg.models._fcn import FCNResNet
from geoseg.models._init import RGB, InitReport, find_resnet_backbone, load_init_weights
from geoseg.models._registry import (
    MODELS,
    ModelInfo,
    ModelSummary,
    build_model,
    count_parameters,
    list_models,
    model_spec,
    summarize_models,
)
from geoseg.models._segnet import SegNet
from geoseg.models._smp import SmpSegmenter

__all__ = [
    "MODELS",
    "RGB",
    "FCNResNet",
    "InitReport",
    "ModelInfo",
    "ModelSummary",
    "SegNet",
    "SmpSegmenter",
    "build_model",
    "count_parameters",
    "find_resnet_backbone",
    "list_models",
    "load_init_weights",
    "model_spec",
    "summarize_models",
]
