"""Helpers shared by the model implementations (no I/O)."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["STRIDE", "crop_to", "pad_to_multiple"]

STRIDE = 32
"""Every geoseg model pads its input to a multiple of this inside ``forward``."""


def pad_to_multiple(x: torch.Tensor, multiple: int = STRIDE) -> tuple[torch.Tensor, int, int]:
    """Pad a (N, C, H, W) batch at the bottom and right to a multiple of ``multiple``.

    Padding only at the bottom/right keeps pixel (0, 0) and the stride grid of the backbone
    anchored at the origin, so cropping the output back restores exact alignment. Reflection
    is used where the input is large enough (no artificial edges), else edge replication.

    Args:
        x: The input batch.
        multiple: The size that H and W are rounded up to.

    Returns:
        The padded batch and the original height and width.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, h, w
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), h, w


def crop_to(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crop a (N, C, H', W') output to its top-left ``h`` x ``w`` pixels."""
    if y.shape[-2] == h and y.shape[-1] == w:
        return y
    return y[..., :h, :w]
