"""Block-wise polygonization with an exact merge across block borders.

Each block is labelled into 4-connected components per requested class and polygonized
in *pixel* coordinates (:func:`geoseg.vectorize._outlines.trace_outlines`: the polygons of
``rasterio.features.shapes``, traced with whole-array operations), so vertices are exact
integers that agree across blocks. A component that touches
an internal block border is joined with the components on the other side that share border
*pixels edges* with it (same class, 4-adjacent across the border): exactly the rule of a
whole-raster 4-connected polygonization, so pieces that only touch at a corner stay apart.

Blocks are consumed in block-row order. After a row, a merged group is final unless it
touches the bottom border of that row; only such border groups stay in memory.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

from geoseg._io import ignoring
from geoseg.errors import InputError
from geoseg.raster.source import gdal_call
from geoseg.vectorize._clean import drop_collinear, node_mask, polygon_parts
from geoseg.vectorize._outlines import Rings, trace_rings

__all__ = [
    "BlockResult",
    "BorderMerger",
    "InnerPieces",
    "Piece",
    "internal_edge_ids",
    "merge_pieces",
    "polygonize_block",
]

logger = logging.getLogger(__name__)

_OUTSIDE = -1


@dataclass
class Piece:
    """A connected component (or a merged group of them) in pixel coordinates.

    Attributes:
        cls: Class index.
        geom: Polygon with integer pixel-corner vertices (a MultiPolygon only if a merge
            went wrong).
        count: Number of pixels.
        prob_sum: Sum of the class probability (0..255) over its pixels.
        nodes: Sorted keys (``row * (width + 1) + col``) of node corners on its border.
        row: Block row where it starts (the smallest block row of its members).
        ids: Global ids of the block pieces it was made of.
        clean: ``geom`` is valid and has a vertex only where its outline turns (a traced
            outline, or a merge of them): cleaning without simplification leaves it as it
            is. Leave it False for a geometry made otherwise (split, edited...).
    """

    cls: int
    geom: Polygon | MultiPolygon
    count: int
    prob_sum: float
    nodes: npt.NDArray[np.int64]
    row: int
    ids: tuple[int, ...] = ()
    clean: bool = False


@dataclass
class InnerPieces:
    """Pieces of a block that no other block can join, as arrays (finished in bulk).

    Their outlines are clean (see :attr:`Piece.clean`); they have no node corners.

    Attributes:
        cls: Class index of each.
        rings: Their outlines (integer pixel corners), as traced.
        count: Number of pixels of each.
        prob_sum: Sum of the class probability (0..255) over its pixels.
    """

    cls: npt.NDArray[np.int64]
    rings: Rings
    count: npt.NDArray[np.int64]
    prob_sum: npt.NDArray[np.float64]


@dataclass
class BlockResult:
    """What one block yields: its pieces and the piece ids along its four edges."""

    row: int
    col: int
    pieces: dict[int, Piece]
    top: npt.NDArray[np.int64]
    bottom: npt.NDArray[np.int64]
    left: npt.NDArray[np.int64]
    right: npt.NDArray[np.int64]
    n_labels: int = 0
    extra: dict[str, object] = field(default_factory=dict)
    inner: InnerPieces | None = None


def read_with_halo(
    src: rasterio.io.DatasetReader, window: Window, halo: int, *, band: int = 1
) -> npt.NDArray[np.int16]:
    """Read a window plus ``halo`` pixels around it; outside the raster is -1."""
    r0, c0 = int(window.row_off) - halo, int(window.col_off) - halo
    h, w = int(window.height) + 2 * halo, int(window.width) + 2 * halo
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, src.height), min(c0 + w, src.width)
    data = src.read(band, window=Window(cc0, rr0, cc1 - cc0, rr1 - rr0))
    out = np.full((h, w), _OUTSIDE, dtype=np.int16)
    out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = data
    return out


_NO_NODES = np.zeros(0, dtype=np.int64)


def _quiet(georeferenced: bool) -> contextlib.AbstractContextManager[None]:
    """Nothing for a georeferenced raster; else rasterio's warning about it silenced."""
    return contextlib.nullcontext() if georeferenced else ignoring(NotGeoreferencedWarning)


