"""segmentation_models_pytorch architectures, wrapped to accept any input size."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torchvision
from torch import nn

from geoseg.errors import InputError
from geoseg.models._common import STRIDE, crop_to, pad_to_multiple

__all__ = ["SmpArch", "SmpSegmenter", "check_encoder"]

SmpArch = Literal["unet", "deeplabv3plus", "pspnet", "fpn"]


def check_encoder(encoder: object) -> str:
    """Return ``encoder`` if segmentation_models_pytorch knows it.

    Raises:
        InputError: If it is not a known encoder name.
    """
    from segmentation_models_pytorch.encoders import get_encoder_names

    names = get_encoder_names()
    if isinstance(encoder, str) and (encoder in names or encoder.startswith("tu-")):
        return encoder
    resnets = ", ".join(n for n in names if n.startswith("resnet"))
    raise InputError(
        f"unknown encoder {encoder!r}; use one of segmentation_models_pytorch's encoders "
        f"(e.g. {resnets}) or a timm model as 'tu-<name>'"
    )


class SmpSegmenter(nn.Module):
    """A segmentation_models_pytorch model that takes any H, W.

    The encoder is built with ``encoder_weights=None`` (nothing is ever downloaded; use
    :func:`geoseg.models.load_init_weights` for local pretrained weights). The input is padded at
    the bottom/right to a multiple of 32 and the logits are cropped back to the input's H x W.

    Two changes to the stock smp models, both invisible to inference on large batches:

    * ``deeplabv3plus``: the BatchNorm in ASPP's image-pooling branch (which normalises a 1x1
      map) is replaced by a GroupNorm, so that training with a batch of one works.
    * ``pspnet``: smp uses only the first three encoder stages; the unused ResNet ``layer3`` and
      ``layer4`` are removed so that every parameter receives a gradient.

    Args:
        arch: ``unet``, ``deeplabv3plus``, ``pspnet`` or ``fpn``.
        in_channels: Number of input bands.
        num_classes: Number of output classes.
        encoder: An smp encoder name, e.g. ``resnet34``.
    """

    def __init__(
        self, arch: SmpArch, *, in_channels: int, num_classes: int, encoder: str = "resnet34"
    ) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        classes = {
            "unet": smp.Unet,
            "deeplabv3plus": smp.DeepLabV3Plus,
            "pspnet": smp.PSPNet,
            "fpn": smp.FPN,
        }
        self.arch = arch
        self.net = classes[arch](
            encoder_name=check_encoder(encoder),
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
        )
        if arch == "deeplabv3plus":
            _groupnorm_image_pooling(self.net)
        if arch == "pspnet":
            enc = self.net.encoder
            if isinstance(enc, torchvision.models.ResNet):
                del enc.layer3
                del enc.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes, H, W) for a (N, in_channels, H, W) batch."""
        x, h, w = pad_to_multiple(x, STRIDE)
        out = self.net(x)
        if not isinstance(out, torch.Tensor):  # an aux head would return (masks, labels)
            out = out[0]
        return crop_to(out, h, w)


def _groupnorm_image_pooling(model: nn.Module) -> None:
    """Replace BatchNorm after a global average pool (a 1x1 map) with GroupNorm."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential) or len(module) < 3:
            continue
        first = module[0]
        if not (isinstance(first, nn.AdaptiveAvgPool2d) and first.output_size in (1, (1, 1))):
            continue
        for i, child in enumerate(module):
            if isinstance(child, nn.BatchNorm2d):
                c = child.num_features
                module[i] = nn.GroupNorm(math.gcd(32, c), c)
