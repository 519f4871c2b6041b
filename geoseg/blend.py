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
* **The block plan.** A scene is processed in output blocks, but over ONE global tile plan
  (:func:`geoseg.grid.axis_starts`). Block boundaries are placed at tile starts, every tile
  is *owned* (computed) by exactly one block, the one its origin lies in, and no tile is
  computed twice. A block's own tiles cover the whole block; the tiles of earlier blocks
  spill into a strip along its top and left edges (the *seam*). The engine accumulates a
  block's own tiles, hands the spilled sums (*pieces*) to the blocks they land in, and
  completes a seam once all of its contributors are done.
Memory per block: ``(classes + 1) * 4`` bytes per pixel of the block plus its spill.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.grid import axis_starts
from geoseg.options import BlendKind
from geoseg.schema import IGNORE

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROB_SCALE",
    "WEIGHT_FLOOR",
    "Accumulator",
    "AxisPlan",
    "BlendKind",
    "BlockPlan",
    "Edges",
    "Rect",
    "axis_profile",
    "decode",
    "plan_axis",
    "plan_blocks",
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


# -- rectangles -------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Rect:
    """An integer pixel rectangle on the scene grid.

    Attributes:
        row: First row.
        col: First column.
        height: Rows (>= 0).
        width: Columns (>= 0).
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def empty(self) -> bool:
        """Whether the rectangle has no pixel."""
        return self.height <= 0 or self.width <= 0

    def intersect(self, other: Rect) -> Rect:
        """The common part of two rectangles (possibly empty)."""
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1 = min(self.row + self.height, other.row + other.height)
        c1 = min(self.col + self.width, other.col + other.width)
        return Rect(r0, c0, max(0, r1 - r0), max(0, c1 - c0))

    def slices(self, origin: Rect) -> tuple[slice, slice]:
        """Array slices of this rectangle inside an array that covers ``origin``."""
        r, c = self.row - origin.row, self.col - origin.col
        return slice(r, r + self.height), slice(c, c + self.width)


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
        num_classes: Number of classes C.
        device: Torch device of the sums.
    """

    def __init__(self, rect: Rect, num_classes: int, *, device: str | torch.device = "cpu") -> None:
        import torch

        self.rect = rect
        self.num_classes = num_classes
        self.sums = torch.zeros(
            (num_classes + 1, rect.height, rect.width), dtype=torch.int32, device=device
        )

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