def _read_error(path: str, window: Window, message: str) -> InputError:
    return InputError(
        f"{path}: reading pixels at column {int(window.col_off)}, row {int(window.row_off)} "
        f"failed ({message}); the file is truncated or corrupt: copy or write it again"
    )


def label_block(
    values: npt.NDArray[np.integer], classes: tuple[int, ...]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """4-connected components of each class; ids unique in the block.

    Returns:
        The label image (0 = none) and the class of each id (index 0 unused).
    """
    labels: npt.NDArray[np.int32] | None = None
    found: list[tuple[int, int]] = []
    offset = 0
    for k in classes:
        mask = values == k
        if not mask.any():
            continue
        lab, n = ndimage.label(mask, output=np.int32)  # type: ignore[misc]
        if labels is None:
            labels = lab
        else:
            np.add(lab, offset, out=lab, where=mask)
            labels += lab  # 0 outside this class
        found.append((k, n))
        offset += n
    if labels is None:
        labels = np.zeros(values.shape, dtype=np.int32)
    cls_of = np.repeat(
        np.array([-1] + [k for k, _ in found], dtype=np.int64), [1] + [n for _, n in found]
    )
    return labels, cls_of


def _pixel_counts(rings: Rings) -> npt.NDArray[np.int64]:
    """The pixels of each traced outline: its area, exactly (shell less holes)."""
    area2 = np.abs(rings.ring_area())
    is_hole = np.ones(len(area2), dtype=bool)
    is_hole[rings.first] = False
    area2[is_hole] *= -1
    return np.add.reduceat(area2, rings.first) // 2


def _piece_nodes(
    values: npt.NDArray[np.int16],
    labels: npt.NDArray[np.int32],
    *,
    halo: int,
    r0: int,
    c0: int,
    width: int,
    n: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """The node corners on the border of each piece of a block.

    Returns:
        Node keys (``row * (width + 1) + col``) sorted by piece and key, unique per piece,
        and where each piece's run starts (``keys[starts[i] : starts[i + 1]]``: piece i).
    """
    h, w = labels.shape
    nm = node_mask(values[halo - 1 : halo + h + 1, halo - 1 : halo + w + 1])
    ni, nj = np.nonzero(nm)
    keys = (r0 + ni).astype(np.int64) * (width + 1) + (c0 + nj)
    lab_parts, key_parts = [], []
    for di, dj in ((-1, -1), (-1, 0), (0, -1), (0, 0)):
        pi, pj = ni + di, nj + dj
        ok = (pi >= 0) & (pi < h) & (pj >= 0) & (pj < w)
        lab = labels[pi[ok], pj[ok]]
        sel = lab > 0
        lab_parts.append(lab[sel])
        key_parts.append(keys[ok][sel])
    lab_all = np.concatenate(lab_parts)
    key_all = np.concatenate(key_parts)
    pairs = np.unique(np.stack([lab_all.astype(np.int64), key_all], axis=1), axis=0)
    return pairs[:, 1], np.searchsorted(pairs[:, 0], np.arange(n + 2))


def polygonize_block(
    path: str,
    window: Window,
    *,
    row: int,
    col: int,
    classes: tuple[int, ...],
    ignore: tuple[int, ...],
    prob_path: str | None = None,
    halo: int = 1,
    nodes_needed: bool = True,
    georeferenced: bool = True,
    grid: tuple[int, int] | None = None,
    hold: tuple[int, ...] = (),
) -> tuple[BlockResult, npt.NDArray[np.int16]]:
    """Polygonize one block of a class raster (opens the file itself; safe in threads).

    Args:
        path: The class raster.
        window: The block.
        row: Block row index.
        col: Block column index.
        classes: Class values to polygonize.
        ignore: Values that are no class (nodata); they are never polygons.
        prob_path: Optional probability raster, band ``k + 1`` for class ``k``.
        halo: Pixels read around the block (at least 1, for the node test).
        nodes_needed: Find the node corners of each piece (needed to simplify).
        georeferenced: Whether the class raster has a geotransform; without one, rasterio
            warns when it is opened and that warning is silenced (a process of its own, or
            the caller's thread: nothing else of geoseg reads such a file concurrently).
        grid: The block grid's (rows, columns). Given (and ``nodes_needed`` false), the
            pieces that touch no internal block border (no other block can join them),
            of a class not in ``hold``, come back as arrays (``inner``) to be finished in
            bulk rather than as :class:`Piece` records.
        hold: Classes whose pieces are always :class:`Piece` records.

    Returns:
        The block result (ids local to the block, 1..n) and the haloed class values.

    Raises:
        InputError: A raster cannot be read (truncated or corrupt), naming the file.
    """
    halo = max(1, halo)

    def read() -> tuple[npt.NDArray[np.int16], int]:
        # In an Env, GDAL's own warnings go to logging rather than straight to stderr.
        with _quiet(georeferenced), rasterio.Env(), rasterio.open(path) as src:
            return read_with_halo(src, window, halo), src.width

    values, width = gdal_call(read, lambda m: _read_error(path, window, m))
    h, w = int(window.height), int(window.width)
    r0, c0 = int(window.row_off), int(window.col_off)
    core = values[halo : halo + h, halo : halo + w]
    for v in ignore:
        if v not in classes:
            continue
        core = np.where(core == v, _OUTSIDE, core)
    labels, cls_of = label_block(core, classes)
    n = len(cls_of) - 1
    pieces: dict[int, Piece] = {}
    inner: InnerPieces | None = None
    if n:
        sums = np.zeros(n + 1, dtype=np.float64)
        if prob_path is not None:
            ppath = prob_path

            def add_probabilities() -> None:
                with _quiet(georeferenced), rasterio.Env(), rasterio.open(ppath) as psrc:
                    for k in classes:
                        ids = np.flatnonzero(cls_of == k)
                        if len(ids) == 0:
                            continue
                        prob = psrc.read(k + 1, window=window).astype(np.float64)
                        sel = np.isin(labels, ids)
                        sums[:] += np.bincount(labels[sel], weights=prob[sel], minlength=n + 1)

            gdal_call(add_probabilities, lambda m: _read_error(ppath, window, m))
        nodes = (
            _piece_nodes(values, labels, halo=halo, r0=r0, c0=c0, width=width, n=n)
            if nodes_needed
            else None
        )
        rings = trace_rings(labels, col_off=c0, row_off=r0)  # labels 1..n, in order
        counts = _pixel_counts(rings)
        record = np.ones(n, dtype=bool)
        if grid is not None and nodes is None:
            on_edge = np.zeros(n + 1, dtype=bool)
            edges = (
                (row > 0, labels[0, :]),
                (row < grid[0] - 1, labels[-1, :]),
                (col > 0, labels[:, 0]),
                (col < grid[1] - 1, labels[:, -1]),
            )
            for internal, edge in edges:
                if internal:
                    on_edge[edge] = True
            record = on_edge[1:] | np.isin(cls_of[1:], hold)
            bulk = ~record
            inner = InnerPieces(
                cls=cls_of[1:][bulk],
                rings=rings.select(bulk),
                count=counts[bulk],
                prob_sum=sums[1:][bulk],
            )
        ids = np.flatnonzero(record)
        geom_l = rings.select(record).polygons().tolist()
        cls_l, sum_l, count_l = cls_of.tolist(), sums.tolist(), counts.tolist()
        for j, i in enumerate(ids.tolist()):
            pieces[i + 1] = Piece(
                cls=cls_l[i + 1],
                geom=geom_l[j],
                count=count_l[i],
                prob_sum=sum_l[i + 1],
                nodes=_NO_NODES if nodes is None else nodes[0][nodes[1][i + 1] : nodes[1][i + 2]],
                row=row,
                clean=True,
            )
    res = BlockResult(
        row=row,
        col=col,
        pieces=pieces,
        top=labels[0, :].astype(np.int64),
        bottom=labels[-1, :].astype(np.int64),
        left=labels[:, 0].astype(np.int64),
        right=labels[:, -1].astype(np.int64),
        n_labels=n,
        inner=inner,
    )
    return res, values


def internal_edge_ids(res: BlockResult, n_rows: int, n_cols: int) -> set[int]:
    """Local ids of the pieces that touch an internal block border (they may merge)."""
    ids: set[int] = set()
    edges = (
        (res.row > 0, res.top),
        (res.row < n_rows - 1, res.bottom),
        (res.col > 0, res.left),
        (res.col < n_cols - 1, res.right),
    )
    for internal, arr in edges:
        if internal:
            ids.update(np.unique(arr[arr > 0]).tolist())
    return ids


class BorderMerger:
    """Joins block pieces across internal borders, row by row, streaming final groups.

    Feed it one complete block row at a time with :meth:`add_row_groups`; it returns the
    groups that became final (their members, to merge with :func:`merge_pieces`). Memory
    holds only groups that touch the bottom border of the last row added.
    """

    def __init__(self, n_rows: int, n_cols: int) -> None:
        self.n_rows = n_rows
        self.n_cols = n_cols
        self._parent: dict[int, int] = {}
        self._pending: dict[int, Piece] = {}
        self._prev_bottom: npt.NDArray[np.int64] | None = None
        self._next_id = 1
        self.max_pending = 0

    def _find(self, i: int) -> int:
        parent = self._parent
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            if ra < rb:
                ra, rb = rb, ra
            self._parent[ra] = rb

    def pending_pieces(self) -> Iterator[tuple[int, Piece]]:
        """The pieces held back (with their group root), e.g. as neighbour context."""
        for i, p in self._pending.items():
            yield self._find(i), p

    def add_row_groups(self, blocks: list[BlockResult]) -> list[list[Piece]]:
        """Add one block row (all its blocks, any order); return the groups now final.

        Each group is its members, not yet merged: merging is left to the caller
        (:func:`merge_pieces`, e.g. in a worker process).
        """
        blocks = sorted(blocks, key=lambda b: b.col)
        row = blocks[0].row
        last_row = row == self.n_rows - 1
        finals: list[list[Piece]] = []
        tops, bottoms = [], []
        border_ids: set[int] = set()
        rights: list[npt.NDArray[np.int64]] = []
        lefts: list[npt.NDArray[np.int64]] = []
        for b in blocks:
            off = self._next_id - 1
            n = b.n_labels
            self._next_id += n

            def glob(a: npt.NDArray[np.int64], off: int = off) -> npt.NDArray[np.int64]:
                return np.where(a > 0, a + off, 0)

            top, bottom, left, right = glob(b.top), glob(b.bottom), glob(b.left), glob(b.right)
            tops.append(top)
            bottoms.append(bottom)
            lefts.append(left)
            rights.append(right)
            touching = {i + off for i in internal_edge_ids(b, self.n_rows, self.n_cols)}
            for local, piece in b.pieces.items():
                gid = local + off
                piece.ids = (gid,)
                if gid in touching:
                    self._pending[gid] = piece
                    self._parent[gid] = gid
                    border_ids.add(gid)
                else:
                    finals.append([piece])
        # Vertical borders inside this row.
        for c in range(len(blocks) - 1):
            self._join(rights[c], lefts[c + 1])
        # Horizontal border with the previous row.
        top_full = np.concatenate(tops)
        if self._prev_bottom is not None:
            self._join(self._prev_bottom, top_full)
        bottom_full = np.concatenate(bottoms)
        keep_roots: set[int] = set()
        if not last_row:
            for i in np.unique(bottom_full[bottom_full > 0]).tolist():
                keep_roots.add(self._find(i))
            self._prev_bottom = bottom_full
        else:
            self._prev_bottom = None
        groups: dict[int, list[int]] = {}
        for i in self._pending:
            groups.setdefault(self._find(i), []).append(i)
        for root, members in groups.items():
            if root in keep_roots:
                continue
            finals.append([self._pending.pop(i) for i in members])
        # Forget union-find entries of finished groups.
        live = set(self._pending)
        self._parent = {i: self._find(i) for i in self._parent if i in live}
        self.max_pending = max(self.max_pending, len(self._pending))
        return finals

    def _join(self, a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> None:
        both = (a > 0) & (b > 0)
        if not both.any():
            return
        pairs = np.unique(np.stack([a[both], b[both]], axis=1), axis=0)
        for i, j in pairs.tolist():
            pi, pj = self._pending.get(i), self._pending.get(j)
            if pi is not None and pj is not None and pi.cls == pj.cls:
                self._union(i, j)


def merge_pieces(members: list[Piece], *, tidy: bool = True) -> Piece:
    """One piece from a group of pieces joined across block borders.

    Pixel outlines: axis-parallel edges on integer coordinates, so the floating-point
    overlay is exact (the same polygon as a fixed-precision one, 2.5x faster).

    Args:
        members: The group.
        tidy: Drop the union's vertices where a block border cut a straight outline
            (:func:`drop_collinear`), so that the result is clean like a traced outline.
            Regularization reads the union as it is (its outlines depend on those
            vertices).
    """
    if len(members) == 1:
        return members[0]
    clean = tidy and all(m.clean for m in members)
    merged: Polygon | MultiPolygon | None = (
        _union_clean([m.geom for m in members]) if clean else None
    )
    if merged is None:
        parts = polygon_parts(shapely.union_all([m.geom for m in members]))
        if len(parts) != 1:  # pieces joined by shared edges form one polygon; be safe
            logger.warning("a merged group gave %d polygons instead of 1", len(parts))
        clean = clean and len(parts) == 1
        if clean:
            merged = drop_collinear(np.asarray(parts, dtype=object))[0]
        else:
            merged = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    return Piece(
        cls=members[0].cls,
        geom=merged,
        count=sum(m.count for m in members),
        prob_sum=sum(m.prob_sum for m in members),
        nodes=np.unique(np.concatenate([m.nodes for m in members])),
        row=min(m.row for m in members),
        ids=tuple(i for m in members for i in m.ids),
        clean=clean,
    )


def _union_clean(geoms: list[Polygon | MultiPolygon]) -> Polygon | None:
    """The union of clean pixel outlines of one group, clean; None if it is not a polygon.

    A hole of a block's piece lies inside that block, away from its edges, where no other
    piece is: the union is the union of the shells, with every hole added back as it is.
    Only the shells (a small part of the vertices of a road network) go through the
    overlay, which is exact on pixel corners.
    """
    arr = np.asarray(geoms, dtype=object)
    if not np.all(shapely.get_type_id(arr) == 3):
        return None
    shells = shapely.union_all(shapely.polygons(shapely.get_exterior_ring(arr)))
    if shapely.get_type_id(shells) != 3:
        return None
    shells = drop_collinear(np.asarray([shells], dtype=object))[0]
    rings, owner = shapely.get_rings(arr, return_index=True)
    is_hole = np.ones(len(rings), dtype=bool)
    is_hole[np.searchsorted(owner, np.arange(len(arr)))] = False  # each one's shell first
    holes = np.concatenate([shapely.get_rings(shells)[1:], rings[is_hole]])
    return shapely.polygons(shapely.get_exterior_ring(shells), holes=holes)
