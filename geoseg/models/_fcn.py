"""The reference FCN: a torchvision ResNet with 1x1 score heads on strides 8, 16 and 32."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
import torchvision
from torch import nn

from geoseg.models._common import STRIDE, crop_to, pad_to_multiple

__all__ = ["FCNResNet"]

ResNetDepth = Literal[18, 34, 50, 101]

_RESNETS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}


class FCNResNet(nn.Module):
    """FCN with skip fusion on a torchvision ResNet backbone.

    The stride-8 (``layer2``), stride-16 (``layer3``) and stride-32 (``layer4``) features are
    each turned into class scores by a 1x1 convolution (:attr:`score8`, :attr:`score16`,
    :attr:`score32`); each score map is upsampled bilinearly to the (padded) input size and the
    three are summed. The input is padded at the bottom/right to a multiple of 32 first, so the
    upsampling factors are exactly 8, 16 and 32 and the score maps stay aligned with the pixels;
    the sum is cropped back to the input's H x W.

    The backbone is built with ``weights=None`` (nothing is ever downloaded); use
    :func:`geoseg.models.load_init_weights` to start from a local pretrained file. Its first
    convolution takes ``in_channels`` bands; ``fc`` and ``avgpool`` are removed.

    Args:
        depth: ResNet depth: 18, 34, 50 or 101.
        in_channels: Number of input bands.
        num_classes: Number of output classes.
    """

    def __init__(self, *, depth: ResNetDepth, in_channels: int, num_classes: int) -> None:
        super().__init__()
        backbone = _RESNETS[depth](weights=None)
        if in_channels != 3:
            conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            backbone.conv1 = conv1
        del backbone.fc
        del backbone.avgpool
        self.backbone = backbone
        self.depth = depth
        expansion = 4 if depth >= 50 else 1
        self.score8 = nn.Conv2d(128 * expansion, num_classes, kernel_size=1)
        self.score16 = nn.Conv2d(256 * expansion, num_classes, kernel_size=1)
        self.score32 = nn.Conv2d(512 * expansion, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes, H, W) for a (N, in_channels, H, W) batch."""
        x, h, w = pad_to_multiple(x, STRIDE)
        size = (int(x.shape[-2]), int(x.shape[-1]))
        b = self.backbone
        f = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c8 = b.layer2(b.layer1(f))
        c16 = b.layer3(c8)
        c32 = b.layer4(c16)
        out = (
            _up(self.score8(c8), size) + _up(self.score16(c16), size) + _up(self.score32(c32), size)
        )
        return crop_to(out, h, w)


def _up(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)
