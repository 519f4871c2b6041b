"""Building instances: one class-map polygon of touching buildings split into one polygon each.

A class map marks building pixels, not buildings: a terrace of row houses is one connected
region. Two signals separate them, alone or together:

- **height steps** (:func:`height_edges`): where the roof surface (a DSM or nDSM on the class
  raster's grid) jumps by at least ``height_step`` between neighbouring pixels, two roofs meet;
- **a learned contact boundary**: a probability raster (``geoseg predict`` writes
  ``{scene}_contact.tif`` when the model has a contact output) that is high on the band
  where two buildings touch.

Pixels away from both are *markers*; each connected marker region at least ``min_part_px``
large seeds one building, and a watershed (on the height gradient or the contact
probability) gives every building pixel to one seed (:func:`split_labels`). A region with
one seed or none stays whole, so without a signal nothing changes.

:func:`split_piece` does this for one final piece (:class:`~geoseg.vectorize._polygonize.Piece`):
it reads the piece's window of the height and contact rasters, splits, and polygonizes the
labels. The parts tile the piece exactly (pixel edges), their shared walls are common edges,
and the pixel corners where parts meet become arc nodes, so that simplification keeps the
walls shared (see :mod:`geoseg.vectorize._clean`).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from shapely.geometry import Polygon

from geoseg.vectorize._clean import node_mask
from geoseg.vectorize._polygonize import Piece

if TYPE_CHECKING:
    from geoseg.options import VectorizeOptions

logger = logging.getLogger("geoseg.vectorize")

__all__ = [
    "DEFAULT_CONTACT_THRESHOLD",
    "DEFAULT_HEIGHT_STEP",
    "MIN_PART_M2",
    "SplitSource",
    "check_split_source",
    "height_edges",
    "split_labels",
    "split_piece",
    "split_pieces",
]

DEFAULT_HEIGHT_STEP = 1.5
"""Height step (m) between neighbouring roofs that separates two buildings: half a storey.

