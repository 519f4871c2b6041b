"""Seamless blending of overlapping tile predictions (pure: no I/O).

Three pieces:

* **Weight windows.** A tile's class probabilities are weighted by a smooth window (Hann,
  quadratic spline, or flat ``mean``) that tapers over the overlap on the sides a tile shares
  with a neighbour, and does **not** taper on sides that lie on the scene edge. Every weight
  is at least :data:`WEIGHT_FLOOR`, so the summed weight is positive wherever a tile covers a
  pixel, and normalising by it keeps a constant prediction constant up to the corners.
* **Exact overlap-add.** Probabilities and weights are quantised to integers
  (``P = rint(p * 65535)``, ``W = max(1, rint(w * 2**bits))``) and summed in ``int32``
  (torch tensors, on the model's device): integer sums do not depend on the order of
  addition, so a pixel's value is the same whichever block, worker, device or run adds its
  tiles. A constant ``P`` gives ``sum(W * P) / sum(W) == P`` exactly.
* **Seams.** Over the block plan (:mod:`geoseg.blocks`), the engine accumulates a block's
  own tiles, hands the spilled sums (*pieces*) to the blocks they land in, and completes a
  seam (:func:`seam_sums`) once all of its contributors are done.
Memory per block: ``(classes + 1) * 4`` bytes per pixel of the block plus its spill.

A model with extra outputs (a building-contact probability, say) blends them as further
channels after the classes: the class map is the argmax of the class channels only
(:func:`decode` with ``extra``), the extra channels decode to uint8 probabilities
(:func:`decode_extra`) exactly as the class probabilities do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._torch import class_argmax
from geoseg.blocks import BlockPlan, Rect
from geoseg.options import BlendKind
from geoseg.schema import IGNORE

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROB_SCALE",
    "WEIGHT_FLOOR",
    "Accumulator",
    "BlendKind",
    "Edges",
    "axis_profile",
    "decode",
    "decode_extra",
    "quantize_probs",
    "quantize_weights",
    "seam_sums",
    "taper",
    "tile_edges",
    "weight_bits",
    "weight_window",
]


WEIGHT_FLOOR = 1e-3
"""Smallest weight a window gives a pixel of its tile (keeps the weight sum positive)."""

PROB_SCALE = 65535
"""Probabilities are quantised to ``rint(p * PROB_SCALE)`` (fits ``uint16``)."""

_PROB_BITS = 16
_ACC_BITS = 30  # sums stay below 2**30 (int32 with room to spare)
_DECODE_ROWS = 256


# -- weight windows ---------------------------------------------------------------------


@dataclass(frozen=True)
class Edges:
    """Which sides of a tile lie on (or beyond) the scene edge: those are not tapered."""

    top: bool = False
    bottom: bool = False
    left: bool = False
    right: bool = False


def tile_edges(tile: Rect, shape: tuple[int, int]) -> Edges:
    """The sides of ``tile`` that touch or pass the edge of a scene of ``shape`` (rows, cols)."""
    return Edges(
        top=tile.row <= 0,
        bottom=tile.row + tile.height >= shape[0],
        left=tile.col <= 0,
        right=tile.col + tile.width >= shape[1],
    )


def taper(n: int, kind: BlendKind) -> npt.NDArray[np.float64]:
    """The rising edge of a window: ``n`` increasing values in ``[WEIGHT_FLOOR, 1)``.

    Args:
        n: Length of the ramp (the overlap), >= 0.
        kind: ``hann`` (raised cosine), ``spline`` (quadratic spline, C1) or ``mean`` (flat).
    """
    if n <= 0:
        return np.zeros(0)
    t = (np.arange(n) + 0.5) / n
    if kind == "hann":
        ramp = 0.5 - 0.5 * np.cos(np.pi * t)
    elif kind == "spline":
        ramp = np.where(t < 0.5, 2.0 * t * t, 1.0 - 2.0 * (1.0 - t) ** 2)
    elif kind == "mean":
        ramp = np.ones(n)
    else:
        raise ValueError(f"unknown blend window {kind!r}; use hann, spline or mean")
    return np.maximum(ramp, WEIGHT_FLOOR)


def axis_profile(
    length: int, overlap: int, *, kind: BlendKind, taper_start: bool, taper_end: bool
) -> npt.NDArray[np.float64]:
    """Weights along one tile axis: 1 inside, tapered over ``overlap`` at the chosen ends."""
    p = np.ones(length)
    n = min(overlap, length)
    if n > 0:
        ramp = taper(n, kind)
        if taper_start:
            p[:n] = np.minimum(p[:n], ramp)
        if taper_end:
            p[length - n :] = np.minimum(p[length - n :], ramp[::-1])
    return p


def weight_window(
    shape: tuple[int, int], *, kind: BlendKind, overlap: int, edges: Edges = Edges()
) -> npt.NDArray[np.float64]:
    """A separable 2-D weight window for a tile of ``shape`` (rows, cols).

    Sides flagged in ``edges`` (on the scene edge) are not tapered, so pixels near the
    scene border keep full weight; all weights are in ``[WEIGHT_FLOOR, 1]``.
    """
    rows = axis_profile(
        shape[0], overlap, kind=kind, taper_start=not edges.top, taper_end=not edges.bottom
    )
    cols = axis_profile(
        shape[1], overlap, kind=kind, taper_start=not edges.left, taper_end=not edges.right
    )
    return np.outer(rows, cols)


# -- quantisation -------------------------------------------------------------------------


def weight_bits(max_cover: int) -> int:
    """Bits of the integer weights so that ``max_cover`` overlapping tiles fit in int32.

    Raises:
        ValueError: When so many tiles overlap one pixel that fewer than 4 bits remain
            (an overlap close to the tile size); use a smaller overlap.
    """
    if max_cover < 1:
        raise ValueError(f"max_cover must be >= 1, got {max_cover}")
    bits = _ACC_BITS - _PROB_BITS - math.ceil(math.log2(max_cover))
    if bits < 4:
        raise ValueError(
            f"{max_cover} tiles overlap one pixel; too many to blend exactly - use a smaller "
            "overlap relative to the tile size"
        )
    return min(bits, 14)


def quantize_weights(weights: npt.NDArray[np.floating], bits: int) -> npt.NDArray[np.int32]:
    """Integer weights ``max(1, rint(w * 2**bits))``."""
    q = np.rint(np.asarray(weights, dtype=np.float64) * (1 << bits))
    return np.maximum(q, 1).astype(np.int32)


def quantize_probs(probs: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    """Quantised probabilities ``rint(clip(p, 0, 1) * PROB_SCALE)`` as uint16."""
    p = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    return np.rint(p * np.float32(PROB_SCALE)).astype(np.uint16)


# -- accumulation ----------------------------------------------------------------------------


def _tensor(a: npt.ArrayLike | torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    import torch

    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t if dtype is None else t.to(dtype)


class Accumulator:
    """Exact overlap-add of weighted class probabilities over a rectangle of the scene.

    ``sums[:C]`` holds ``sum(W * P)`` per class and ``sums[C]`` holds ``sum(W)``: an int32
    tensor on ``device`` (where the model runs; the same arithmetic on any device).

    Args:
        rect: The scene rectangle covered.
        num_classes: Number of probability channels C (the classes, and any extra outputs
            after them).
        device: Torch device of the sums.
    """

    def __init__(self, rect: Rect, num_classes: int, *, device: str | torch.device = "cpu") -> None:
        import torch

        self.rect = rect
        self.num_classes = num_classes
        self.sums = torch.zeros(
            (num_classes + 1, rect.height, rect.width), dtype=torch.int32, device=device
        )

    @classmethod
    def from_sums(cls, rect: Rect, sums: npt.NDArray[np.int32]) -> Accumulator:
        """An accumulator over ``rect`` that starts from a copy of ``sums`` (C + 1, h, w)."""
        import torch

        if sums.shape[1:] != (rect.height, rect.width):
            raise ValueError(f"sums of shape {sums.shape[1:]} do not cover {rect}")
        acc = cls.__new__(cls)
        acc.rect = rect
        acc.num_classes = sums.shape[0] - 1
        acc.sums = torch.from_numpy(np.array(sums, dtype=np.int32))
        return acc

    def add(
        self,
        probs_q: npt.NDArray[np.integer] | torch.Tensor,
        weights_q: npt.NDArray[np.int32] | torch.Tensor,
        tile: Rect,
    ) -> None:
        """Add one tile: quantised probabilities (C, h, w) and integer weights (h, w).

        The parts of ``tile`` outside the accumulator's rectangle are ignored.
        """
        import torch

        part = tile.intersect(self.rect)
        if part.empty:
            return
        src = part.slices(tile)
        dst = part.slices(self.rect)
        dev = self.sums.device
        w = _tensor(weights_q, torch.int32).to(dev)[src]
        target = self.sums[(slice(None), *dst)]
        target[:-1].addcmul_(_tensor(probs_q, torch.int32).to(dev)[(slice(None), *src)], w)
        target[-1].add_(w)

    def add_sums(self, sums: npt.NDArray[np.int32] | torch.Tensor, rect: Rect) -> None:
        """Add integer sums (C + 1, h, w) that cover ``rect`` (clipped to this accumulator)."""
        part = rect.intersect(self.rect)
        if part.empty:
            return
        src = _tensor(sums).to(self.sums.device)[(slice(None), *part.slices(rect))]
        self.sums[(slice(None), *part.slices(self.rect))].add_(src)

    def take(self, rect: Rect) -> torch.Tensor:
        """A copy of the sums over ``rect`` (which must lie inside the accumulator)."""
        part = rect.intersect(self.rect)
        if part != rect:
            raise ValueError(f"{rect} is not inside the accumulator {self.rect}")
        return self.sums[(slice(None), *rect.slices(self.rect))].clone()


def _probs_u8(s: torch.Tensor, wsum: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``round(255 * S / (W * PROB_SCALE))`` as uint8 in integers, 0 where ``bad``."""
    import torch

    den = wsum.clamp_min(1) * PROB_SCALE
    # round(255 * S / den) in integers: floor((2 * 255 * S + den) / (2 * den))
    q = torch.div(s.to(torch.int64) * 510 + den, 2 * den, rounding_mode="floor")
    return q.clamp_(0, 255).to(torch.uint8).masked_fill_(bad, 0)


