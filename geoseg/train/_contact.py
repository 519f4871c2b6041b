"""The building-contact output of a model: its loss, its validation counts, its weight.

A store tiled with building footprints (``geoseg tile --footprints``) has a contact target
beside the labels; :class:`~geoseg.data.ChipDataset` then gives ``(2, H, W)`` masks (the
classes, then the contact target: 0/1, 255 = ignore). The model is built with one more
output channel than classes (the checkpoint's ``extra_outputs`` is ``["contact"]``): its
first C channels are the class logits, the last one the contact logit.

:class:`ContactLoss` adds a positive-weighted binary cross-entropy on the contact logit to
the class loss (which sees the class channels only); :func:`contact_counts` counts the
validation's true and false positives and false negatives (at p = 0.5) on the device;
:func:`contact_pos_weight` derives the positive weight from the store's index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from geoseg.schema import IGNORE

__all__ = [
    "CONTACT",
    "MAX_POS_WEIGHT",
    "ContactLoss",
    "contact_counts",
    "contact_metrics",
    "contact_pos_weight",
]

CONTACT = "contact"
"""The name of the contact output (the checkpoint's ``extra_outputs`` entry)."""

MAX_POS_WEIGHT = 10.0
"""The largest positive weight of the contact BCE."""


class ContactLoss(nn.Module):
    """The class loss on the class channels plus ``weight`` x the contact BCE.

    Args:
        class_loss: The loss of the class logits (``loss(logits[:, :C], classes)``).
        num_classes: C, the class channels; channel C is the contact logit.
        weight: Weight of the contact term.
        pos_weight: Weight of the contact pixels in the BCE (>= 1: they are rare).
    """

    pos_weight: torch.Tensor

    def __init__(
        self, class_loss: nn.Module, *, num_classes: int, weight: float, pos_weight: float
    ) -> None:
        super().__init__()
        self.class_loss = class_loss
        self.num_classes = num_classes
        self.weight = float(weight)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of (N, C + 1, H, W) logits against (N, 2, H, W) targets, a scalar."""
        c = self.num_classes
        loss: torch.Tensor = self.class_loss(logits[:, :c], target[:, 0])
        return loss + self.weight * self.contact_bce(logits[:, c], target[:, 1])

    def contact_bce(self, logit: torch.Tensor, contact: torch.Tensor) -> torch.Tensor:
        """Positive-weighted BCE over the pixels whose contact target is not 255 (0 if none)."""
        keep = contact != IGNORE
        per_px = F.binary_cross_entropy_with_logits(
            logit.float(),
            (contact == 1).float(),
            pos_weight=self.pos_weight,
            reduction="none",
        )
        n = keep.sum()
        return torch.where(keep, per_px, 0.0).sum() / n.clamp_min(1)


def contact_counts(logit: torch.Tensor, contact: torch.Tensor) -> torch.Tensor:
    """True positives, false positives and false negatives of contact at p >= 0.5 (logit >= 0).

    Pixels whose target is 255 are not counted. On the tensors' device, without a host sync.

    Returns:
        An int64 tensor ``[tp, fp, fn]``.
    """
    keep = contact != IGNORE
    pred = (logit >= 0) & keep
    truth = (contact == 1) & keep
    return torch.stack([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()]).to(
        torch.int64
    )


def contact_metrics(counts: Iterable[Any]) -> dict[str, float | None]:
    """F1 and IoU of contact from ``[tp, fp, fn]`` (None where undefined: no contact at all)."""
    tp, fp, fn = (int(v) for v in counts)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    iou = tp / (tp + fp + fn) if tp + fp + fn else None
    return {"val_contact_f1": f1, "val_contact_iou": iou}


def contact_pos_weight(index: Any, scenes: Sequence[str]) -> float:
    """The contact BCE's positive weight from the index of a store with a contact target.

    ``sqrt(negatives / positives)`` over the chips of ``scenes`` (their valid pixels),
    between 1 and :data:`MAX_POS_WEIGHT`: contact pixels are a few percent of a scene, and
    the square root keeps the probabilities close enough to calibrated for a watershed on
    them. 1 when the scenes have no contact pixel.
    """
    rows = index[index["scene"].isin(list(scenes))]
    positives = float(rows["contact"].clip(lower=0).sum())
    valid = float((rows["valid_fraction"] * rows["width"] * rows["height"]).sum())
    if positives <= 0:
        return 1.0
    ratio = max(valid - positives, 0.0) / positives
    return float(min(MAX_POS_WEIGHT, max(1.0, math.sqrt(ratio))))
