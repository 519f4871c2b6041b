"""Segmentation losses with an ignore index, built from a short spec string.

Every loss takes logits (N, C, H, W) and integer targets (N, H, W); pixels whose target is
the ignore index (255, :data:`geoseg.schema.IGNORE`) contribute nothing, neither to the value
nor to the gradient. A batch whose pixels are all ignored gives a loss of 0.

No loss makes the host wait for the device: ignored pixels and absent classes are masked
out (``torch.where``, sums over clamped counts), never selected, so no shape depends on the
data and no branch on a tensor's value.

Spec strings name one term or a weighted sum: ``ce``, ``dice``, ``ce+dice``,
``ce*0.5+dice``, ``0.3*lovasz+focal``. Terms:

* ``ce``: cross-entropy, mean over valid pixels.
* ``wce``: class-weighted cross-entropy (needs ``class_weights``), normalised by the sum of
  the weights of the valid pixels' classes, as :func:`torch.nn.functional.cross_entropy`.
* ``dice``: soft multi-class Dice, ``1 - mean_c 2|P_c*Y_c| / (|P_c| + |Y_c|)`` over the
  classes present in the batch's valid targets, on softmax probabilities, pooled over the batch.
* ``focal``: focal loss ``-(1 - p_t)^gamma log p_t`` with gamma=2 (Lin et al. 2017), mean
  over valid pixels.
* ``lovasz``: Lovasz-softmax (Berman et al. 2018), the convex surrogate of the Jaccard loss,
  averaged over the classes present, pooled over the batch.
"""

from __future__ import annotations

import logging
import math
import re
import statistics
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from geoseg.errors import InputError
from geoseg.schema import IGNORE

__all__ = [
    "LOSSES",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "build_loss",
    "class_weights_from_histogram",
]

logger = logging.getLogger(__name__)

LossName = Literal["ce", "wce", "dice", "focal", "lovasz"]
LOSSES: tuple[LossName, ...] = ("ce", "wce", "dice", "focal", "lovasz")
"""The loss terms a spec may use."""

# Why not segmentation_models_pytorch.losses (measured with smp 0.6, float32 CPU, 6 classes,
# 255 ignored): its multiclass Dice averages over ALL classes, absent ones counting 0 (ours:
# over the classes present; 1/3 lower with 2 of 6 absent), and even with every class present
# its values and gradients are not bit-identical (|dv| up to 5e-5): the demo's ``wce+dice``
# model would change. Its multiclass focal is a one-vs-rest sigmoid focal loss, another
# definition (|dv| ~ 3), NaN when every pixel is ignored. Its Lovasz gives identical
# gradients and values within 1 ulp, but returns a (0, C) tensor when every pixel is ignored
# and fails on float64; a wrapper would cost what our 40 lines do.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_TERM = re.compile(rf"^(?:(?P<pre>{_NUMBER})\*)?(?P<name>[a-z]+)(?:\*(?P<post>{_NUMBER}))?$")


