""":func:`vectorize_raster`: one class raster to GeoPackage (or GeoParquet) layers.

The steps: read the raster's header and class schema
(:func:`geoseg.raster.tags.schema_from_tags`), check the optional probability raster, resolve
one :class:`~geoseg.vectorize._features.FeatureContext` (pixel size, tolerances in pixels),
then polygonize the blocks row by row in worker processes
(:func:`geoseg.vectorize._polygonize.polygonize_block`; a block finishes at once the pieces
no other block can join), find the groups of pieces that cross block borders
(:class:`~geoseg.vectorize._polygonize.BorderMerger`, ids only) and merge and finish each
group in a worker (:func:`~geoseg.vectorize._features.finish_groups`), the features going to
the output as they come (:class:`~geoseg.vectorize._write.FeatureSink`). Road centre-lines
and the default QGIS styles are written last.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import LineString

from geoseg._io import atomic_path, check_memory, check_output
from geoseg.errors import ConfigError, InputError
from geoseg.grid import block_rows, crs_unit_metres
from geoseg.raster.source import check_on_grid, open_raster
from geoseg.raster.tags import model_gsd_from_tags, schema_from_tags
from geoseg.schema import IGNORE, ClassSchema
from geoseg.vectorize._features import (
    Batch,
    FeatureContext,
    LayerTarget,
    Regularizer,
    finish,
    finish_groups,
    finish_inner,
    measure,
    regularize_batch,
    to_map,
)
from geoseg.vectorize._instances import check_split_source
from geoseg.vectorize._options import VectorizeOptions, VectorizeReport
from geoseg.vectorize._polygonize import (
    BlockResult,
    BorderMerger,
    Piece,
    internal_edge_ids,
    merge_pieces,
    polygonize_block,
)

if TYPE_CHECKING:
    from geoseg.vectorize._write import FeatureSink

__all__ = ["vectorize_raster"]

# The package's name, not this module's: log lines read "geoseg.vectorize: ..." as they did
# before the package was split into modules.
logger = logging.getLogger("geoseg.vectorize")

_T = TypeVar("_T")

LAYER_NAMES = {"building": "buildings", "road": "roads"}
CENTERLINE_LAYER = "road_centerlines"
MARGIN_PX = 2.0
"""How far (pixels) a regularized building outline may move."""


@dataclass(frozen=True)
class _Source:
    """What the class raster's header says (read once, then closed)."""

    schema: ClassSchema
    crs: CRS | None
    transform: Affine
    height: int
    width: int
    nodata: float | None
    georeferenced: bool  # has a geotransform (rasterio warns when it opens one without)
    model_gsd: float | None = None  # the detail of a prediction (its GEOSEG_MODEL_GSD tag)


def _read_source(path: Path, fallback_schema: str) -> _Source:
    # Checked up front, in the parent; warnings about a missing CRS in geoseg's words.
    with open_raster(path, "class") as src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise InputError(
                f"{path}: expected a 1-band uint8 class raster, got {src.count} band(s) of "
                f"{src.dtypes[0]}; pass the class map written by geoseg predict"
            )
        georeferenced = not src.transform.is_identity
        if src.crs is None:
            logger.warning(
                "%s: the raster has no CRS; polygons are written in %s without a CRS (areas "
                "and lengths in those units); assign one with gdal_edit.py -a_srs EPSG:xxxx%s %s",
                path,
                "its map coordinates" if georeferenced else "pixel coordinates",
                "" if georeferenced else " -a_ullr ULX ULY LRX LRY",
                path,
            )
        return _Source(
            schema=schema_from_tags(src, fallback_schema, path=path),
            crs=src.crs,
            transform=src.transform,
            height=src.height,
            width=src.width,
            nodata=src.nodata,
            georeferenced=georeferenced,
            model_gsd=model_gsd_from_tags(src),
        )


def _targets(schema: ClassSchema, classes: tuple[str, ...]) -> list[LayerTarget]:
    out: list[LayerTarget] = []
    for c in classes:
        name = schema.road_class if c == "road" else c
        if name not in schema.classes:
            raise ConfigError(
                f"vectorize: class {c!r} is not in schema {schema.name!r}; use building, "
                f"road or one of: {', '.join(schema.classes)}"
            )
        k = schema.index(name)
        out.append(LayerTarget(LAYER_NAMES.get(c, c), k, name, schema.colours[k]))
    seen: dict[int, str] = {}
    for t in out:
        if t.cls in seen:
            raise ConfigError(
                f"vectorize: {seen[t.cls]!r} and {t.layer!r} are the same class "
                f"{t.name!r}; request it once"
            )
        seen[t.cls] = t.layer
    return out


