"""Class rasters to clean, GIS-ready polygons (buildings, roads) and road centre-lines.

The raster is read block by block (worker processes; each opens the file itself) and
polygonized in pixel coordinates; polygons that cross internal block borders are joined
exactly (:mod:`geoseg.vectorize._polygonize`), so the output does not depend on the block
size. Block rows are consumed in order and only polygons touching the current border stay
in memory; final polygons are cleaned (:mod:`._clean`: hole filling, arc-wise
topology-preserving simplification), optionally regularized (:mod:`._regularize`),
transformed to map coordinates and appended to the output in batches (:mod:`._write`).

Outputs:

* ``gpkg``: one GeoPackage with layers ``buildings``, ``roads`` (one per requested class)
  and ``road_centerlines`` (with ``centerlines``), and a default QGIS style per layer in
  its ``layer_styles`` table.
* ``parquet``: a directory with one GeoParquet file per layer, ``<layer>.parquet``.

Example:
    >>> from geoseg.vectorize import VectorizeOptions, vectorize_raster
    >>> vectorize_raster("classes.tif", "out.gpkg",
    ...                  options=VectorizeOptions(min_area=2.0))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
import logging
import math
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from shapely.geometry import LineString, Polygon

from geoseg._io import atomic_path, check_output
from geoseg.errors import ConfigError, GridMismatchError, InputError, SchemaError
from geoseg.grid import crs_unit_metres
from geoseg.schema import IGNORE, ClassSchema, load_schema
from geoseg.vectorize._clean import canonical_polygon, polygon_parts
from geoseg.vectorize._polygonize import (
    BlockResult,
    BorderMerger,
    Piece,
    block_rows,
    internal_edge_ids,
    polygonize_block,
)

__all__ = ["VectorizeOptions", "VectorizeReport", "vectorize_raster"]

logger = logging.getLogger(__name__)

SCHEMA_TAG = "GEOSEG_SCHEMA"
"""Raster tag holding ``ClassSchema.to_dict()`` as JSON (written by ``geoseg predict``)."""

_T = TypeVar("_T")

LAYER_NAMES = {"building": "buildings", "road": "roads"}
CENTERLINE_LAYER = "road_centerlines"


@dataclass(frozen=True)
class VectorizeOptions:
    """How to vectorize a class raster.

    Attributes:
        classes: What to vectorize: ``building``, ``road`` (the schema's road class) or any
            class name of the schema. Layers are ``buildings``, ``roads`` and the class
            name otherwise.
        probabilities: Optional uint8 probability raster on the same grid (band ``k + 1``
            = class ``k``, 0..255); adds ``mean_prob`` (0..1).
        min_area: Drop polygons smaller than this, m².
        hole_area: Fill holes smaller than this, m².
        simplify: Douglas-Peucker tolerance, m, applied per shared border arc so that
            neighbouring polygons keep sharing their borders (0: none).
        regularize: Rectilinear building outlines (``building`` layer only).
        centerlines: Also write road centre-lines (layer ``road_centerlines``).
        spur_length: Centre-line dead ends shorter than this (m) are pruned; default
            40 pixels.
        format: ``gpkg`` (one GeoPackage) or ``parquet`` (a directory, one GeoParquet
            file per layer).
        block_size: Block edge, pixels.
        workers: Worker processes reading, polygonizing and cleaning blocks (1: all in
            this process). Scripts that use more than one must guard their entry point
            with ``if __name__ == "__main__":`` (worker processes are spawned).
        schema: Class schema used when the raster has no ``GEOSEG_SCHEMA`` tag (built-in
            name or YAML/JSON file).
        overwrite: Replace an existing output.
    """

    classes: tuple[str, ...] = ("building", "road")
    probabilities: Path | None = None
    min_area: float = 0.0
    hole_area: float = 0.0
    simplify: float = 0.0
    regularize: bool = False
    centerlines: bool = False
    spur_length: float | None = None
    format: Literal["gpkg", "parquet"] = "gpkg"
    block_size: int = 2048
    workers: int = 1
    schema: str = "potsdam"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("vectorize: no classes requested; pass e.g. building,road")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"vectorize: classes {self.classes!r} repeat a name")
        for name, v in (
            ("min_area", self.min_area),
            ("hole_area", self.hole_area),
            ("simplify", self.simplify),
        ):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"vectorize: {name}={v!r} must be a number >= 0")
        if self.spur_length is not None and not self.spur_length >= 0:
            raise ConfigError(f"vectorize: spur_length={self.spur_length!r} must be >= 0")
        if self.block_size < 4:
            raise ConfigError(f"vectorize: block_size={self.block_size} must be >= 4 pixels")
        if self.workers < 1:
            raise ConfigError(f"vectorize: workers={self.workers} must be >= 1")
        if self.format not in ("gpkg", "parquet"):
            raise ConfigError(f"vectorize: format {self.format!r} must be 'gpkg' or 'parquet'")


@dataclass(frozen=True)
class VectorizeReport:
    """What :func:`vectorize_raster` wrote.

    Attributes:
        output: The GeoPackage, or the GeoParquet directory.
        format: ``gpkg`` or ``parquet``.
        layers: Feature count per layer.
        schema: Name of the class schema used.
        crs: The output CRS (WKT), or None.
        blocks: Number of blocks processed.
        pixels: Raster pixels.
        seconds: Wall time.
        max_pending: Most pieces held back at a border at once (memory indicator).
    """

    output: Path
    format: str
    layers: dict[str, int]
    schema: str
    crs: str | None
    blocks: int
    pixels: int
    seconds: float
    max_pending: int = 0
    files: tuple[Path, ...] = field(default=())


@dataclass(frozen=True)
class _Target:
    layer: str
    cls: int
    name: str
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class _Ctx:
    """Everything the per-feature finishing step needs (immutable, shared by threads)."""

    transform: Affine
    stride: int
    geographic: bool
    unit: float  # CRS linear unit in metres (projected)
    tol_px: float
    hole_px: float
    min_area: float
    has_prob: bool
    targets: dict[int, _Target]


def _schema_of(src: rasterio.io.DatasetReader, fallback: str) -> ClassSchema:
    tag = src.tags().get(SCHEMA_TAG)
    if tag is None:
        return load_schema(fallback)
    try:
        data = json.loads(tag)
    except ValueError:
        raise SchemaError(
            f"{src.name}: tag {SCHEMA_TAG} is not valid JSON; rewrite it or remove it and "
            "pass --schema"
        ) from None
    return ClassSchema.from_dict(data, source=f"{src.name}:{SCHEMA_TAG}")


def _targets(schema: ClassSchema, classes: tuple[str, ...]) -> list[_Target]:
    out: list[_Target] = []
    for c in classes:
        name = schema.road_class if c == "road" else c
        if name not in schema.classes:
            raise ConfigError(
                f"vectorize: class {c!r} is not in schema {schema.name!r}; use building, "
                f"road or one of: {', '.join(schema.classes)}"
            )
        k = schema.index(name)
        out.append(_Target(LAYER_NAMES.get(c, c), k, name, schema.colours[k]))
    seen: dict[int, str] = {}
    for t in out:
        if t.cls in seen:
            raise ConfigError(
                f"vectorize: {seen[t.cls]!r} and {t.layer!r} are the same class "
                f"{t.name!r}; request it once"
            )
        seen[t.cls] = t.layer
    return out


def _metres(
    crs: CRS | None, transform: Affine, shape: tuple[int, int]
) -> tuple[bool, float, float]:
    """(geographic, CRS unit in metres, pixel size in metres)."""
    px = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
    if crs is None:
        logger.warning("raster has no CRS: areas and lengths are in pixel-grid units")
        return False, 1.0, px
    if crs.is_geographic:
        cy = transform.d * shape[1] / 2 + transform.e * shape[0] / 2 + transform.f
        m_per_deg = 111_320.0 * math.sqrt(max(math.cos(math.radians(cy)), 1e-6))
        return True, 1.0, px * m_per_deg
    unit = crs_unit_metres(crs)
    return False, unit, px * unit


@functools.cache
def _wgs84() -> Any:
    from pyproj import Geod

    return Geod(ellps="WGS84")


def _measure(geom: shapely.Geometry, ctx: _Ctx) -> tuple[float, float]:
    """(area m², perimeter or length m) of a map-coordinate geometry."""
    if ctx.geographic:
        geod = _wgs84()
        if isinstance(geom, LineString):
            return 0.0, float(geod.geometry_length(geom))
        area, perim = geod.geometry_area_perimeter(geom)
        return abs(float(area)), float(perim)
    return float(geom.area) * ctx.unit**2, float(geom.length) * ctx.unit


def _to_map(geom: shapely.Geometry, t: Affine) -> shapely.Geometry:
    def f(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f], axis=1)

    return shapely.transform(geom, f)


Batch = tuple[str, np.ndarray, dict[str, np.ndarray]]
"""Features of one layer: (layer, WKB of map geometries, attribute arrays)."""


def _features(pieces: list[Piece], parts: list[list[Polygon]], ctx: _Ctx) -> list[Batch]:
    """Pixel-coordinate parts of each piece -> map geometries with attributes, per layer."""
    owner = np.repeat(np.arange(len(pieces)), [len(p) for p in parts])
    flat = [g for ps in parts for g in ps]
    if not flat:
        return []
    px_geoms = shapely.normalize(np.asarray(flat, dtype=object))
    geoms = _to_map(px_geoms, ctx.transform)
    if ctx.geographic:
        measured = np.array([_measure(g, ctx) for g in geoms]).reshape(-1, 2)
        area, perim = measured[:, 0], measured[:, 1]
    else:
        # Area from pixel coordinates: exact (no loss to large map offsets).
        det = abs(ctx.transform.a * ctx.transform.e - ctx.transform.b * ctx.transform.d)
        area = shapely.area(px_geoms) * det * ctx.unit**2
        perim = shapely.length(geoms) * ctx.unit
    keep = (area > 0) & (area >= ctx.min_area)
    cls = np.array([p.cls for p in pieces], dtype=np.int64)[owner]
    mean_prob = (
        np.array([p.prob_sum / (255.0 * p.count) if p.count else np.nan for p in pieces])[owner]
        if ctx.has_prob
        else None
    )
    out: list[Batch] = []
    for k, target in ctx.targets.items():
        sel = keep & (cls == k)
        if not sel.any():
            continue
        values: dict[str, np.ndarray] = {
            "class": np.full(int(sel.sum()), target.name, dtype=object),
            "area_m2": area[sel],
            "perimeter_m": perim[sel],
        }
        if mean_prob is not None:
            values["mean_prob"] = mean_prob[sel]
        out.append((target.layer, shapely.to_wkb(geoms[sel], output_dimension=2), values))
    return out


def _clean_piece(piece: Piece, ctx: _Ctx) -> list[Polygon]:
    parts: list[Polygon] = []
    for poly in polygon_parts(piece.geom):
        parts.extend(
            canonical_polygon(
                poly, piece.nodes, stride=ctx.stride, tolerance=ctx.tol_px, hole_area=ctx.hole_px
            )
        )
    return parts


def _finish(pieces: list[Piece], ctx: _Ctx) -> list[Batch]:
    if ctx.tol_px > 0:
        return _features(pieces, [_clean_piece(p, ctx) for p in pieces], ctx)
    # No simplification: only drop collinear vertices (vectorized); the same canonical
    # vertex list as the arc machinery with tolerance 0, for a fraction of the cost.
    geoms = [_fill_holes(p.geom, ctx.hole_px) if ctx.hole_px > 0 else p.geom for p in pieces]
    arr = shapely.simplify(np.asarray(geoms, dtype=object), 0.0, preserve_topology=False)
    valid = shapely.is_valid(arr)
    parts = [
        polygon_parts(g if ok else shapely.make_valid(g)) for g, ok in zip(arr, valid, strict=False)
    ]
    return _features(pieces, parts, ctx)


def _fill_holes(poly: shapely.Geometry, hole_px: float) -> shapely.Geometry:
    if hole_px <= 0:
        return poly
    if not isinstance(poly, Polygon):
        return shapely.multipolygons([_fill_holes(p, hole_px) for p in polygon_parts(poly)])
    if not poly.interiors:
        return poly
    return Polygon(poly.exterior, [r for r in poly.interiors if Polygon(r).area >= hole_px])


def _regularize_batch(
    jobs: list[tuple[Piece, list[Polygon]]], ctx: _Ctx, margin: float
) -> list[Batch]:
    from geoseg.vectorize._regularize import clip_to_territory, regularize_polygon

    all_parts: list[list[Polygon]] = []
    for piece, neighbours in jobs:
        parts: list[Polygon] = []
        for poly in polygon_parts(piece.geom):
            filled = _fill_holes(poly, ctx.hole_px)
            reg = regularize_polygon(filled)
            if reg is None:  # too small or too irregular: keep the cleaned outline
                sub = Piece(piece.cls, filled, piece.count, piece.prob_sum, piece.nodes, 0)
                parts.extend(_clean_piece(sub, ctx))
                continue
            parts.extend(clip_to_territory(reg, poly, neighbours, margin))
        all_parts.append(parts)
    return _features([p for p, _ in jobs], all_parts, ctx)


class _Regularizer:
    """Holds final buildings until every building within reach of them is known.

    A building is regularized once the processed rows extend ``2 * margin`` below it;
    its neighbours (for :func:`clip_to_territory`) are the final buildings kept in a
    window plus the pieces still pending at the border.
    """

    def __init__(self, cls: int, margin: float) -> None:
        self.cls = cls
        self.margin = margin
        self.queue: list[Piece] = []
        self.window: list[tuple[frozenset[int], Polygon]] = []

    def add(self, piece: Piece) -> None:
        self.queue.append(piece)
        ids = frozenset(piece.ids) if piece.ids else frozenset({id(piece)})
        for poly in polygon_parts(piece.geom):
            self.window.append((ids, poly))

    def ready(
        self, y_done: float, merger: BorderMerger, *, last: bool
    ) -> list[tuple[Piece, list[Polygon]]]:
        reach = 2 * self.margin
        ready = [p for p in self.queue if last or p.geom.bounds[3] + reach <= y_done]
        if not ready:
            return []
        self.queue = [p for p in self.queue if not (last or p.geom.bounds[3] + reach <= y_done)]
        pending = [
            (frozenset({root}), p.geom) for root, p in merger.pending_pieces() if p.cls == self.cls
        ]
        entries = self.window + [(ids, g) for ids, g in pending if isinstance(g, Polygon)]
        tree = shapely.STRtree([g for _, g in entries])
        jobs: list[tuple[Piece, list[Polygon]]] = []
        for p in ready:
            own = frozenset(p.ids) if p.ids else frozenset({id(p)})
            x0, y0, x1, y1 = p.geom.bounds
            box = shapely.box(x0 - reach, y0 - reach, x1 + reach, y1 + reach)
            hits = tree.query(box)
            nbrs = [entries[i][1] for i in hits if not (entries[i][0] & own)]
            jobs.append((p, nbrs))
        # Forget window entries nobody can reach any more.
        lows = [p.geom.bounds[1] for p in self.queue] + [g.bounds[1] for _, g in pending]
        floor = min([y_done, *lows]) - reach
        self.window = [(ids, g) for ids, g in self.window if g.bounds[3] >= floor]
        return jobs


@dataclass(frozen=True)
class _BlockJob:
    """One block's work, sent to a worker process (paths, not handles)."""

    path: str
    window: Window
    row: int
    col: int
    n_rows: int
    n_cols: int
    classes: tuple[int, ...]
    ignore: tuple[int, ...]
    prob_path: str | None
    halo: int
    ctx: _Ctx
    hold: tuple[int, ...]  # classes whose final pieces go back raw (to regularize)
    road_cls: int | None  # centre-lines of this class, or None


def _block_task(job: _BlockJob) -> BlockResult:
    """Polygonize a block; finish the pieces that cannot merge with another block."""
    res, values = polygonize_block(
        job.path,
        job.window,
        row=job.row,
        col=job.col,
        classes=job.classes,
        ignore=job.ignore,
        prob_path=job.prob_path,
        halo=job.halo,
        nodes_needed=job.ctx.tol_px > 0,
    )
    border = internal_edge_ids(res, job.n_rows, job.n_cols)
    inline = [i for i, p in res.pieces.items() if i not in border and p.cls not in job.hold]
    res.extra["batches"] = _finish([res.pieces.pop(i) for i in inline], job.ctx)
    if job.road_cls is not None:
        from geoseg.vectorize._centerlines import block_segments

        mask = (values == job.road_cls) & ~np.isin(values, job.ignore)
        res.extra["lines"] = block_segments(
            mask, halo=job.halo, row_off=int(job.window.row_off), col_off=int(job.window.col_off)
        )
    return res


class _InlineExecutor(Executor):
    """Runs each task at submit time (workers=1: no process start-up, easy to debug)."""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        fut: Future[_T] = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # Processes, not threads: polygonization holds the GIL. "spawn" is safe with GDAL.
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))


