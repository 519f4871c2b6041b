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
* ``boundary``: boundary loss (Kervadec et al. 2019), the softmax probabilities times the
  signed distance maps of the target's classes (negative inside, positive outside, clamped to
  20 px and divided by 20), summed over classes, mean over valid pixels; within [-1, 1], its
  minimum is a perfect prediction. Meant to be summed with a region loss, ``ce+boundary``:
  its weight is the spec's, 1 unless given; with distances normalised, 1 gives it gradients
  of the size of cross-entropy's. Kervadec et al. ramp it up from 0.01 (pixel units; about
  0.2 here); at a constant 1 it cost 2 points of building IoU on synthetic scenes (README).
* ``dpce``: distance-penalised cross-entropy, each valid pixel weighted by the U-Net weight map
  ``1 + 10 exp(-d^2 / (2 * 5^2))``, ``d`` its distance in pixels to the nearest class boundary,
  normalised by the sum of the weights.

The distance maps of ``boundary`` and ``dpce`` are computed from the target on the fly, on the
loss's device (:func:`class_distances`, exact Euclidean distances up to the clamp).
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
    "BoundaryLoss",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "DistancePenalisedCrossEntropyLoss",
    "FocalLoss",
    "LovaszSoftmaxLoss",
    "build_loss",
    "class_distances",
    "class_weights_from_histogram",
]

logger = logging.getLogger(__name__)

LossName = Literal["ce", "wce", "dice", "focal", "lovasz", "boundary", "dpce"]
LOSSES: tuple[LossName, ...] = ("ce", "wce", "dice", "focal", "lovasz", "boundary", "dpce")
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


def class_distances(member: torch.Tensor, *, max_distance: int) -> torch.Tensor:
    """Euclidean distance from every pixel to the nearest pixel of each class, clamped.

    Exact up to ``max_distance`` (in pixels, pixel centre to pixel centre), ``max_distance``
    beyond it and where a map has no member pixel. Two separable passes (Saito and Toriwaki
    1994, the second one brute force within the clamp): along the rows, the distance to the
    nearest member in the same column (running maxima of member row numbers, both ways);
    across the columns, the minimum of ``dx^2 + column^2`` over ``|dx| <= max_distance`` (the
    nearest member within the clamp lies within that many columns). No host read and no
    data-dependent shape: it runs on the tensors' device without a synchronisation.

    Args:
        member: (N, C, H, W) booleans, True where a pixel belongs to class c (and is valid).
        max_distance: The clamp, an integer >= 1.

    Returns:
        (N, C, H, W) float32 distances in [0, max_distance], 0 on member pixels.
    """
    d = int(max_distance)
    cap = d + 1  # column distances beyond d only need to stay beyond it
    h, w = member.shape[-2:]
    # integer arithmetic, exact; int16 halves the memory traffic when the values fit
    small = 2 * cap * cap < 2**15 and max(h, w) + cap < 2**15
    dtype = torch.int16 if small else torch.int32
    rows = torch.arange(h, device=member.device, dtype=dtype).view(h, 1)

    def from_above(m: torch.Tensor) -> torch.Tensor:
        return rows - torch.cummax(torch.where(m, rows, -cap), dim=-2).values

    below = from_above(member.flip(-2)).flip(-2)
    column = torch.minimum(from_above(member), below).clamp_max_(cap)
    column = column * column
    padded = F.pad(column, (d, d), value=cap * cap)
    best, near = column, torch.empty_like(column)
    for dx in range(1, min(d, w - 1) + 1):
        torch.minimum(padded[..., d + dx : d + dx + w], padded[..., d - dx : d - dx + w], out=near)
        near += dx * dx
        torch.minimum(best, near, out=best)
    return best.float().sqrt_().clamp_max_(d)


class _DistanceLoss(_PixelLoss):
    """Shared by the losses that read distances to the target's class regions."""

    def __init__(
        self, *, num_classes: int, max_distance: int = 20, ignore_index: int = IGNORE
    ) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index)
        if isinstance(max_distance, bool) or not isinstance(max_distance, int) or max_distance < 1:
            raise InputError(f"max_distance={max_distance!r}: must be an integer >= 1 (pixels)")
        self.max_distance = max_distance

    def _distances(
        self, valid: torch.Tensor, safe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class membership, distances to each class and to the nearest other class.

        Returns (N, C, H, W) membership of the valid pixels, (N, C, H, W) distances to each
        class's valid pixels and (N, 1, H, W) the distance from each pixel to the nearest valid
        pixel of another class than its own (from an ignored pixel: to any class), all clamped
        to ``max_distance``. A class absent from a chip is ``max_distance`` away everywhere.
        """
        classes = torch.arange(self.num_classes, device=safe.device).view(1, -1, 1, 1)
        member = (safe.unsqueeze(1) == classes) & valid.unsqueeze(1)
        dist = class_distances(member, max_distance=self.max_distance)
        other = torch.where(member, float(self.max_distance), dist).amin(dim=1, keepdim=True)
        return member, dist, other


class BoundaryLoss(_DistanceLoss):
    """Boundary loss (Kervadec, Bouchtiba, Desrosiers, Granger, Dolz, Ben Ayed; MIDL 2019).

    ``mean_x sum_c p_c(x) phi_c(x)`` over the valid pixels ``x``, with ``p`` the softmax
    probabilities and ``phi_c`` the signed distance map of class ``c`` in the target, as the
    authors' code builds it: outside the class, the distance to its nearest pixel (>= 1);
    inside, minus (the distance to the nearest valid pixel of another class - 1), so the
    class's own border pixels get 0. Distances are clamped to ``max_distance`` (a class absent
    from a chip is that far everywhere) and, with ``normalise``, divided by it, so the loss
    lies in [-1, 1]. Ignored pixels are no class: they neither count nor bound a region.

    The paper averages over classes too; summing them instead (the expected signed distance
    under ``p``) keeps the value and its gradients independent of the class count. The loss
    is minimal for a perfect prediction and, unlike a region loss, charges a wrong class
    more the farther the pixel lies from that class. Sum it with a region loss
    (``ce+boundary``).

    Args:
        num_classes: Number of classes.
        max_distance: Clamp of the distances, in pixels.
        normalise: Divide the distances by ``max_distance``.
        ignore_index: Target value that contributes nothing.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        max_distance: int = 20,
        normalise: bool = True,
        ignore_index: int = IGNORE,
    ) -> None:
        super().__init__(
            num_classes=num_classes, max_distance=max_distance, ignore_index=ignore_index
        )
        self.normalise = normalise

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _, valid, safe = self._prepare(logits, target)
        member, dist, other = self._distances(valid, safe)
        phi = torch.where(member, 1.0 - other, dist)
        if self.normalise:
            phi = phi / self.max_distance
        per_pixel = (logits.softmax(dim=1) * phi.to(logits.dtype)).sum(dim=1)
        return torch.where(valid, per_pixel, 0.0).sum() / valid.sum().clamp_min(1)