def _check_probabilities(
    probabilities: Path | None, source: _Source, targets: list[LayerTarget]
) -> str | None:
    """The probability raster's path once it fits the class raster, or None."""
    if probabilities is None:
        return None
    prob_path = str(probabilities)
    height, width, transform = source.height, source.width, source.transform
    with open_raster(Path(prob_path), "probability") as ps:
        check_on_grid(
            ps,
            prob_path,
            what="probability",
            width=width,
            height=height,
            transform=transform,
            hint="pass the probabilities written with this class map",
        )
        need = max(t.cls for t in targets) + 1
        if ps.count < need or ps.dtypes[0] != "uint8":
            raise InputError(
                f"{prob_path}: need uint8 probabilities with >= {need} bands (one per "
                f"class), got {ps.count} band(s) of {ps.dtypes[0]}"
            )
    return prob_path


def _metres(
    crs: CRS | None, transform: Affine, shape: tuple[int, int]
) -> tuple[bool, float, float]:
    """(geographic, CRS unit in metres, pixel size in metres)."""
    px = math.sqrt(abs(transform.a * transform.e - transform.b * transform.d))
    if crs is None:  # said once, by _read_source
        return False, 1.0, px
    if crs.is_geographic:
        cy = transform.d * shape[1] / 2 + transform.e * shape[0] / 2 + transform.f
        m_per_deg = 111_320.0 * math.sqrt(max(math.cos(math.radians(cy)), 1e-6))
        return True, 1.0, px * m_per_deg
    unit = crs_unit_metres(crs)
    return False, unit, px * unit


def _context(
    source: _Source, targets: list[LayerTarget], options: VectorizeOptions, *, has_prob: bool
) -> tuple[FeatureContext, float]:
    """The finishing context (options in pixel units) and the pixel size in metres."""
    geographic, unit, px_m = _metres(source.crs, source.transform, (source.height, source.width))
    ctx = FeatureContext(
        transform=source.transform,
        stride=source.width + 1,
        geographic=geographic,
        unit=unit,
        tol_px=options.simplify / px_m,
        hole_px=options.hole_area / (px_m * px_m),
        min_area={
            t.cls: max(
                options.min_area,
                options.min_building_area if t.layer == LAYER_NAMES["building"] else 0.0,
            )
            for t in targets
        },
        has_prob=has_prob,
        targets={t.cls: t for t in targets},
        detail=max(1.0, source.model_gsd / px_m) if source.model_gsd and px_m > 0 else 1.0,
        size=(source.width, source.height),
    )
    return ctx, px_m


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
    ctx: FeatureContext
    hold: tuple[int, ...]  # classes whose final pieces go back raw (to regularize)
    road_cls: int | None  # centre-lines of this class, or None
    georeferenced: bool = True  # see polygonize_block


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
        georeferenced=job.georeferenced,
        # Pieces no other block can join are finished in bulk (arrays, no records) unless
        # they need finishing one by one: simplification, splitting into instances.
        grid=(job.n_rows, job.n_cols) if job.ctx.split is None else None,
        hold=job.hold,
    )
    border = internal_edge_ids(res, job.n_rows, job.n_cols)
    inline = [i for i, p in res.pieces.items() if i not in border and p.cls not in job.hold]
    batches = finish_inner(res.inner, job.ctx) if res.inner is not None else []
    res.inner = None
    res.extra["batches"] = batches + finish([res.pieces.pop(i) for i in inline], job.ctx)
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


class _ProcessPool(ProcessPoolExecutor):
    """A process pool that drops its queued tasks when the block it serves fails."""

    def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        # A failed block (e.g. a corrupt one: InputError) ends the run; the rest is not run.
        self.shutdown(wait=True, cancel_futures=exc_type is not None)


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # Processes, not threads: polygonization holds the GIL. "spawn" is safe with GDAL.
    return _ProcessPool(max_workers=workers, mp_context=mp.get_context("spawn"))