def decode(
    sums: npt.NDArray[np.int32] | torch.Tensor,
    valid: npt.NDArray[np.bool_] | torch.Tensor,
    *,
    probabilities: bool = False,
    extra: int = 0,
) -> tuple[Any, Any]:
    """Blended sums to classes (and optionally uint8 probabilities), where the sums are.

    Args:
        sums: (C + E + 1, h, w) integer sums from an :class:`Accumulator` (numpy or torch).
        valid: (h, w) validity of the input pixels.
        probabilities: Also return per-class probabilities scaled to 0..255.
        extra: E, the channels after the classes that are not classes (a model's extra
            outputs): left out of the argmax and of ``probs`` (see :func:`decode_extra`).

    Returns:
        ``classes`` (h, w) uint8: the argmax of the blended probabilities (ties to the
        lower index), :data:`~geoseg.schema.IGNORE` where the input is invalid or no tile
        covered the pixel; ``probs`` (C, h, w) uint8 ``round(255 * p)``, 0 where invalid
        (None unless asked for); numpy for numpy sums, else tensors on the sums' device.
        Integer arithmetic: the same sums decode to the same bytes on any device.
    """
    import torch

    s_all = _tensor(sums)
    v_all = _tensor(valid).to(s_all.device, torch.bool)
    n = s_all.shape[0] - 1  # the weights' row
    c = n - extra
    h, w = s_all.shape[1:]
    classes = torch.empty((h, w), dtype=torch.uint8, device=s_all.device)
    probs = (
        torch.empty((c, h, w), dtype=torch.uint8, device=s_all.device) if probabilities else None
    )
    for r0 in range(0, h, _DECODE_ROWS):
        r1 = min(h, r0 + _DECODE_ROWS)
        s = s_all[:, r0:r1]
        wsum = s[n].to(torch.int64)
        bad = ~(v_all[r0:r1] & (wsum > 0))
        classes[r0:r1] = class_argmax(s[:c]).masked_fill_(bad, IGNORE)
        if probs is not None:
            probs[:, r0:r1] = _probs_u8(s[:c], wsum, bad)
    if isinstance(sums, np.ndarray):
        return classes.numpy(), None if probs is None else probs.numpy()
    return classes, probs