class DistancePenalisedCrossEntropyLoss(_DistanceLoss):
    """Cross-entropy weighted up near class boundaries (the U-Net weight map).

    Each valid pixel's loss is weighted by ``w(x) = c(x) (1 + w0 exp(-d(x)^2 / (2 sigma^2)))``
    (Ronneberger, Fischer, Brox 2015, with one distance; cf. Caliva et al. 2019's distance
    map penalty), ``d`` the distance from the pixel to the nearest class boundary: the
    distance to the nearest valid pixel of another class minus half a pixel (a boundary runs
    between pixels), clamped to ``max_distance`` (keep it >= 3 sigma); ``c`` the class
    weight of the pixel's target (1 without). The mean is weighted: the sum of weighted
    losses over the sum of the weights, so its scale stays that of cross-entropy.

    Args:
        num_classes: Number of classes.
        w0: Extra weight at a boundary (>= 0; 0 is cross-entropy).
        sigma: Width of the boundary band, in pixels (> 0).
        weight: Per-class weights ``c``.
        max_distance: Clamp of the distances, in pixels.
        ignore_index: Target value that contributes nothing.
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        *,
        num_classes: int,
        w0: float = 10.0,
        sigma: float = 5.0,
        weight: Sequence[float] | None = None,
        max_distance: int = 20,
        ignore_index: int = IGNORE,
    ) -> None:
        super().__init__(
            num_classes=num_classes, max_distance=max_distance, ignore_index=ignore_index
        )
        if not (math.isfinite(w0) and w0 >= 0 and math.isfinite(sigma) and sigma > 0):
            raise InputError(f"w0={w0!r}, sigma={sigma!r}: need w0 >= 0 and sigma > 0")
        self.w0, self.sigma = float(w0), float(sigma)
        w = None if weight is None else torch.tensor(list(weight), dtype=torch.float32)
        self.register_buffer("weight", w)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar."""
        _, valid, safe = self._prepare(logits, target)
        _, _, other = self._distances(valid, safe)
        d = other.squeeze(1).to(logits.dtype) - 0.5
        pixel_w = 1.0 + self.w0 * torch.exp(-d.square() / (2.0 * self.sigma**2))
        if self.weight is not None:
            pixel_w = pixel_w * self.weight.to(logits.dtype)[safe]
        pixel_w = torch.where(valid, pixel_w, 0.0)
        nll = -F.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
        total = torch.where(valid, pixel_w * nll, 0.0).sum()
        return total / pixel_w.sum().clamp_min(torch.finfo(logits.dtype).tiny)


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
        elif name == "boundary":
            module = BoundaryLoss(num_classes=num_classes, ignore_index=ignore_index)
        elif name == "dpce":
            module = DistancePenalisedCrossEntropyLoss(
                num_classes=num_classes, ignore_index=ignore_index
            )
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
    method: Literal["median_frequency", "sqrt_median_frequency", "inverse"] = "median_frequency",
) -> list[float]:
    """Per-class loss weights from a class pixel histogram.

    With ``f_c = n_c / sum(n)`` the frequency of class ``c``:

    * ``median_frequency`` (Eigen & Fergus 2015): ``median(f) / f_c``, the median over the
      classes that occur; the class at the median frequency gets 1.
    * ``sqrt_median_frequency``: the square root of that, ``sqrt(median(f) / f_c)``: rare
      classes still weigh more, but a class 100 times rarer than the median weighs 10, not
      100, so that the loss does not buy the rare classes with the large ones' pixels.
    * ``inverse``: ``1 / (K f_c)`` with ``K`` the number of classes that occur, so that the
      pixel-weighted mean weight is 1.

    Classes with zero pixels get weight 0.

    Args:
        hist: Pixel count per class (ignored pixels excluded).
        method: ``median_frequency``, ``sqrt_median_frequency`` or ``inverse``.

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
    if method in ("median_frequency", "sqrt_median_frequency"):
        ref = statistics.median(present)
    elif method == "inverse":
        ref = 1.0 / len(present)
    else:
        raise InputError(
            f"unknown method {method!r}; use 'median_frequency', 'sqrt_median_frequency' or "
            "'inverse'"
        )
    weights = [ref / f if f > 0 else 0.0 for f in freqs]
    return [math.sqrt(w) for w in weights] if method == "sqrt_median_frequency" else weights