def _chunks(items: list[_T], n: int) -> Iterable[list[_T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _open_sink(
    tmp: Path,
    out: Path,
    path: Path,
    *,
    options: VectorizeOptions,
    source: _Source,
    targets: list[LayerTarget],
    has_prob: bool,
) -> FeatureSink:
    """The output with its layers declared and the options recorded as metadata."""
    from geoseg.vectorize._write import FeatureSink

    meta = {
        "geoseg_vectorize": json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()}
            | {"source": str(path), "schema": source.schema.to_dict()}
        )
    }
    suffix = ".gpkg" if options.format == "gpkg" else ""
    if suffix and tmp.suffix.lower() != suffix:
        logger.info("writing a GeoPackage to %s (no .gpkg suffix)", out)
    sink_fields = {"class": "str", "area_m2": "float", "perimeter_m": "float"}
    if has_prob:
        sink_fields["mean_prob"] = "float"
    sink = FeatureSink(tmp, options.format, source.crs, metadata=meta)
    for t in targets:
        sink.layer(t.layer, "Polygon", sink_fields)
    if options.centerlines:
        sink.layer(CENTERLINE_LAYER, "LineString", {"class": "str", "length_m": "float"})
    return sink


def _drive_blocks(
    jobs: list[list[_BlockJob]],
    sink: FeatureSink,
    *,
    ctx: FeatureContext,
    regularizer: Regularizer | None,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[LineString], int]:
    """Polygonize the blocks row by row, join pieces across borders, finish them into ``sink``.

    Returns:
        The centre-line segments of all blocks and the most pieces held back at a border
        at once.
    """
    n_blocks = sum(len(r) for r in jobs)
    merger = BorderMerger(len(jobs), len(jobs[0]))
    lines: list[LineString] = []
    finishing: deque[Future[list[Batch]]] = deque()

    def drain(block: bool) -> None:
        while finishing and (block or finishing[0].done()):
            for layer, geoms, values in finishing.popleft().result():
                sink.add_many(layer, geoms, values)

    with _executor(workers) as pool:
        submitted: dict[int, list[Future[BlockResult]]] = {}

        def submit_row(r: int) -> None:
            if r < len(jobs) and r not in submitted:
                submitted[r] = [pool.submit(_block_task, j) for j in jobs[r]]

        done_blocks = 0
        for r in range(len(jobs)):
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
            # Final groups are merged where they are finished: in the workers.
            groups = merger.add_row_groups(results)
            last = r == len(jobs) - 1
            plain: list[list[Piece]] = []
            for g in groups:
                if regularizer is not None and g[0].cls == regularizer.cls:
                    regularizer.add(merge_pieces(g, tidy=False))
                else:
                    plain.append(g)
            for chunk in _chunks(plain, 256):
                finishing.append(pool.submit(finish_groups, chunk, ctx))
            if regularizer is not None:
                first = jobs[r][0].window
                y_done = float(first.row_off + first.height)
                ready = regularizer.ready(y_done, merger, last=last)
                for jchunk in _chunks(ready, 64):
                    finishing.append(pool.submit(regularize_batch, jchunk, ctx, regularizer.margin))
            drain(block=False)
            done_blocks += len(results)
            if progress is not None:
                progress(done_blocks, n_blocks)
        drain(block=True)
    return lines, merger.max_pending


def _add_centerlines(
    sink: FeatureSink,
    lines: list[LineString],
    *,
    ctx: FeatureContext,
    road_class: str,
    spur_px: float,
) -> None:
    """Join the blocks' centre-line segments into a network and add it to ``sink``."""
    from geoseg.vectorize._centerlines import build_network

    net = build_network(lines, spur_length=spur_px, tolerance=max(ctx.tol_px, 1.0))
    if net:
        geoms = to_map(np.asarray(net, dtype=object), ctx.transform)
        sink.add_many(
            CENTERLINE_LAYER,
            geoms,
            {
                "class": np.full(len(geoms), road_class, dtype=object),
                "length_m": np.array([measure(g, ctx)[1] for g in geoms]),
            },
        )


def _write_styles(
    gpkg: Path, targets: list[LayerTarget], schema: ClassSchema, *, centerlines: bool
) -> None:
    """A default QGIS style per layer, in the GeoPackage's ``layer_styles`` table."""
    from geoseg.vectorize._styles import write_gpkg_styles

    styles: list[tuple[str, Literal["fill", "line"], tuple[int, int, int], str]] = [
        (t.layer, "fill", t.colour, f"geoseg {t.name}") for t in targets
    ]
    if centerlines:
        rc = schema.colours[schema.index(schema.road_class)]
        line_rgb = (128, 128, 128) if rc == (255, 255, 255) else rc
        styles.append((CENTERLINE_LAYER, "line", line_rgb, "geoseg road centre-lines"))
    write_gpkg_styles(gpkg, styles)