def decode(
    sums: npt.NDArray[np.int32] | torch.Tensor,
    valid: npt.NDArray[np.bool_] | torch.Tensor,
    *,
    probabilities: bool = False,
) -> tuple[Any, Any]:
    """Blended sums to classes (and optionally uint8 probabilities), where the sums are.

    Args:
        sums: (C + 1, h, w) integer sums from an :class:`Accumulator` (numpy or torch).
        valid: (h, w) validity of the input pixels.
        probabilities: Also return per-class probabilities scaled to 0..255.

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
    c = s_all.shape[0] - 1
    h, w = s_all.shape[1:]
    classes = torch.empty((h, w), dtype=torch.uint8, device=s_all.device)
    probs = (
        torch.empty((c, h, w), dtype=torch.uint8, device=s_all.device) if probabilities else None
    )
    for r0 in range(0, h, _DECODE_ROWS):
        r1 = min(h, r0 + _DECODE_ROWS)
        s = s_all[:, r0:r1]
        wsum = s[c].to(torch.int64)
        bad = ~(v_all[r0:r1] & (wsum > 0))
        # argmax as running comparisons (ties to the lower index): fast on the CPU too
        best = s[0].clone()
        cls = torch.zeros_like(best, dtype=torch.uint8)
        for k in range(1, c):
            more = s[k] > best
            best = torch.maximum(best, s[k])
            cls.masked_fill_(more, k)
        classes[r0:r1] = cls.masked_fill_(bad, IGNORE)
        if probs is not None:
            den = wsum.clamp_min(1) * PROB_SCALE
            # round(255 * S / den) in integers: floor((2 * 255 * S + den) / (2 * den))
            q = torch.div(s[:c].to(torch.int64) * 510 + den, 2 * den, rounding_mode="floor")
            probs[:, r0:r1] = q.clamp_(0, 255).to(torch.uint8).masked_fill_(bad, 0)
    if isinstance(sums, np.ndarray):
        return classes.numpy(), None if probs is None else probs.numpy()
    return classes, probs


# -- the block plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisPlan:
    """Tiles and output blocks along one axis.

    Attributes:
        length: Axis length (pixels).
        size: Tile size.
        starts: Tile starts (the global plan, :func:`geoseg.grid.axis_starts`).
        cuts: Block starts; block ``j`` spans ``[cuts[j], cuts[j + 1])`` (the last ends at
            ``length``). Every cut is a tile start.
    """

    length: int
    size: int
    starts: tuple[int, ...]
    cuts: tuple[int, ...]

    @property
    def n_blocks(self) -> int:
        """Number of blocks."""
        return len(self.cuts)

    def block(self, j: int) -> tuple[int, int]:
        """``(start, stop)`` of block ``j``."""
        stop = self.cuts[j + 1] if j + 1 < len(self.cuts) else self.length
        return self.cuts[j], stop

    @cached_property
    def _first(self) -> tuple[int, ...]:
        idx = [self.starts.index(c) for c in self.cuts]
        return (*idx, len(self.starts))

    def owned(self, j: int) -> range:
        """Indices (into ``starts``) of the tiles block ``j`` computes."""
        return range(self._first[j], self._first[j + 1])

    def owner(self, i: int) -> int:
        """The block that computes tile ``i``."""
        for j in range(len(self.cuts) - 1, -1, -1):
            if self._first[j] <= i:
                return j
        raise ValueError(f"tile index {i} out of range")

    def tile_end(self, i: int) -> int:
        """End of tile ``i`` clipped to the axis."""
        return min(self.starts[i] + self.size, self.length)

    def extent(self, j: int) -> tuple[int, int]:
        """``(start, stop)`` covered by block ``j``'s own tiles (clipped to the axis)."""
        own = self.owned(j)
        return self.starts[own.start], max(self.tile_end(i) for i in own)

    def lead(self, j: int) -> int:
        """Pixels at the start of block ``j`` that tiles of earlier blocks also cover."""
        a, b = self.block(j)
        first = self._first[j]
        if first == 0:
            return 0
        reach = max(self.tile_end(i) for i in range(first))
        return max(0, min(b, reach) - a)

    def contributors(self, j: int) -> tuple[int, ...]:
        """Blocks whose tiles cover some pixel of block ``j`` (always includes ``j``)."""
        a, _ = self.block(j)
        out = {j}
        for i in range(self._first[j]):
            if self.tile_end(i) > a:
                out.add(self.owner(i))
        return tuple(sorted(out))

    @cached_property
    def max_cover(self) -> int:
        """The largest number of tiles covering one pixel along this axis."""
        events = sorted(
            [(s, 1) for s in self.starts]
            + [(min(s + self.size, self.length), -1) for s in self.starts]
        )
        cur = best = 0
        for _, d in events:
            cur += d
            best = max(best, cur)
        return max(best, 1)


def plan_axis(length: int, size: int, overlap: int, block: int) -> AxisPlan:
    """Plan tiles and blocks along one axis.

    Blocks hold about ``block / (size - overlap)`` tile strides each (at least one), as
    evenly as the tiles divide (no sliver of a block at the end, whose pixels would be
    mostly seam), and start at tile starts, so each block owns the tiles that start inside
    it.

    Args:
        length: Axis length (> 0).
        size: Tile size (> 0).
        overlap: Tile overlap (0 <= overlap < size).
        block: Requested block size in pixels (> 0).
    """
    starts = tuple(axis_starts(length, size, overlap))
    stride = size - overlap
    per = max(1, round(block / stride))
    n = max(1, round(len(starts) / per))
    cuts = tuple(starts[round(k * len(starts) / n)] for k in range(n))
    return AxisPlan(length=length, size=size, starts=starts, cuts=cuts)