Gabled roofs are smooth (a 40 degree roof rises 0.04 m per 5 cm pixel, 0.8 m per metre
pixel), so a ridge is not a step; walls between houses of different storeys are 2.5 m and
more."""

DEFAULT_CONTACT_THRESHOLD = 0.5
"""Contact probability above which a pixel is on a contact band (not a marker)."""

MIN_PART_M2 = 10.0
"""The smallest part (m²) a split may make: a shed or a small annex, not a roof vent."""


@dataclass(frozen=True)
class SplitSource:
    """Where a worker finds the signals to split buildings, and how to use them.

    Attributes:
        cls: The building class: pieces of it are split.
        height: A DSM or nDSM on the class raster's grid, or None.
        contact: A contact probability raster (uint8, 0..255) on the grid, or None.
        height_step: Height jump (raster units, m) that separates two roofs.
        contact_threshold: Contact probability (0..1) above which pixels are on a border.
        min_part_px: The smallest part (pixels) a split may make.
    """

    cls: int
    height: str | None
    contact: str | None
    height_step: float = DEFAULT_HEIGHT_STEP
    contact_threshold: float = DEFAULT_CONTACT_THRESHOLD
    min_part_px: float = 1.0


def height_edges(
    height: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_], step: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32]]:
    """Pixels next to a height step, and the local height range (the watershed's relief).

    The range is the maximum minus the minimum of the valid building heights in each pixel's
    3 x 3 neighbourhood: a step of ``step`` shows even when the surface model blurs it over
    two pixels, while a sloped roof's range stays small.

    Args:
        height: Surface heights of the window (NaN where unknown).
        mask: The building's pixels.
        step: The height jump that separates two roofs.

    Returns:
        ``(edges, relief)``: edge pixels (in ``mask``) and the float32 relief (0 outside
        ``mask``). Unknown heights are neither: a gap in the DSM never splits a building.
    """
    from scipy import ndimage

    valid = mask & np.isfinite(height)
    hi = np.where(valid, height, -np.inf).astype(np.float32)
    lo = np.where(valid, height, np.inf).astype(np.float32)
    relief = ndimage.maximum_filter(hi, size=3) - ndimage.minimum_filter(lo, size=3)
    relief = np.where(valid, relief, 0.0).astype(np.float32)
    edges = valid & (relief >= step)
    return edges, relief


def split_labels(
    mask: npt.NDArray[np.bool_],
    *,
    height: npt.NDArray[np.floating] | None = None,
    contact: npt.NDArray[np.uint8] | None = None,
    height_step: float = DEFAULT_HEIGHT_STEP,
    contact_threshold: float = DEFAULT_CONTACT_THRESHOLD,
    min_part_px: float = 1.0,
) -> tuple[npt.NDArray[np.int32], int]:
    """Split a region of building pixels into instances.

    Args:
        mask: The region's pixels.
        height: Surface heights on the same window, or None.
        contact: Contact probabilities (0..255) on the same window, or None.
        height_step: See :func:`height_edges`.
        contact_threshold: Contact probability (0..1) above which a pixel is a border.
        min_part_px: Seeds smaller than this many pixels are not buildings of their own.

    Returns:
        ``(labels, n)``: int32 labels 1..n on ``mask`` (0 elsewhere) and the number of parts;
        ``n == 1`` (the region whole) when fewer than two seeds are found.
    """
    from scipy import ndimage
    from skimage.segmentation import watershed

    whole = mask.astype(np.int32)
    if height is None and contact is None:
        return whole, 1
    border = np.zeros(mask.shape, dtype=bool)
    relief = np.zeros(mask.shape, dtype=np.float32)
    if height is not None:
        edges, h_relief = height_edges(height, mask, height_step)
        border |= edges
        relief += h_relief / np.float32(max(height_step, 1e-6))
    if contact is not None:
        cut = np.uint8(min(255, max(0, math.ceil(contact_threshold * 255))))
        border |= mask & (contact >= cut)
        relief += contact.astype(np.float32) / np.float32(max(float(cut), 1.0))
    seeds = mask & ~ndimage.binary_dilation(border, structure=np.ones((3, 3), bool))
    markers, n = ndimage.label(seeds)
    if n < 2:
        return whole, 1
    sizes = np.bincount(markers.ravel(), minlength=n + 1)
    # A seed must be big enough to be a building, counted with the border it will flood.
    big = sizes >= max(1.0, 0.5 * min_part_px)
    big[0] = False
    if int(big.sum()) < 2:
        return whole, 1
    remap = np.zeros(n + 1, dtype=np.int32)
    remap[big] = np.arange(1, int(big.sum()) + 1, dtype=np.int32)
    markers = remap[markers]
    labels = watershed(relief, markers=markers, mask=mask, connectivity=1).astype(np.int32)
    return _merge_small(labels, int(big.sum()), min_part_px)


def _merge_small(
    labels: npt.NDArray[np.int32], n: int, min_part_px: float
) -> tuple[npt.NDArray[np.int32], int]:
    """Give parts under ``min_part_px`` to the neighbour they share most border with."""
    from scipy import ndimage

    while n > 1:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = np.iinfo(np.int64).max
        small = int(np.argmin(sizes))
        if sizes[small] >= min_part_px:
            break
        ring = ndimage.binary_dilation(labels == small) & (labels > 0) & (labels != small)
        touching = np.bincount(labels[ring], minlength=n + 1)
        touching[small] = 0
        target = int(np.argmax(touching)) if touching.any() else 0
        if target == 0:  # an isolated part (cannot happen in one region): keep it
            break
        labels[labels == small] = target
        labels[labels > small] -= 1
        n -= 1
    return labels, n


@functools.lru_cache(maxsize=4)
def _dataset(path: str) -> Any:
    """An open raster, kept per worker process (pieces of one raster come in many tasks)."""
    import rasterio

    return rasterio.open(path)


def _read(path: str, window: Any, *, as_float: bool) -> npt.NDArray[Any]:
    ds = _dataset(path)
    data = ds.read(1, window=window, boundless=True, masked=True)
    if as_float:
        return np.ma.filled(data.astype(np.float32), np.nan)
    return np.ma.filled(data, 0).astype(np.uint8, copy=False)


def split_piece(piece: Piece, source: SplitSource, *, stride: int) -> list[Piece]:
    """Split one final building piece into instances (the piece itself when it stays whole).

    Args:
        piece: A final piece in pixel coordinates.
        source: The rasters and thresholds.
        stride: Node key stride (the raster's width + 1), see :class:`Piece`.

    Returns:
        The parts as pieces: their polygons tile ``piece.geom`` exactly, with the parent's
        nodes plus the pixel corners where parts meet; counts are pixel counts and the
        probability sum is shared in proportion to them.
    """
    from rasterio.features import rasterize
    from rasterio.windows import Window

    from geoseg.vectorize._outlines import trace_outlines

    x0, y0, x1, y1 = (math.floor(v) for v in piece.geom.bounds)
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0 or piece.count < 2 * source.min_part_px:
        return [piece]
    shift = Affine.translation(x0, y0)
    mask = rasterize([(piece.geom, 1)], out_shape=(h, w), transform=shift, dtype="uint8") > 0
    window = Window(x0, y0, w, h)
    height = _read(source.height, window, as_float=True) if source.height else None
    contact = _read(source.contact, window, as_float=False) if source.contact else None
    labels, n = split_labels(
        mask,
        height=height,
        contact=contact,
        height_step=source.height_step,
        contact_threshold=source.contact_threshold,
        min_part_px=source.min_part_px,
    )
    if n < 2:
        return [piece]
    # each label is one 4-connected region (seeded watershed): one traced polygon each
    present, traced = trace_outlines(labels, col_off=x0, row_off=y0)
    polys: list[Polygon | None] = [None] * (n + 1)
    for k, poly in zip(present.tolist(), traced.tolist(), strict=True):
        polys[k] = poly
    padded = np.full((h + 2, w + 2), -1, dtype=np.int32)
    padded[1:-1, 1:-1] = labels
    rows, cols = np.nonzero(node_mask(padded))
    new_nodes = (rows + y0).astype(np.int64) * stride + (cols + x0).astype(np.int64)
    nodes = np.union1d(piece.nodes, new_nodes)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    out: list[Piece] = []
    for k in range(1, n + 1):
        geom = polys[k]
        assert geom is not None  # every label 1..n is present
        share = float(counts[k]) / float(max(piece.count, 1))
        out.append(
            Piece(
                cls=piece.cls,
                geom=geom,
                count=int(counts[k]),
                prob_sum=piece.prob_sum * share,
                nodes=nodes,
                row=piece.row,
                ids=piece.ids,
            )
        )
    return out


def split_pieces(pieces: list[Piece], source: SplitSource, *, stride: int) -> list[Piece]:
    """Split the pieces of the building class; the others pass through.

    Returns:
        The pieces in order, each building replaced by its parts.
    """
    out: list[Piece] = []
    for piece in pieces:
        split = piece.cls == source.cls
        out.extend(split_piece(piece, source, stride=stride) if split else [piece])
    return out


def check_split_source(
    options: VectorizeOptions,
    cls: int | None,
    grid: tuple[int, int, Affine],
    pixel_m: float,
) -> SplitSource | None:
    """The split source of ``options`` once its rasters fit the class raster's grid.

    Args:
        options: ``dsm`` (a DSM or nDSM, heights in metres), ``contact`` (one uint8 band,
            0..255), ``height_step`` and ``contact_threshold``.
        cls: The building class, or None when no building layer is requested (nothing to
            split: a warning when rasters were given).
        grid: The class raster's (width, height, transform).
        pixel_m: Its pixel size in metres (sets the smallest part, :data:`MIN_PART_M2`).

    Returns:
        None without a raster to split with.

    Raises:
        GridMismatchError: A raster is not on the class raster's grid.
        InputError: A raster cannot be opened or has the wrong band layout.
    """
    from geoseg.errors import InputError
    from geoseg.raster.source import check_on_grid, open_raster

    dsm, contact = options.dsm, options.contact
    if dsm is None and contact is None:
        return None
    if cls is None:
        logger.warning("dsm/contact: no building layer requested; nothing to split")
        return None
    width, height, transform = grid
    for path, what in ((dsm, "DSM"), (contact, "contact")):
        if path is None:
            continue
        with open_raster(path, what) as src:
            check_on_grid(
                src,
                path,
                what=what,
                width=width,
                height=height,
                transform=transform,
                hint="resample it onto the class raster's grid first (e.g. gdalwarp -te ... "
                "-tr ...) or pass the scene's own file",
            )
            if what == "contact" and (src.count != 1 or src.dtypes[0] != "uint8"):
                raise InputError(
                    f"{path}: a contact raster has one uint8 band (0..255), got {src.count} "
                    f"band(s) of {src.dtypes[0]}; pass the {{scene}}_contact.tif of geoseg predict"
                )
    return SplitSource(
        cls=cls,
        height=str(dsm) if dsm is not None else None,
        contact=str(contact) if contact is not None else None,
        height_step=options.height_step,
        contact_threshold=options.contact_threshold,
        min_part_px=MIN_PART_M2 / (pixel_m * pixel_m),
    )