_BLOCK_BYTES_PER_PX = 16
"""Memory a block takes per pixel while polygonized (classes, labels, masks, node tests)."""


def _check_block_memory(path: Path, source: _Source, halo: int, options: VectorizeOptions) -> None:
    """Refuse a ``--block-size`` whose block cannot be held in memory (before any output).

    Raises:
        ConfigError: One block (with its halo) would take more than half the memory
            available now.
    """
    h = min(options.block_size + 2 * halo, source.height)
    w = min(options.block_size + 2 * halo, source.width)
    per_px = _BLOCK_BYTES_PER_PX + (8 if options.probabilities is not None else 0)
    check_memory(
        h * w * per_px,
        what=(
            f"--block-size {options.block_size}: a block of {h} x {w} px of {path} "
            f"({source.height} x {source.width} px)"
        ),
        fix="use a smaller --block-size (the default is 2048)",
    )


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
        ConfigError: A requested class is not in the schema, or a block of
            ``options.block_size`` would not fit in memory.
        OutputError: ``out`` cannot be created (a parent is a file, a folder is in the
            place of the GeoPackage...).
        OutputExistsError: ``out`` exists and ``options.overwrite`` is false.
    """
    t0 = time.perf_counter()
    path, out = Path(path), Path(out)
    check_output(
        out, overwrite=options.overwrite, kind="dir" if options.format == "parquet" else "file"
    )
    # 1. What to read and what to write.
    source = _read_source(path, options.schema)
    schema = source.schema
    targets = _targets(schema, options.classes)
    prob_path = _check_probabilities(options.probabilities, source, targets)
    ctx, px_m = _context(source, targets, options, has_prob=prob_path is not None)
    nodata = source.nodata
    ignore = tuple(sorted({IGNORE} | ({int(nodata)} if nodata is not None else set())))
    classes = tuple(t.cls for t in targets)
    road_cls = schema.index(schema.road_class) if options.centerlines else None
    building = next((t for t in targets if t.layer == "buildings"), None)
    regularizer = (
        Regularizer(building.cls, MARGIN_PX * ctx.detail)
        if options.regularize and building is not None
        else None
    )
    if options.regularize and building is None:
        logger.warning("regularize: no building layer requested; nothing to regularize")
    grid = (source.width, source.height, source.transform)
    split = check_split_source(options, None if building is None else building.cls, grid, px_m)
    ctx = replace(ctx, split=split)

    # 2. One job per block.
    rows = block_rows(source.height, source.width, options.block_size)
    n_blocks = sum(len(r) for r in rows)
    halo = max(32, min(256, options.block_size // 4)) if options.centerlines else 1
    _check_block_memory(path, source, halo, options)
    jobs = [
        [
            _BlockJob(
                path=str(path),
                window=window,
                row=r,
                col=c,
                n_rows=len(rows),
                n_cols=len(rows[0]),
                classes=classes,
                ignore=ignore,
                prob_path=prob_path,
                halo=halo,
                ctx=ctx,
                hold=(regularizer.cls,) if regularizer is not None else (),
                road_cls=road_cls,
                georeferenced=source.georeferenced,
            )
            for c, window in enumerate(row)
        ]
        for r, row in enumerate(rows)
    ]

    # 3. Polygonize, join, finish and write; centre-lines and styles last.
    with atomic_path(out, overwrite=options.overwrite) as tmp:
        sink = _open_sink(
            tmp,
            out,
            path,
            options=options,
            source=source,
            targets=targets,
            has_prob=prob_path is not None,
        )
        lines, max_pending = _drive_blocks(
            jobs,
            sink,
            ctx=ctx,
            regularizer=regularizer,
            workers=options.workers,
            progress=progress,
        )
        if options.centerlines:
            spur_px = options.spur_length / px_m if options.spur_length is not None else 40.0
            _add_centerlines(sink, lines, ctx=ctx, road_class=schema.road_class, spur_px=spur_px)
        counts = sink.close()
        if options.format == "gpkg":
            _write_styles(tmp, targets, schema, centerlines=options.centerlines)

    # 4. The report.
    files = tuple(sorted(out.glob("*.parquet"))) if options.format == "parquet" else (out,)
    crs = source.crs
    report = VectorizeReport(
        output=out,
        format=options.format,
        layers=counts,
        schema=schema.name,
        crs=crs.to_wkt() if crs is not None else None,
        blocks=n_blocks,
        pixels=source.height * source.width,
        seconds=time.perf_counter() - t0,
        max_pending=max_pending,
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
