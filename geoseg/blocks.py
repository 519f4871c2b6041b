"""The tile and block plan of a scene (pure: no I/O).

A scene is processed in output blocks, but over ONE global tile plan
(:func:`geoseg.grid.axis_starts`). Block boundaries are placed at tile starts, every tile is
*owned* (computed) by exactly one block, the one its origin lies in, and no tile is computed
twice. A block's own tiles cover the whole block; the tiles of earlier blocks spill into a
strip along its top and left edges (the *seam*), which :func:`geoseg.blend.seam_sums`
completes once all of its contributors are done.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from geoseg.grid import axis_starts

__all__ = ["AxisPlan", "BlockPlan", "Rect", "plan_axis", "plan_blocks"]


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
