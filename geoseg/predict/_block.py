"""Block tasks (run on Dask workers): read a block's strips, send them to the model runner.

A task gets paths, never open handles: it opens the scene and reads the block's tiles
straight from the big files one tile row at a time, as stored (one windowed read per row,
prefetched in a thread while the device works, :func:`iter_raw_rows`). Rows go to the
process's model runner (:mod:`geoseg.predict._runner`), which normalises, predicts and
blends them on the model's device; tiles without a single valid pixel are skipped. When the
model was trained at a coarser GSD (:func:`gsd_scale`) the task averages scene pixels into
model pixels itself (the training rule). The result (:class:`BlockResult`) holds the
block's decoded core, its seams and the pieces it owes to its neighbours.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg.blend import BlendKind, BlockPlan, Rect, tile_edges
from geoseg.data import downsample_mean
from geoseg.options import TTA, Device, Precision
from geoseg.predict._device import normalise
from geoseg.predict._model import ModelMeta, ModelRef
from geoseg.predict._runner import BlockHandle, Runner, get_runner
from geoseg.raster import RawBlock, SceneSpec

__all__ = ["BlockJob", "BlockResult", "gsd_scale", "iter_raw_rows", "run_block"]

_ROWS_AHEAD = 2  # tile rows a block task keeps queued at the model runner


@dataclass(frozen=True)
class BlockJob:
    """One output block of one scene to predict, with every setting its task needs."""

    scene_index: int
    spec: SceneSpec
    plan: BlockPlan
    block: tuple[int, int]
    overlap: int
    blend: BlendKind
    weight_bits: int
    device: Device
    precision: Precision
    batch_size: int | None
    tta: TTA
    probabilities: bool
    scale: int = 1
    compile: bool = False
    devices: tuple[tuple[str, str], ...] = ()  # (worker address, device) on a cluster


def job_device(job: BlockJob) -> str:
    """The device of a block task: the one assigned to its Dask worker, else ``job.device``."""
    if job.devices:
        from distributed import get_worker

        with contextlib.suppress(ValueError):  # not on a worker (a direct call)
            return dict(job.devices).get(get_worker().address, str(job.device))
    return str(job.device)


@dataclass
class BlockResult:
    """A predicted block: its core, seams and pieces owed to neighbours, and its timings."""

    scene_index: int
    block: tuple[int, int]
    classes: npt.NDArray[np.uint8]
    probs: npt.NDArray[np.uint8] | None
    seams: list[tuple[Rect, npt.NDArray[np.int32], npt.NDArray[np.bool_]]]
    pieces: list[tuple[tuple[int, int], Rect, npt.NDArray[np.int32]]]
    tiles: int
    skipped: int
    read_s: float
    wait_s: float
    device_s: float
    runtime: tuple[str, str, int, float]  # device, precision, batch size, warm-up seconds
    seconds: float
    warnings: tuple[str, ...] = ()


def iter_raw_rows(
    spec: SceneSpec, rows: Sequence[Sequence[Rect]], *, bands: Sequence[str]
) -> Generator[tuple[Rect, RawBlock, float], None, None]:
    """Read rows of tiles straight from a scene, as stored, one windowed read per row.

    The next row is read in a background thread while the caller works on the current one
    (GDAL releases the GIL). The scene is opened here and used by that thread only.

    Args:
        spec: The scene.
        rows: Tiles grouped by row (each row: same rows, increasing columns).
        bands: Band names to read, in model channel order.

    Yields:
        ``(strip, raw, seconds)``: the strip rectangle, its bands as stored
        (:meth:`geoseg.raster.Scene.read_raw`) and the read time.
    """
    names = tuple(bands)

    def read(scene: Any, row: Sequence[Rect]) -> tuple[Rect, RawBlock, float]:
        t0 = time.perf_counter()
        strip = Rect(
            row[0].row, row[0].col, row[0].height, row[-1].col + row[-1].width - row[0].col
        )
        raw = scene.read_raw(Window(strip.col, strip.row, strip.width, strip.height), bands=names)
        return strip, raw, time.perf_counter() - t0

    if not rows:
        return
    with spec.open() as scene, ThreadPoolExecutor(1, thread_name_prefix="geoseg-read") as pool:
        nxt = pool.submit(read, scene, rows[0])
        for k in range(len(rows)):
            item = nxt.result()
            if k + 1 < len(rows):
                nxt = pool.submit(read, scene, rows[k + 1])
            yield item


def gsd_scale(scene_gsd: float | None, model_gsd: float) -> int:
    """Integer factor by which the model's pixels are coarser than the scene's (1 = none).

    A model trained at 20 cm sees a 5 cm scene through 4 x 4 pixel averages; factors that are
    not within 5 % of an integer >= 2 are not matched (a GSD warning is raised instead).
    """
    if scene_gsd is None or scene_gsd <= 0 or model_gsd <= 0:
        return 1
    ratio = model_gsd / scene_gsd
    f = round(ratio)
    return f if f >= 2 and abs(ratio / f - 1.0) <= 0.05 else 1


def _coarse_tiles(
    raw: RawBlock, strip: Rect, tiles: Sequence[Rect], meta: ModelMeta, scale: int
) -> npt.NDArray[np.float32]:
    """Normalised model tiles of a model coarser than the scene (the training rule, on the host).

    Each model pixel is the mean of the valid scene pixels it covers
    (:func:`geoseg.data.downsample_mean`), as when the model was trained.
    """
    import torch

    x = normalise(
        torch.from_numpy(raw.image),
        torch.from_numpy(raw.elevation),
        torch.from_numpy(raw.valid),
        raw.sources,
        torch.tensor(meta.mean, dtype=torch.float32),
        torch.tensor(meta.std, dtype=torch.float32),
    ).numpy()
    stacked = np.stack([x[(slice(None), *t.slices(strip))] for t in tiles])
    tile_valid = np.stack([raw.valid[t.slices(strip)] for t in tiles])
    return np.ascontiguousarray(downsample_mean(stacked, tile_valid, scale)[0])


def run_block(job: BlockJob, ref: ModelRef) -> BlockResult:
    """Predict one output block (runs on a Dask worker)."""
    t_start = time.perf_counter()
    meta = ref.meta
    runner = get_runner(
        ref,
        device=job_device(job),
        precision=job.precision,
        batch_size=job.batch_size,
        tta=job.tta,
        compile=job.compile,
    )
    plan, block = job.plan, job.block
    brect = plan.block_rect(block)
    handle = runner.open_block(plan.extent_rect(block), scale=job.scale)
    try:
        return _run(job, meta, runner, handle, brect, t_start)
    except BaseException:
        runner.discard_block(handle)
        raise


def _run(
    job: BlockJob,
    meta: ModelMeta,
    runner: Runner,
    handle: BlockHandle,
    brect: Rect,
    t_start: float,
) -> BlockResult:
    plan, block = job.plan, job.block
    valid = np.zeros((brect.height, brect.width), dtype=bool)
    rows = plan.tile_rows(block)
    read_s = wait_s = 0.0
    tiles = skipped = 0
    pending: deque[Future[None]] = deque()
    strips = iter_raw_rows(job.spec, rows, bands=meta.bands)
    with contextlib.closing(strips):
        for row, (strip, raw, seconds) in zip(rows, strips, strict=True):
            read_s += seconds
            part = strip.intersect(brect)
            valid[part.slices(brect)] = raw.valid[part.slices(strip)]
            every = raw.valid.all()
            sel = [t for t in row if every or raw.valid[t.slices(strip)].any()]
            skipped += len(row) - len(sel)
            if sel:
                keys = [
                    (
                        t.height,
                        t.width,
                        job.blend,
                        job.overlap,
                        tile_edges(t, plan.shape),
                        job.weight_bits,
                    )
                    for t in sel
                ]
                if job.scale > 1:
                    coarse = _coarse_tiles(raw, strip, sel, meta, job.scale)
                    pending.append(runner.submit_tiles(handle, coarse, sel, keys))
                else:
                    pending.append(runner.submit_strip(handle, raw, strip, sel, keys))
                tiles += len(sel)
            del raw
            t0 = time.perf_counter()
            while len(pending) > _ROWS_AHEAD:
                pending.popleft().result()
            wait_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    while pending:
        pending.popleft().result()
    seams = plan.seam_rects(block)
    pieces = [(d, plan.piece_rect(block, d)) for d in plan.dependents(block)]
    pieces = [(d, r) for d, r in pieces if not r.empty]
    out = runner.finish_block(
        handle,
        core=brect,
        valid=valid,
        seams=seams,
        pieces=[r for _, r in pieces],
        probabilities=job.probabilities,
    ).result()
    wait_s += time.perf_counter() - t0
    return BlockResult(
        scene_index=job.scene_index,
        block=block,
        classes=out.classes,
        probs=out.probs,
        seams=[
            (r, sums, valid[r.slices(brect)].copy())
            for r, sums in zip(seams, out.seams, strict=True)
        ],
        pieces=[(d, r, sums) for (d, r), sums in zip(pieces, out.pieces, strict=True)],
        tiles=tiles,
        skipped=skipped,
        read_s=read_s,
        wait_s=wait_s,
        device_s=out.device_s,
        runtime=(out.device, out.precision, out.batch_size, out.warmup_s),
        seconds=time.perf_counter() - t_start,
        warnings=out.warnings,
    )