def _open_checked(path: Path) -> rasterio.io.DatasetReader:
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputError(f"{path}: cannot open as a raster ({exc}); check the path") from None


def vectorize_raster(
    path: str | Path,
    out: str | Path,
    *,
    options: VectorizeOptions,
    progress: Callable[[int, int], None] | None = None,
) -> VectorizeReport:
    """Vectorize a class raster into GeoPackage (or GeoParquet) layers.

    Args:
        path: A 1-band uint8 class GeoTIFF (nodata 255), e.g. from ``geoseg predict``.
        out: The output GeoPackage, or a directory with ``format="parquet"``.
        options: What to vectorize and how.
        progress: Called with (blocks done, blocks total) after each block row.

    Returns:
        A report with the feature count per layer.

    Raises:
        InputError: The raster is not a 1-band uint8 raster, or cannot be opened.
        GridMismatchError: The probability raster is not on the same grid.
        SchemaError: The schema tag or ``options.schema`` is unusable.
        ConfigError: A requested class is not in the schema.
        OutputExistsError: ``out`` exists and ``options.overwrite`` is false.
    """
    t0 = time.perf_counter()
    path, out = Path(path), Path(out)
    check_output(out, overwrite=options.overwrite)
    with _open_checked(path) as src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise InputError(
                f"{path}: expected a 1-band uint8 class raster, got {src.count} band(s) of "
                f"{src.dtypes[0]}; pass the class map written by geoseg predict"
            )
        schema = _schema_of(src, options.schema)
        crs, transform = src.crs, src.transform
        height, width = src.height, src.width
        nodata = src.nodata
    targets = _targets(schema, options.classes)
    prob_path = None
    if options.probabilities is not None:
        prob_path = str(options.probabilities)
        with _open_checked(Path(prob_path)) as ps:
            if (ps.height, ps.width) != (height, width) or not ps.transform.almost_equals(
                transform
            ):
                got = f"{ps.width}x{ps.height} {tuple(ps.transform)[:6]}"
                raise GridMismatchError(
                    f"{prob_path}: probability grid {got} differs from the class raster's "
                    f"{width}x{height} {tuple(transform)[:6]}; pass the probabilities written "
                    "with this class map"
                )
            need = max(t.cls for t in targets) + 1
            if ps.count < need or ps.dtypes[0] != "uint8":
                raise InputError(
                    f"{prob_path}: need uint8 probabilities with >= {need} bands (one per "
                    f"class), got {ps.count} band(s) of {ps.dtypes[0]}"
                )
    geographic, unit, px_m = _metres(crs, transform, (height, width))
    ctx = _Ctx(
        transform=transform,
        stride=width + 1,
        geographic=geographic,
        unit=unit,
        tol_px=options.simplify / px_m,
        hole_px=options.hole_area / (px_m * px_m),
        min_area=options.min_area,
        has_prob=prob_path is not None,
        targets={t.cls: t for t in targets},
    )
    ignore = tuple(sorted({IGNORE} | ({int(nodata)} if nodata is not None else set())))
    classes = tuple(t.cls for t in targets)
    road_cls = schema.index(schema.road_class) if options.centerlines else None
    building = next((t for t in targets if t.layer == "buildings"), None)
    margin = 2.0  # pixels: how far a regularized outline may move
    regularizer = (
        _Regularizer(building.cls, margin) if options.regularize and building is not None else None
    )
    if options.regularize and building is None:
        logger.warning("regularize: no building layer requested; nothing to regularize")

    rows = block_rows(height, width, options.block_size)
    n_blocks = sum(len(r) for r in rows)
    c_halo = max(32, min(256, options.block_size // 4)) if options.centerlines else 1
    meta = {
        "geoseg_vectorize": json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
            | {"source": str(path), "schema": schema.to_dict()}
        )
    }

    def job(r: int, c: int) -> _BlockJob:
        return _BlockJob(
            path=str(path),
            window=rows[r][c],
            row=r,
            col=c,
            n_rows=len(rows),
            n_cols=len(rows[0]),
            classes=classes,
            ignore=ignore,
            prob_path=prob_path,
            halo=c_halo,
            ctx=ctx,
            hold=(regularizer.cls,) if regularizer is not None else (),
            road_cls=road_cls,
        )

    merger = BorderMerger(len(rows), len(rows[0]))
    lines: list[LineString] = []
    suffix = ".gpkg" if options.format == "gpkg" else ""
    with atomic_path(out, overwrite=options.overwrite) as tmp:
        if suffix and tmp.suffix.lower() != suffix:
            logger.info("writing a GeoPackage to %s (no .gpkg suffix)", out)
        sink_fields = {"class": "str", "area_m2": "float", "perimeter_m": "float"}
        if prob_path is not None:
            sink_fields["mean_prob"] = "float"
        from geoseg.vectorize._write import FeatureSink

        sink = FeatureSink(tmp, options.format, crs, metadata=meta)
        for t in targets:
            sink.layer(t.layer, "Polygon", sink_fields)
        if options.centerlines:
            sink.layer(CENTERLINE_LAYER, "LineString", {"class": "str", "length_m": "float"})
        finishing: deque[Future[list[Batch]]] = deque()

        def drain(block: bool) -> None:
            while finishing and (block or finishing[0].done()):
                for layer, geoms, values in finishing.popleft().result():
                    sink.add_many(layer, geoms, values)

        with _executor(options.workers) as pool:
            submitted: dict[int, list[Future[BlockResult]]] = {}

            def submit_row(r: int) -> None:
                if r < len(rows) and r not in submitted:
                    submitted[r] = [
                        pool.submit(_block_task, job(r, c)) for c in range(len(rows[r]))
                    ]

            done_blocks = 0
            for r in range(len(rows)):
                submit_row(r)
                submit_row(r + 1)  # read ahead one row while this one is merged
                results = [f.result() for f in submitted.pop(r)]
                for res in results:
                    extra = res.extra.get("lines")
                    if isinstance(extra, list):
                        lines.extend(extra)
                    done_batches = res.extra.get("batches")
                    if isinstance(done_batches, list):
                        for layer, geoms, values in done_batches:
                            sink.add_many(layer, geoms, values)
                finals = merger.add_row(results)
                last = r == len(rows) - 1
                plain: list[Piece] = []
                for p in finals:
                    if regularizer is not None and p.cls == regularizer.cls:
                        regularizer.add(p)
                    else:
                        plain.append(p)
                for chunk in _chunks(plain, 256):
                    finishing.append(pool.submit(_finish, chunk, ctx))
                if regularizer is not None:
                    y_done = float(rows[r][0].row_off + rows[r][0].height)
                    jobs = regularizer.ready(y_done, merger, last=last)
                    for jchunk in _chunks(jobs, 64):
                        finishing.append(pool.submit(_regularize_batch, jchunk, ctx, margin))
                drain(block=False)
                done_blocks += len(results)
                if progress is not None:
                    progress(done_blocks, n_blocks)
            drain(block=True)
        if options.centerlines:
            from geoseg.vectorize._centerlines import build_network

            spur_px = options.spur_length / px_m if options.spur_length is not None else 40.0
            net = build_network(lines, spur_length=spur_px, tolerance=max(ctx.tol_px, 1.0))
            if net:
                geoms = _to_map(np.asarray(net, dtype=object), transform)
                sink.add_many(
                    CENTERLINE_LAYER,
                    geoms,
                    {
                        "class": np.full(len(geoms), schema.road_class, dtype=object),
                        "length_m": np.array([_measure(g, ctx)[1] for g in geoms]),
                    },
                )
        counts = sink.close()
        if options.format == "gpkg":
            from geoseg.vectorize._styles import write_gpkg_styles

            styles: list[tuple[str, Literal["fill", "line"], tuple[int, int, int], str]] = [
                (t.layer, "fill", t.colour, f"geoseg {t.name}") for t in targets
            ]
            if options.centerlines:
                rc = schema.colours[schema.index(schema.road_class)]
                line_rgb = (128, 128, 128) if rc == (255, 255, 255) else rc
                styles.append((CENTERLINE_LAYER, "line", line_rgb, "geoseg road centre-lines"))
            write_gpkg_styles(tmp, styles)
    files = tuple(sorted(out.glob("*.parquet"))) if options.format == "parquet" else (out,)
    report = VectorizeReport(
        output=out,
        format=options.format,
        layers=counts,
        schema=schema.name,
        crs=crs.to_wkt() if crs is not None else None,
        blocks=n_blocks,
        pixels=height * width,
        seconds=time.perf_counter() - t0,
        max_pending=merger.max_pending,
        files=files,
    )
    logger.info(
        "vectorized %s -> %s: %s in %.1f s",
        path,
        out,
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        report.seconds,
    )
    return report


def _chunks(items: list[_T], n: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
