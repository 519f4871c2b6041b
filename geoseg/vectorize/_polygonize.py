"""Block-wise polygonization with an exact merge across block borders.

Each block is labelled into 4-connected components per requested class and polygonized
with ``rasterio.features.shapes`` in *pixel* coordinates (a pure translation by the block
offset), so vertices are exact integers that agree across blocks. A component that touches
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
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon

from geoseg._io import ignoring
from geoseg.errors import InputError
from geoseg.raster.source import gdal_call
from geoseg.vectorize._clean import node_mask, polygon_parts

__all__ = [
    "BlockResult",
    "BorderMerger",
    "Piece",
    "internal_edge_ids",
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
    """

    cls: int
    geom: Polygon | MultiPolygon
    count: int
    prob_sum: float
    nodes: npt.NDArray[np.int64]
    row: int
    ids: tuple[int, ...] = ()


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


def _polygons_from_shapes(
    shapes: list[tuple[dict[str, Any], float]], shift: float = 0.0
) -> list[Polygon]:
    """GeoJSON-like polygons to shapely, in a few vectorized calls, moved by ``-shift``."""
    if not shapes:
        return []
    coords: list[tuple[float, float]] = []
    ring_len: list[int] = []
    ring_owner: list[int] = []
    for k, (geojson, _) in enumerate(shapes):
        for ring in geojson["coordinates"]:
            coords.extend(ring)
            ring_len.append(len(ring))
            ring_owner.append(k)
    xy = np.asarray(coords, dtype=np.float64)
    if shift:
        xy -= shift  # exact: integer pixel corners
    rings = shapely.linearrings(
        xy,
        indices=np.repeat(np.arange(len(ring_len)), ring_len),
    )
    polys = shapely.polygons(rings, indices=np.asarray(ring_owner))
    return list(polys)


_SHIFT = 1
"""Pixels added to both offsets of the polygonized block, then subtracted (see _shapes)."""


def _mem(array: npt.NDArray[Any], transform: Affine) -> rasterio.io.DatasetWriter:
    """A 1-band in-memory GDAL dataset holding ``array``, with ``transform``."""
    ds = rasterio.open(
        "/vsimem/geoseg-polygonize",  # the MEM driver creates nothing under this name
        "w",
        driver="MEM",
        width=array.shape[1],
        height=array.shape[0],
        count=1,
        dtype=array.dtype,
        transform=transform,
    )
    ds.write(array, 1)
    return ds


def _shapes(
    labels: npt.NDArray[np.int32], col_off: int, row_off: int
) -> list[tuple[dict[str, Any], float]]:
    """``rasterio.features.shapes`` of the labelled pixels, shifted by ``_SHIFT`` pixels.

    The coordinates are scene pixel corners plus ``_SHIFT``. Given NumPy arrays, ``shapes``
    wraps them in datasets that have no geotransform, and rasterio raises and silences its
    NotGeoreferencedWarning inside ``warnings.catch_warnings``, which is not thread-safe: a
    thread leaving its own ``catch_warnings`` can restore filters under which the warning
    escapes (an error where warnings are errors). So the labels and the mask go in MEM
    datasets created with a geotransform, and no warning is raised at all. That transform is
    never the identity (which rasterio warns about too): the block offset plus one pixel.
    """
    tf = Affine.translation(col_off + _SHIFT, row_off + _SHIFT)
    with _mem(labels, tf) as ds, _mem((labels > 0).view(np.uint8), tf) as ms:
        return list(
            rasterio.features.shapes(
                rasterio.band(ds, 1), mask=rasterio.band(ms, 1), connectivity=4
            )
        )


def label_block(
    values: npt.NDArray[np.integer], classes: tuple[int, ...]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """4-connected components of each class; ids unique in the block.

    Returns:
        The label image (0 = none) and the class of each id (index 0 unused).
    """
    labels = np.zeros(values.shape, dtype=np.int32)
    cls_of = [np.int64(-1)]
    offset = 0
    for k in classes:
        mask = values == k
        if not mask.any():
            continue
        lab, n = ndimage.label(mask)
        labels[mask] = lab[mask] + offset
        cls_of.extend([np.int64(k)] * n)
        offset += n
    return labels, np.asarray(cls_of, dtype=np.int64)


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
    if n:
        counts = np.bincount(labels.ravel(), minlength=n + 1)
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
        # Node corners, assigned to the pieces around them (sorted, unique per piece).
        if nodes_needed:
            nm = node_mask(values[halo - 1 : halo + h + 1, halo - 1 : halo + w + 1])
        else:
            nm = np.zeros((h + 1, w + 1), dtype=bool)
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
        lab_all = np.concatenate(lab_parts) if lab_parts else np.zeros(0, np.int32)
        key_all = np.concatenate(key_parts) if key_parts else np.zeros(0, np.int64)
        pairs = np.unique(np.stack([lab_all.astype(np.int64), key_all], axis=1), axis=0)
        lab_all, key_all = pairs[:, 0], pairs[:, 1]
        bounds = np.searchsorted(lab_all, np.arange(n + 2))
        shapes = _shapes(labels, c0, r0)
        geoms = _polygons_from_shapes(shapes, shift=_SHIFT)
        for (_, value), geom in zip(shapes, geoms, strict=False):
            i = int(value)
            if i in pieces:  # cannot happen for 4-connected labels; be safe
                geom = shapely.union_all([pieces[i].geom, geom])
            nodes = key_all[bounds[i] : bounds[i + 1]] if nodes_needed else _NO_NODES
            pieces[i] = Piece(
                cls=int(cls_of[i]),
                geom=geom,
                count=int(counts[i]),
                prob_sum=float(sums[i]),
                nodes=nodes,
                row=row,
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

    Feed it one complete block row at a time with :meth:`add_row`; it returns the groups
    that became final. Memory holds only groups that touch the bottom border of the last
    row added.
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

    def add_row(self, blocks: list[BlockResult]) -> list[Piece]:
        """Add one block row (all its blocks, any order); return the groups now final."""
        blocks = sorted(blocks, key=lambda b: b.col)
        row = blocks[0].row
        last_row = row == self.n_rows - 1
        finals: list[Piece] = []
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
                    finals.append(piece)
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
            finals.append(self._merge([self._pending.pop(i) for i in members]))
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

    @staticmethod
    def _merge(members: list[Piece]) -> Piece:
        if len(members) == 1:
            return members[0]
        # Pixel outlines: axis-parallel edges on integer coordinates, so the floating-point
        # overlay is exact (the same polygon as a fixed-precision one, 2.5x faster).
        geom = shapely.union_all([m.geom for m in members])
        parts = polygon_parts(geom)
        if len(parts) != 1:  # pieces joined by shared edges form one polygon; be safe
            logger.warning("a merged group gave %d polygons instead of 1", len(parts))
        return Piece(
            cls=members[0].cls,
            geom=parts[0] if len(parts) == 1 else MultiPolygon(parts),
            count=sum(m.count for m in members),
            prob_sum=sum(m.prob_sum for m in members),
            nodes=np.unique(np.concatenate([m.nodes for m in members])),
            row=min(m.row for m in members),
            ids=tuple(i for m in members for i in m.ids),
        )