class _PixelLoss(nn.Module):
    """Shared checks: shapes, class count, target dtype, valid mask."""

    def __init__(self, *, num_classes: int, ignore_index: int = IGNORE) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def _prepare(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked target (long), valid mask and target with ignored pixels set to 0."""
        if logits.ndim != 4 or target.ndim != 3:
            raise InputError(
                f"{type(self).__name__}: expected logits (N, C, H, W) and target (N, H, W), got "
                f"{tuple(logits.shape)} and {tuple(target.shape)}"
            )
        if logits.shape[1] != self.num_classes:
            raise InputError(
                f"{type(self).__name__}: logits have {logits.shape[1]} classes but the loss was "
                f"built for {self.num_classes}; build it with num_classes={logits.shape[1]}"
            )
        if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
            raise InputError(
                f"{type(self).__name__}: logits {tuple(logits.shape)} and target "
                f"{tuple(target.shape)} differ in batch or spatial size"
            )
        target = target.long()
        valid = target != self.ignore_index
        return target, valid, torch.where(valid, target, 0)


class CrossEntropyLoss(_PixelLoss):
    """Cross-entropy, optionally class-weighted, ignoring ``ignore_index``.

    Args:
        num_classes: Number of classes (channels of the logits).
        weight: Per-class weights; the mean is then weighted (sum of weighted losses over the
            sum of the valid pixels' class weights).
        ignore_index: Target value that contributes nothing.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        num_classes: int,
        weight: Sequence[float] | None = None,
        ignore_index: int = IGNORE,
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        w = None if weight is None else torch.tensor(list(weight), dtype=torch.float32)
        self.register_buffer("weight", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        target, valid, safe = self._prepare(logits, target)
        w = None if self.weight is None else self.weight.to(logits.dtype)
        total = F.cross_entropy(
            logits, target, weight=w, ignore_index=self.ignore_index, reduction="sum"
        )
        if w is None:
            denom = valid.sum().to(logits.dtype)
        else:
            denom = torch.where(valid, w[safe], 0).sum()
        return total / denom.clamp_min(torch.finfo(logits.dtype).tiny)


class FocalLoss(_PixelLoss):
    """Focal loss ``-(1 - p_t)^gamma log p_t``, mean over valid pixels (gamma=0 is CE).

    Args:
        num_classes: Number of classes.
        gamma: Focusing parameter.
        ignore_index: Target value that contributes nothing.
    """

    def __init__(self, *, num_classes: int, gamma: float = 2.0, ignore_index: int = IGNORE) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _, valid, safe = self._prepare(logits, target)
        logpt = F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        focal = -((1.0 - logpt.exp()).clamp_min(0.0) ** self.gamma) * logpt
        # all pixels ignored: 0 / 1, with no branch on the device's count
        return torch.where(valid, focal, 0.0).sum() / valid.sum().clamp_min(1)


class DiceLoss(_PixelLoss):
    """Soft multi-class Dice loss over the classes present in the valid targets.

    ``1 - mean_c 2 sum(p_c y_c) / (sum(p_c) + sum(y_c))`` with softmax probabilities ``p``
    and one-hot targets ``y``, sums over the valid pixels of the whole batch, the mean over
    classes with at least one valid target pixel.

    Args:
        num_classes: Number of classes.
        ignore_index: Target value that contributes nothing.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _, valid, safe = self._prepare(logits, target)
        v = valid.unsqueeze(1)
        probs = torch.where(v, logits.softmax(dim=1), 0.0)
        onehot = F.one_hot(safe, self.num_classes).permute(0, 3, 1, 2).to(probs.dtype)
        onehot = torch.where(v, onehot, 0.0)
        dims = (0, 2, 3)
        count = onehot.sum(dims)
        present = count > 0
        inter = (probs * onehot).sum(dims)
        card = probs.sum(dims) + count
        dice = 2.0 * inter / card.clamp_min(torch.finfo(probs.dtype).tiny)
        # 1 - the mean over the present classes; 0 when none is (every pixel ignored)
        return torch.where(present.any(), 1.0 - _masked_mean(dice, present), 0.0)


class LovaszSoftmaxLoss(_PixelLoss):
    """Lovasz-softmax loss (Berman, Rannen Triki, Blaschko, CVPR 2018).

    For each class present in the valid targets, the pixel errors ``|y_c - p_c|`` are sorted in
    decreasing order and dotted with the gradient of the Lovasz extension of the Jaccard loss;
    the result is averaged over those classes. Pixels are pooled over the whole batch.

    Args:
        num_classes: Number of classes.
        ignore_index: Target value that contributes nothing.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _, valid, safe = self._prepare(logits, target)
        c = self.num_classes
        # Every pixel, not just the valid ones (no data-dependent shape): an ignored pixel has
        # error 0 and is no class's foreground, so it sorts after every positive error and
        # changes neither the value nor the gradient. (C, M) with M the batch's pixels.
        probs = logits.softmax(dim=1).permute(1, 0, 2, 3).reshape(c, -1)
        fg = (safe.reshape(1, -1) == torch.arange(c, device=safe.device).unsqueeze(1)) & (
            valid.reshape(1, -1)
        )
        fg = fg.to(probs.dtype)
        errors = torch.where(valid.reshape(1, -1), (fg - probs).abs(), 0.0)
        # Not stable: exact ties of positive errors (frequent with upsampled logits) are broken
        # as torch.sort breaks them; the value does not depend on their order, the
        # subgradient does.
        errors_sorted, order = torch.sort(errors, dim=1, descending=True)
        per_class = (errors_sorted * _lovasz_grad(fg.gather(1, order))).sum(dim=1)
        return _masked_mean(per_class, fg.sum(dim=1) > 0)


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors, per row.

    ``gt_sorted`` is (C, M), each row a class's foreground indicator in the order of its
    decreasing errors. The union is >= 1 at every position (a row without foreground counts
    its position + 1), so there is no division by zero.
    """
    gts = gt_sorted.sum(dim=1, keepdim=True)
    intersection = gts - gt_sorted.cumsum(1)
    union = gts + (1.0 - gt_sorted).cumsum(1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``keep``, 0 where nothing is kept; no host sync.

    The gradient of the values not kept is exactly 0, even where they are not finite.
    """
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


class CombinedLoss(nn.Module):
    """A weighted sum of losses.

    Args:
        terms: (weight, loss module) pairs.
        names: A name per term, for logging.
    """

    def __init__(self, terms: Sequence[tuple[float, nn.Module]], *, names: Sequence[str]) -> None:
        super().__init__()
        self.losses = nn.ModuleList([m for _, m in terms])
        self.weights = tuple(float(w) for w, _ in terms)
        self.names = tuple(names)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the terms, a scalar."""
        total: torch.Tensor | None = None
        for w, loss in zip(self.weights, self.losses, strict=True):
            value = w * loss(logits, target)
            total = value if total is None else total + value
        if total is None:  # not reachable through build_loss
            raise InputError("a combined loss needs at least one term")
        return total


def _check_weights(weights: Sequence[float], num_classes: int) -> list[float]:
    w = [float(x) for x in weights]
    if len(w) != num_classes:
        raise InputError(
            f"class_weights has {len(w)} values for {num_classes} classes; give one per class"
        )
    if not all(math.isfinite(x) and x >= 0 for x in w) or not any(x > 0 for x in w):
        raise InputError(f"class_weights {w}: weights must be finite, >= 0 and not all zero")
    return w


def build_loss(
    spec: str,
    *,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    ignore_index: int = IGNORE,
) -> nn.Module:
    """Build a loss from a spec string such as ``ce``, ``ce+dice`` or ``ce*0.5+dice``.

    Args:
        spec: Terms from :data:`LOSSES`, each optionally weighted (``ce*0.5`` or ``0.5*ce``),
            joined with ``+``. Case and spaces do not matter.
        num_classes: Number of classes (channels of the logits).
        class_weights: Per-class weights, required by ``wce`` and used by it only (see
            :func:`class_weights_from_histogram`).
        ignore_index: Target value that contributes nothing.

    Returns:
        A module ``loss(logits, target) -> scalar``; a single unweighted term is returned
        as is, a sum as a :class:`CombinedLoss`.

    Raises:
        InputError: A bad term (the message names it and lists the valid ones), ``wce``
            without class weights, or invalid weights or class count.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes={num_classes!r}: must be an integer >= 1")
    weights = None if class_weights is None else _check_weights(class_weights, num_classes)
    valid = ", ".join(LOSSES)
    terms: list[tuple[float, nn.Module]] = []
    names: list[str] = []
    for raw in str(spec).replace(" ", "").lower().split("+"):
        m = _TERM.match(raw)
        if m is None or m["name"] not in LOSSES or (m["pre"] and m["post"]):
            raise InputError(
                f"loss spec {spec!r}: bad term {raw!r}; valid terms are {valid}, optionally "
                "weighted (ce*0.5) and joined with '+' (ce+dice)"
            )
        w = float(m["pre"] or m["post"] or 1.0)
        if not math.isfinite(w) or w <= 0:
            raise InputError(f"loss spec {spec!r}: term {raw!r} needs a weight > 0")
        name = m["name"]
        module: nn.Module
        if name == "ce":
            module = CrossEntropyLoss(num_classes=num_classes, ignore_index=ignore_index)
        elif name == "wce":
            if weights is None:
                raise InputError(
                    f"loss spec {spec!r}: 'wce' needs class weights; pass class_weights "
                    "(e.g. from class_weights_from_histogram) or use 'ce'"
                )
            module = CrossEntropyLoss(
                num_classes=num_classes, weight=weights, ignore_index=ignore_index
            )
        elif name == "dice":
            module = DiceLoss(num_classes=num_classes, ignore_index=ignore_index)
        elif name == "focal":
            module = FocalLoss(num_classes=num_classes, gamma=2.0, ignore_index=ignore_index)
        else:
            module = LovaszSoftmaxLoss(num_classes=num_classes, ignore_index=ignore_index)
        terms.append((w, module))
        names.append(name)
    if weights is not None and "wce" not in names:
        logger.warning("class weights are ignored: loss %r has no 'wce' term", spec)
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return CombinedLoss(terms, names=names)


def class_weights_from_histogram(
    hist: Sequence[int],
    *,
    method: Literal["median_frequency", "inverse"] = "median_frequency",
) -> list[float]:
    """Per-class loss weights from a class pixel histogram.

    With ``f_c = n_c / sum(n)`` the frequency of class ``c``:

    * ``median_frequency`` (Eigen & Fergus 2015): ``median(f) / f_c``, the median over the
      classes that occur; the class at the median frequency gets 1.
    * ``inverse``: ``1 / (K f_c)`` with ``K`` the number of classes that occur, so that the
      pixel-weighted mean weight is 1.

    Classes with zero pixels get weight 0.

    Args:
        hist: Pixel count per class (ignored pixels excluded).
        method: ``median_frequency`` or ``inverse``.

    Returns:
        One weight per class.

    Raises:
        InputError: Negative counts, an empty or all-zero histogram, or an unknown method.
    """
    counts = [int(c) for c in hist]
    if any(c < 0 for c in counts) or sum(counts) == 0:
        raise InputError(f"class histogram {counts}: counts must be >= 0 with at least one pixel")
    total = sum(counts)
    freqs = [c / total for c in counts]
    present = [f for f in freqs if f > 0]
    if method == "median_frequency":
        ref = statistics.median(present)
    elif method == "inverse":
        ref = 1.0 / len(present)
    else:
        raise InputError(f"unknown method {method!r}; use 'median_frequency' or 'inverse'")
    return [ref / f if f > 0 else 0.0 for f in freqs]