def decode_extra(
    sums: npt.NDArray[np.int32] | torch.Tensor,
    valid: npt.NDArray[np.bool_] | torch.Tensor,
    *,
    extra: int,
) -> Any:
    """The last ``extra`` probability channels of blended sums as uint8 (0..255).

    The same integer rounding as the class probabilities of :func:`decode`:
    ``round(255 * p)``, 0 where the input is invalid or no tile covered the pixel.

    Args:
        sums: (C + E + 1, h, w) integer sums from an :class:`Accumulator`.
        valid: (h, w) validity of the input pixels.
        extra: E >= 1.

    Returns:
        (E, h, w) uint8: numpy for numpy sums, else a tensor on the sums' device.
    """
    import torch

    s_all = _tensor(sums)
    v_all = _tensor(valid).to(s_all.device, torch.bool)
    n = s_all.shape[0] - 1
    h, w = s_all.shape[1:]
    out = torch.empty((extra, h, w), dtype=torch.uint8, device=s_all.device)
    for r0 in range(0, h, _DECODE_ROWS):
        r1 = min(h, r0 + _DECODE_ROWS)
        s = s_all[:, r0:r1]
        wsum = s[n].to(torch.int64)
        bad = ~(v_all[r0:r1] & (wsum > 0))
        out[:, r0:r1] = _probs_u8(s[n - extra : n], wsum, bad)
    return out.numpy() if isinstance(sums, np.ndarray) else out


def seam_sums(
    plan: BlockPlan,
    block: tuple[int, int],
    pieces: Sequence[tuple[Rect, npt.NDArray[np.int32]]],
) -> list[tuple[Rect, npt.NDArray[np.int32]]]:
    """Complete ``block``'s seam from ``(rect, sums)`` of every contributor (itself included).

    Returns ``(rect, sums)`` (numpy) for each rectangle of :meth:`BlockPlan.seam_rects`.
    """
    num = pieces[0][1].shape[0] - 1 if pieces else 0
    out = []
    for rect in plan.seam_rects(block):
        whole = next((i for i, (prect, _) in enumerate(pieces) if prect == rect), None)
        if whole is None:
            acc = Accumulator(rect, num)
        else:  # start from the piece that covers the whole seam (the block's own): no zeros
            acc = Accumulator.from_sums(rect, pieces[whole][1])
        for i, (prect, psums) in enumerate(pieces):
            if i != whole:
                acc.add_sums(psums, prect)
        out.append((rect, acc.sums.numpy()))
    return out
