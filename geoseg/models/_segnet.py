"""SegNet: a VGG-style encoder-decoder that upsamples with the encoder's max-pooling indices."""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models._common import STRIDE, crop_to, pad_to_multiple

__all__ = ["SegNet"]

# Convolutions per stage, as in VGG16 / the original SegNet (Badrinarayanan et al., 2017).
_CONVS = (2, 2, 3, 3, 3)
# Stage widths as multiples of the base width (64, 128, 256, 512, 512 for base 64).
_WIDTHS = (1, 2, 4, 8, 8)


def _cbr(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class SegNet(nn.Module):
    """The classic SegNet, compact by default.

    Five encoder stages of 3x3 conv-BN-ReLU blocks (2, 2, 3, 3, 3 convolutions; widths
    ``base_width`` x 1, 2, 4, 8, 8), each followed by ``MaxPool2d(2, return_indices=True)``; the
    decoder mirrors it, upsampling with ``MaxUnpool2d`` at the stored indices, and ends with a
    3x3 convolution to the class scores. ``base_width=64`` is the original VGG16 SegNet
    (about 29 M parameters); the default 32 has a quarter of that. The input is padded at the
    bottom/right to a multiple of 32 and the output cropped back.

    Args:
        in_channels: Number of input bands.
        num_classes: Number of output classes.
        base_width: Channels of the first stage.
    """

    def __init__(self, *, in_channels: int, num_classes: int, base_width: int = 32) -> None:
        super().__init__()
        widths = [base_width * m for m in _WIDTHS]
        enc: list[nn.Module] = []
        cin = in_channels
        for n, width in zip(_CONVS, widths, strict=True):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += _cbr(cin, width)
                cin = width
            enc.append(nn.Sequential(*layers))
        dec: list[nn.Module] = []
        for i in reversed(range(len(_CONVS))):
            width = widths[i]
            layers = []
            if i > 0:
                for _ in range(_CONVS[i] - 1):
                    layers += _cbr(width, width)
                layers += _cbr(width, widths[i - 1])
            else:
                for _ in range(_CONVS[i] - 1):
                    layers += _cbr(width, width)
                layers.append(nn.Conv2d(width, num_classes, kernel_size=3, padding=1))
            dec.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(enc)
        self.decoder = nn.ModuleList(dec)
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes, H, W) for a (N, in_channels, H, W) batch."""
        x, h, w = pad_to_multiple(x, STRIDE)
        indices: list[torch.Tensor] = []
        sizes: list[torch.Size] = []
        for stage in self.encoder:
            x = stage(x)
            sizes.append(x.shape)
            x, idx = self.pool(x)
            indices.append(idx)
        for stage, idx, size in zip(self.decoder, reversed(indices), reversed(sizes), strict=True):
            x = self.unpool(x, idx, output_size=size[-2:])
            x = stage(x)
        return crop_to(x, h, w)
