"""Road centre-lines: a per-block skeleton (with a halo) turned into a line network.

Each block skeletonizes the road mask of the block plus a halo (so the skeleton near the
block border sees the road beyond it), keeps the skeleton pixels inside the block, and
links 8-neighbouring skeleton pixels into short segments between pixel centres. Segments
leaving the block are owned by the block their first pixel lies in, so neighbouring blocks
join end to end. The global step merges the segments into LineStrings between junctions and
prunes short dead-end spurs.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import LineString, MultiLineString

__all__ = ["block_segments", "build_network", "prune_spurs"]


def block_segments(
    mask: npt.NDArray[np.bool_], *, halo: int, row_off: int, col_off: int
) -> list[LineString]:
    """Skeleton segments of the core of a haloed road mask, merged inside the block.

    Args:
        mask: Road mask of the block plus ``halo`` pixels on every side.
        halo: Halo width in pixels.
        row_off: Block row offset in the raster (of the core).
        col_off: Block column offset in the raster.

    Returns:
        LineStrings in pixel coordinates (through pixel centres).
    """
    from skimage.morphology import skeletonize

    if not mask.any():
        return []
    sk = skeletonize(mask)
    h, w = mask.shape[0] - 2 * halo, mask.shape[1] - 2 * halo
    p = np.pad(sk, 1)
    ci, cj = np.nonzero(sk[halo : halo + h, halo : halo + w])
    pi, pj = ci + halo + 1, cj + halo + 1  # indices into the padded skeleton
    segs_a: list[npt.NDArray[np.int64]] = []
    segs_b: list[npt.NDArray[np.int64]] = []
    for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
        has = p[pi + di, pj + dj]
        if di == 1 and dj != 0:
            # Skip a diagonal where an orthogonal two-step path exists (no triangles).
            has &= ~p[pi, pj + dj] & ~p[pi + 1, pj]
        # A link belongs to the block of its first pixel (links only go right/down), so
        # a link that leaves the core is made once, by this block.
        a = np.stack([ci[has], cj[has]], axis=1)
        b = a + np.array([di, dj])
        segs_a.append(a)
        segs_b.append(b)
    a = np.concatenate(segs_a)
    b = np.concatenate(segs_b)
    if len(a) == 0:
        return []
    off = np.array([row_off, col_off])
    a = a + off
    b = b + off
    # (row, col) -> (x, y) pixel centres.
    coords = (
        np.stack(
            [np.stack([a[:, 1], a[:, 0]], axis=1), np.stack([b[:, 1], b[:, 0]], axis=1)], axis=1
        ).astype(np.float64)
        + 0.5
    )
    lines = shapely.linestrings(coords)
    merged = shapely.line_merge(shapely.multilinestrings(lines))
    return [g for g in shapely.get_parts(merged) if isinstance(g, LineString)]


def _endpoint_degree(
    lines: list[LineString],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    ends = np.array([[ln.coords[0], ln.coords[-1]] for ln in lines]).reshape(-1, 2)
    _, inv, cnt = np.unique(ends, axis=0, return_inverse=True, return_counts=True)
    deg = cnt[inv.ravel()].reshape(-1, 2)
    return deg[:, 0], deg[:, 1]


def prune_spurs(lines: list[LineString], min_length: float, *, rounds: int = 3) -> list[LineString]:
    """Drop dead-end lines shorter than ``min_length`` that hang off a junction."""
    for _ in range(rounds):
        if len(lines) < 2:
            break
        d0, d1 = _endpoint_degree(lines)
        lengths = np.array([ln.length for ln in lines])
        spur = ((d0 == 1) ^ (d1 == 1)) & (lengths < min_length)
        isolated = (d0 == 1) & (d1 == 1) & (lengths < min_length)
        drop = spur | isolated
        if not drop.any():
            break
        kept = [ln for ln, x in zip(lines, drop, strict=False) if not x]
        merged = shapely.line_merge(MultiLineString(kept)) if kept else None
        lines = (
            []
            if merged is None
            else [g for g in shapely.get_parts(merged) if isinstance(g, LineString)]
        )
    return lines


def build_network(
    pieces: list[LineString], *, spur_length: float, tolerance: float
) -> list[LineString]:
    """Block pieces -> merged, pruned, simplified centre-lines (pixel coordinates)."""
    if not pieces:
        return []
    merged = shapely.line_merge(shapely.union_all(pieces))
    lines = [g for g in shapely.get_parts(merged) if isinstance(g, LineString)]
    lines = prune_spurs(lines, spur_length)
    if tolerance > 0:
        lines = list(shapely.simplify(np.asarray(lines, dtype=object), tolerance))
    return [ln for ln in lines if ln.length > 0]
