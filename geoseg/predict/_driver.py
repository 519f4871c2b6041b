"""The driver: plan every scene, run its blocks on Dask, persist them, finish the outputs.

:func:`predict_scenes` checks the model and the outputs up front, prepares each scene (band
check, GSD scale, block plan) before it opens any work folder, submits the blocks still to
do to a Dask client (:func:`geoseg._dask.dask_client`: the given one, a scheduler address,
or local threads) with a bounded number in flight, hands each result to a few persisting
threads (:class:`~geoseg.predict._resume.SceneRun`) and finishes a scene
(:func:`~geoseg.predict._provenance.finish`) as soon as all its blocks are done. A block
that fails on a worker stops the run with one line naming the scene (the finished blocks
are kept for a resume; a scene with none leaves no work folder).
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg._dask import assign_devices, dask_client, probe_workers
from geoseg._io import check_memory, check_output, check_output_path
from geoseg._torch import resolve_device
from geoseg.blend import weight_bits
from geoseg.blocks import BlockPlan, plan_blocks
from geoseg.errors import ConfigError, GeosegError, InputError, first_line
from geoseg.grid import GeoBox, metres_per_unit
from geoseg.options import resolve_overlap
from geoseg.predict._block import BlockJob, BlockResult, gsd_scale, run_block
from geoseg.predict._model import ModelMeta, ModelRef, PredictModel, model_ref
from geoseg.predict._provenance import finish, work_key
from geoseg.predict._registry import bound_gdal_cache
from geoseg.predict._resume import SceneRun
from geoseg.predict._types import (
    PredictOptions,
    PredictReport,
    extra_output_path,
    output_paths,
)
from geoseg.raster import SceneSpec
from geoseg.raster.spill import clear_spills

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["GSD_TOLERANCE", "predict_scenes"]

logger = logging.getLogger(__name__)

GSD_TOLERANCE = 0.25
_DRIVER_THREADS = 4  # driver threads that persist block results and complete seams


def predict_scenes(
    specs: Sequence[SceneSpec],
    model: str | os.PathLike[str] | PredictModel,
    outdir: str | os.PathLike[str],
    *,
    options: PredictOptions = PredictOptions(),  # noqa: B008 (frozen: immutable)
    client: Client | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PredictReport]:
    """Predict class maps (and probabilities) for whole scenes.

    Writes, per scene, ``OUTDIR/{scene}_classes.tif`` (+ its ``.aux.xml`` with the class
    names), ``OUTDIR/{scene}_probs.tif`` with ``options.probabilities``,
    ``OUTDIR/{scene}_{name}.tif`` for each extra output of the model (``_contact.tif``:
    building-contact probability, uint8 0..255, one band ``contact``), and
    ``OUTDIR/{scene}.json`` (options, model hash, timings, tiles, blocks). See
    :mod:`geoseg.predict` for the scheduling, blending, memory bound and resume.

    Args:
        specs: Scenes to predict.
        model: A checkpoint path, or a :class:`PredictModel` (checkpoint paths are needed
            to run on a separate-process cluster unless the model's class is importable
            there).
        outdir: Output folder.
        options: How to predict.
        client: A ``distributed.Client`` or a scheduler address (``tcp://host:port``);
            None runs an in-process scheduler with ``options.workers`` threads.
        progress: Called with ``(blocks done, blocks total)`` after each block.

    Returns:
        One :class:`PredictReport` per scene, in input order.

    Raises:
        OutputExistsError: An output exists and ``options.overwrite`` is false (raised
            before any work).
        BandMismatchError: A scene lacks a band the model needs (named in the message).
        CheckpointError: The checkpoint is missing, corrupt, foreign or unusable (checked
            completely before any work: architecture, weights, normalisation, classes).
        ConfigError: Inconsistent options (e.g. overlap >= tile size), or ``cuda`` without
            a CUDA device.
        InputError: Unreadable scenes or an unreachable scheduler.
        GeosegError: A block failed on a worker (one line naming the scene and the cause;
            a geoseg error keeps its class). The scene's finished blocks are kept in its
            work folder, so the same command resumes; a scene without any leaves none.
    """
    t_start = time.perf_counter()
    if not specs:
        raise InputError("no scene to predict; give at least one scene")
    bound_gdal_cache()
    out = Path(outdir)
    ref = model_ref(model)
    meta = ref.meta
    tile = options.tile_size or meta.tile_size
    overlap = resolve_overlap(tile, options.overlap)
    options = replace(options, tile_size=tile, overlap=overlap)  # resolved, as recorded
    for spec in specs:
        extras = [extra_output_path(out, spec.id, name) for name in meta.extra_outputs]
        _check_outputs(output_paths(out, spec.id), options, extras=extras)
    local_device = options.device
    if client is None:
        local_device = resolve_device(options.device)
    # Every scene is checked (bands, GSD, plan) before any work folder is touched.
    runs = [
        _prepare(i, spec, meta, options, out, tile=tile, device=str(local_device))
        for i, spec in enumerate(specs)
    ]
    try:
        for r in runs:
            r.open()
        total = sum(len(r.plan.blocks) for r in runs)
        done = sum(len(r.done) for r in runs)
        if progress is not None:
            progress(done, total)
        reports: dict[int, PredictReport] = {}
        for r in runs:
            if r.complete:
                reports[r.index] = finish(r, options, ref, t_start, str(local_device))
        todo = deque(
            BlockJob(
                scene_index=r.index,
                spec=r.spec,
                plan=r.plan,
                block=b,
                overlap=overlap * r.scale,
                blend=options.blend,
                weight_bits=weight_bits(r.plan.max_cover),
                device=local_device,
                precision=options.precision,
                batch_size=options.batch_size,
                tta=options.tta,
                probabilities=options.probabilities,
                scale=r.scale,
                compile=options.compile,
            )
            for r in runs
            for b in r.todo
        )
        if todo:
            # The in-process scheduler is an implementation detail: keep its INFO chatter
            # (start, stop, worker registration) out of the user's log unless debugging.
            quiet = not logger.isEnabledFor(logging.DEBUG)
            with dask_client(client, workers=options.workers, quiet=quiet) as cl:
                if client is not None:
                    # One device per worker, chosen here for the whole run (a scene never
                    # mixes CPU and GPU blocks unless allowed).
                    devices = assign_devices(
                        probe_workers(cl),
                        str(options.device),
                        allow_mixed=options.allow_mixed_devices,
                    )
                    todo = deque(replace(j, devices=tuple(sorted(devices.items()))) for j in todo)
                _drive(
                    cl,
                    todo,
                    runs,
                    ref,
                    reports,
                    options,
                    t_start,
                    str(local_device),
                    progress,
                    done,
                    total,
                )
    except BaseException:
        # A scene with no finished block leaves nothing behind; finished blocks are kept
        # (the same command resumes them).
        for r in reversed(runs):
            r.discard_if_empty()
        raise
    finally:
        clear_spills()  # the decoded DSM copies of this process (raster.spill): no leftovers
    return [reports[r.index] for r in runs]


def _drive(
    client: Client,
    todo: deque[BlockJob],
    runs: list[SceneRun],
    ref: ModelRef,
    reports: dict[int, PredictReport],
    options: PredictOptions,
    t_start: float,
    device: str,
    progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> None:
    from distributed import as_completed

    threads = max(1, sum(client.nthreads().values()))
    limit = max(2, 2 * threads)
    model_arg: Any = ref
    if ref.inline is not None:
        model_arg = client.scatter(ref, broadcast=True, hash=False)
    submitted: list[Any] = []
    jobs: dict[Any, BlockJob] = {}  # by task key, while it runs
    failed: Any = None  # the first task that did not finish
    ac = as_completed(loop=client.loop)  # this client's loop, not the default client's
    # Results are persisted (and seams completed) by a few driver threads, so that the driver
    # keeps up with many workers and a fast GPU; a bounded number of results wait for them.
    writers = ThreadPoolExecutor(
        _DRIVER_THREADS, thread_name_prefix="geoseg-persist", initializer=_one_torch_thread
    )
    max_waiting = min(threads, 2 * _DRIVER_THREADS)  # results held by the driver
    writing: set[Future[None]] = set()

    def reap(wait_one: bool) -> None:
        if wait_one and writing:
            futures_wait(writing, return_when=FIRST_COMPLETED)
        for w in [w for w in writing if w.done()]:
            writing.discard(w)
            w.result()  # a failed write is raised here
        for run in runs:
            if run.complete and run.index not in reports:
                reports[run.index] = finish(run, options, ref, t_start, device)

    def submit() -> None:
        job = todo.popleft()
        f = client.submit(run_block, job, model_arg, pure=False)
        jobs[f.key] = job
        submitted.append(f)
        ac.add(f)

    try:
        while todo and len(submitted) < limit:
            submit()
        for fut in ac:
            if fut.status != "finished":
                failed = fut  # reported below, once the finished blocks are persisted
                break
            jobs.pop(fut.key, None)
            res: BlockResult = fut.result()
            fut.release()
            writing.add(writers.submit(runs[res.scene_index].persist, res))
            del res
            done += 1
            if progress is not None:
                progress(done, total)
            reap(False)
            while len(writing) > max_waiting:
                reap(True)
            if todo:
                submit()
        if failed is None:
            while writing:
                reap(True)
            reap(False)
    finally:
        pending = [f for f in submitted if not f.done()]
        if pending:
            client.cancel(pending)
        # After a failed block, the blocks already computed are still persisted (resumable).
        writers.shutdown(wait=True, cancel_futures=failed is None)
    if failed is not None:
        job = jobs[failed.key]
        raise _block_error(failed, job, runs[job.scene_index])


def _one_torch_thread() -> None:
    """Seams are decoded with torch on small arrays: in this thread, without a thread pool.

    (Intra-op threads are per calling thread; idle pool threads spin, which costs the host
    CPU for nothing.)
    """
    import torch

    torch.set_num_threads(1)


def _block_error(fut: Any, job: BlockJob, run: SceneRun) -> GeosegError:
    """One line for a block task that failed on a worker: the scene, the block, the cause.

    A geoseg error keeps its class; anything else (a bug, out of memory) becomes a
    :class:`~geoseg.errors.GeosegError`, its traceback logged at DEBUG level.
    """
    exc = fut.exception() if fut.status == "error" else None
    if exc is None:
        what = f"its task was {fut.status} (a worker died or the scheduler went away)"
    elif isinstance(exc, GeosegError):
        what = first_line(exc, 240)
    else:
        what = f"{type(exc).__name__}: {first_line(exc)}"
        tb = fut.traceback()
        logger.debug(
            "block %s of scene %s failed:\n%s",
            job.block,
            run.spec.id,
            "".join(traceback.format_exception(type(exc), exc, tb)),
        )
    kept = len(run.done)
    then = (
        f"its {kept} finished block(s) are kept in {run.work}: run the same command again to resume"
        if kept
        else "nothing of it was written"
    )
    cls = type(exc) if isinstance(exc, GeosegError) else GeosegError
    return cls(
        f"{run.spec.image}: scene {run.spec.id!r} failed in block {job.block}: {what}; {then}"
    )


def _check_outputs(
    paths: dict[str, Path], options: PredictOptions, *, extras: Sequence[Path] = ()
) -> None:
    """Check every output of a scene before any work (see :func:`check_output_path`).

    ``extras``: the rasters of the model's extra outputs, checked too.
    """
    check_output_path(paths["classes"].parent, kind="dir")
    check_output_path(paths["work"], kind="dir")
    resuming = paths["work"].is_dir()  # an interrupted run may replace its own sidecar
    files = [(k, paths[k]) for k in ("classes", "probs", "sidecar")]
    files += [("extra", p) for p in extras]
    for key, path in files:
        if key == "classes" or not resuming:
            check_output(path, overwrite=options.overwrite, kind="file")
        else:
            check_output_path(path, kind="file")


def _check_sizes(
    spec: SceneSpec,
    plan: BlockPlan,
    meta: ModelMeta,
    options: PredictOptions,
    *,
    tile: int,
    scale: int,
    device: str,
) -> None:
    """Refuse a tile or block size whose buffers cannot be held in memory (before any work).

    Raises:
        ConfigError: A batch of tiles, or one block's accumulator, would take more than
            half the memory available now.
    """
    h, w = plan.shape
    classes = len(meta.schema) + len(meta.extra_outputs)  # blended channels
    scene = f"scene {spec.id} ({h} x {w} px)"
    batch = options.batch_size or (32 if device.startswith("cuda") else 4)
    side = tile * scale
    # a batch: float32 bands read, float32 scores, uint16 probabilities; int32 weights
    tiles = batch * (
        len(meta.bands) * side * side * 4 + classes * (tile * tile * 4 + side * side * 2)
    )
    check_memory(
        tiles + side * side * 4,
        what=(
            f"--tile-size {tile}: a batch of {batch} tile(s) of {len(meta.bands)} band(s) x "
            f"{side} x {side} px of {scene}"
        ),
        fix=f"use a smaller --tile-size (the checkpoint's is {meta.tile_size}) or --batch-size",
    )
    rows = max(b - a for a, b in map(plan.rows.extent, range(plan.rows.n_blocks)))
    cols = max(b - a for a, b in map(plan.cols.extent, range(plan.cols.n_blocks)))
    # int32 sums of every class and the weights; the block's classes and probabilities; its
    # area as read (at most 4 bytes a band, and the mask) and normalised (float32)
    per_px = (classes + 1) * 4 + 1 + (classes if options.probabilities else 0)
    per_px += len(meta.extra_outputs)
    block = rows * cols * (per_px + len(meta.bands) * 8 + 1)
    check_memory(
        block,
        what=(
            f"--block-size {options.block_size}: a block of {rows} x {cols} px with "
            f"{classes} classes of {scene}"
        ),
        fix="use a smaller --block-size (the default is 2048)",
    )


def _metres_per_pixel(gb: GeoBox) -> float | None:
    if gb.crs is None:
        return None
    return (gb.resolution[0] + gb.resolution[1]) / 2.0 * metres_per_unit(gb)


def _prepare(
    index: int,
    spec: SceneSpec,
    meta: ModelMeta,
    options: PredictOptions,
    out: Path,
    *,
    tile: int,
    device: str,
) -> SceneRun:
    warnings: list[str] = []
    with spec.open() as scene:
        scene.check_bands(meta.bands)
        gb = scene.geobox
    gsd = _metres_per_pixel(gb)
    scale = gsd_scale(gsd, meta.gsd)
    if scale > 1:
        logger.info(
            "%s: scene at %.3g m, model at %.3g m: each model pixel averages %dx%d scene pixels",
            spec.id,
            gsd,
            meta.gsd,
            scale,
            scale,
        )
    elif gsd is not None and meta.gsd > 0 and abs(gsd / meta.gsd - 1.0) > GSD_TOLERANCE:
        msg = (
            f"{spec.image}: scene {spec.id!r} has a ground sample distance of {gsd:.3g} m but "
            f"the model was trained at {meta.gsd:.3g} m ({abs(gsd / meta.gsd - 1):.0%} off); "
            "predictions may be poor - resample the scene or use a model trained at this GSD"
        )
        logger.warning("%s", msg)
        warnings.append(msg)
    plan = plan_blocks(
        gb.shape,
        tile_size=tile * scale,
        overlap=(options.overlap or 0) * scale,
        block_size=options.block_size,
    )
    try:
        weight_bits(plan.max_cover)
    except ValueError as exc:
        raise ConfigError(f"overlap {options.overlap} with tile size {tile}: {exc}") from None
    _check_sizes(spec, plan, meta, options, tile=tile, scale=scale, device=device)
    key = work_key(spec, meta, options, tile=tile * scale, device=device, shape=gb.shape)
    return SceneRun(
        index,
        spec,
        scale=scale,
        geobox=gb,
        plan=plan,
        key=key,
        paths=output_paths(out, spec.id),
        probabilities=options.probabilities,
        warnings=warnings,
        extra=len(meta.extra_outputs),
    )