@dataclass(frozen=True)
class BlockPlan:
    """Tiles and output blocks of a whole scene (see the module docs).

    Attributes:
        rows: The row axis plan.
        cols: The column axis plan.
    """

    rows: AxisPlan
    cols: AxisPlan

    @property
    def shape(self) -> tuple[int, int]:
        """Scene (rows, cols)."""
        return (self.rows.length, self.cols.length)

    @property
    def tile_size(self) -> tuple[int, int]:
        """Tile (rows, cols)."""
        return (self.rows.size, self.cols.size)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """Every block index ``(r, c)``, row-major."""
        return [(r, c) for r in range(self.rows.n_blocks) for c in range(self.cols.n_blocks)]

    @property
    def n_tiles(self) -> int:
        """Number of tiles in the plan (each is computed once)."""
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def max_cover(self) -> int:
        """The largest number of tiles covering one pixel."""
        return self.rows.max_cover * self.cols.max_cover

    def block_rect(self, block: tuple[int, int]) -> Rect:
        """The output pixels of ``block``."""
        r0, r1 = self.rows.block(block[0])
        c0, c1 = self.cols.block(block[1])
        return Rect(r0, c0, r1 - r0, c1 - c0)

    def extent_rect(self, block: tuple[int, int]) -> Rect:
        """The pixels covered by ``block``'s own tiles (clipped to the scene)."""
        r0, r1 = self.rows.extent(block[0])
        c0, c1 = self.cols.extent(block[1])
        return Rect(r0, c0, r1 - r0, c1 - c0)

    def tiles(self, block: tuple[int, int]) -> list[Rect]:
        """The tiles ``block`` computes, row-major (may extend past a small scene)."""
        return [t for row in self.tile_rows(block) for t in row]

    def tile_rows(self, block: tuple[int, int]) -> list[list[Rect]]:
        """``block``'s tiles grouped by tile row."""
        th, tw = self.tile_size
        return [
            [
                Rect(self.rows.starts[i], self.cols.starts[k], th, tw)
                for k in self.cols.owned(block[1])
            ]
            for i in self.rows.owned(block[0])
        ]

    def contributors(self, block: tuple[int, int]) -> list[tuple[int, int]]:
        """Blocks whose tiles cover pixels of ``block`` (including itself)."""
        return [
            (r, c)
            for r in self.rows.contributors(block[0])
            for c in self.cols.contributors(block[1])
        ]

    def dependents(self, block: tuple[int, int]) -> list[tuple[int, int]]:
        """Other blocks that ``block``'s tiles spill into."""
        out = []
        ext = self.extent_rect(block)
        r, c = block
        for rr in range(r, self.rows.n_blocks):
            if self.rows.block(rr)[0] >= ext.row + ext.height:
                break
            for cc in range(c, self.cols.n_blocks):
                if self.cols.block(cc)[0] >= ext.col + ext.width:
                    break
                if (rr, cc) != block:
                    out.append((rr, cc))
        return out

    def seam_rects(self, block: tuple[int, int]) -> list[Rect]:
        """The pixels of ``block`` that other blocks' tiles also cover.

        A top strip and a left strip (either may be absent).
        """
        b = self.block_rect(block)
        lr, lc = self.rows.lead(block[0]), self.cols.lead(block[1])
        out = []
        if lr > 0:
            out.append(Rect(b.row, b.col, lr, b.width))
        if lc > 0 and b.height - lr > 0:
            out.append(Rect(b.row + lr, b.col, b.height - lr, lc))
        return out

    def piece_rect(self, source: tuple[int, int], dest: tuple[int, int]) -> Rect:
        """Where ``source``'s tiles spill into ``dest``."""
        return self.extent_rect(source).intersect(self.block_rect(dest))

    def iter_rects(self) -> Iterator[tuple[tuple[int, int], Rect]]:
        """``(block, rect)`` for every block."""
        for b in self.blocks:
            yield b, self.block_rect(b)


def plan_blocks(
    shape: tuple[int, int], *, tile_size: int, overlap: int, block_size: int
) -> BlockPlan:
    """The tile and block plan of a scene of ``shape`` (rows, cols).

    Args:
        shape: Scene (rows, cols).
        tile_size: Tile edge.
        overlap: Pixels shared by neighbouring tiles.
        block_size: Requested output block edge (rounded to whole tile strides).

    Raises:
        ValueError: Invalid sizes.
    """
    return BlockPlan(
        rows=plan_axis(shape[0], tile_size, overlap, block_size),
        cols=plan_axis(shape[1], tile_size, overlap, block_size),
    )


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
        acc = Accumulator(rect, num)
        for prect, psums in pieces:
            acc.add_sums(psums, prect)
        out.append((rect, acc.sums.numpy()))
    return out
