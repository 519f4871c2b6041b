"""Block tasks (run on Dask workers): read a block's tiles, send them to the model runner.

A task gets paths, never open handles: it opens the scene (its thread keeps it open for its
next block, :func:`open_scene`) and reads everything the block's tiles cover straight from
the big files, as stored, in one windowed read (:func:`read_block_area`: rows shared by
overlapping tiles are read once; uint8 stays uint8).
It sends the area and its tiles to the process's model runner (:mod:`geoseg.predict._runner`),
which normalises, predicts and blends them on the model's device; tiles without a single
valid pixel are skipped. When the model was trained at a coarser GSD (:func:`gsd_scale`) the
task averages scene pixels into model pixels itself (the training rule). The result
(:class:`BlockResult`) holds the block's decoded core, its seams and the pieces it owes to its
neighbours.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg.blend import BlendKind, tile_edges
from geoseg.blocks import BlockPlan, Rect
from geoseg.data import downsample_mean
from geoseg.options import TTA, Device, Precision
from geoseg.predict._device import Transfers, normalise_raw
from geoseg.predict._model import ModelMeta, ModelRef
from geoseg.predict._registry import get_runner
from geoseg.predict._runner import BlockHandle, Runner
from geoseg.raster import RawBlock, Scene, SceneSpec
from geoseg.raster.remote import file_stamp

__all__ = ["BlockJob", "BlockResult", "gsd_scale", "open_scene", "read_block_area", "run_block"]

KEEP_OPEN = 2
"""Scenes a worker thread keeps open between its block tasks."""


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
    extra: npt.NDArray[np.uint8] | None = None  # (E, h, w) the model's extra outputs


class _OpenScenes(threading.local):
    def __init__(self) -> None:
        self.scenes: dict[SceneSpec, tuple[tuple[tuple[int, int, int], ...], Scene]] = {}


_OPEN = _OpenScenes()


def _stamp(spec: SceneSpec) -> tuple[tuple[int, int, int], ...]:
    return tuple(file_stamp(p) for p in (spec.image, spec.dsm, spec.ndsm) if p is not None)


def open_scene(spec: SceneSpec) -> Scene:
    """This thread's open :class:`~geoseg.raster.Scene` of ``spec``, kept between tasks.

    A block task of the same scene then skips opening and checking the files again, and
    reads through the same GDAL datasets, whose block cache still holds the tiles that the
    thread's previous block decoded along their shared edge. Each thread has its own (a
    GDAL dataset is not shared between threads); a thread keeps :data:`KEEP_OPEN` scenes,
    and a file changed on disk (another inode, size or mtime) is opened afresh.
    """
    stamp = _stamp(spec)
    scenes = _OPEN.scenes
    kept = scenes.pop(spec, None)
    if kept is not None and kept[0] == stamp:
        scenes[spec] = kept  # most recently used last
        return kept[1]
    if kept is not None:
        kept[1].close()
    while len(scenes) >= KEEP_OPEN:
        scenes.pop(next(iter(scenes)))[1].close()
    scene = spec.open()
    scenes[spec] = (stamp, scene)
    return scene


def read_block_area(
    spec: SceneSpec, plan: BlockPlan, block: tuple[int, int], *, bands: Sequence[str]
) -> tuple[Rect, RawBlock, float]:
    """Read everything ``block``'s own tiles cover, as stored, in one windowed read.

    One read per block, not per tile row: rows of overlapping tiles are read once.

    Returns:
        ``(area, raw, seconds)``: the rectangle read (it may reach past the scene: boundless),
        its bands as stored (:meth:`geoseg.raster.Scene.read_raw`) and the read time.
    """
    t0 = time.perf_counter()
    rows = plan.tile_rows(block)
    first, last = rows[0][0], rows[-1][-1]
    area = Rect(
        first.row, first.col, last.row + last.height - first.row, last.col + last.width - first.col
    )
    # a derived nDSM is made on the model's device, from the DSM and the ground's taps
    raw = open_scene(spec).read_raw(
        Window(area.col, area.row, area.width, area.height), bands=bands, derive_ndsm=False
    )
    return area, raw, time.perf_counter() - t0


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
    raw: RawBlock, area: Rect, tiles: Sequence[Rect], meta: ModelMeta, scale: int
) -> npt.NDArray[np.float32]:
    """Normalised model tiles of a model coarser than the scene (the training rule, on the host).

    Each model pixel is the mean of the valid scene pixels it covers
    (:func:`geoseg.data.downsample_mean`), as when the model was trained.
    """
    import torch

    mean = torch.tensor(meta.mean, dtype=torch.float32)
    std = torch.tensor(meta.std, dtype=torch.float32)
    x = normalise_raw(raw, mean, std, Transfers(torch.device("cpu"))).numpy()
    stacked = np.stack([x[(slice(None), *t.slices(area))] for t in tiles])
    tile_valid = np.stack([raw.valid[t.slices(area)] for t in tiles])
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
    area, raw, read_s = read_block_area(job.spec, plan, block, bands=meta.bands)
    valid = raw.valid[brect.slices(area)].copy()
    tiles = [t for row in plan.tile_rows(block) for t in row]
    sel = [t for t in tiles if raw.all_valid or raw.valid[t.slices(area)].any()]
    t0 = time.perf_counter()
    if sel:
        keys = [
            (t.height, t.width, job.blend, job.overlap, tile_edges(t, plan.shape), job.weight_bits)
            for t in sel
        ]
        if job.scale > 1:
            coarse = _coarse_tiles(raw, area, sel, meta, job.scale)
            done = runner.submit_tiles(handle, coarse, sel, keys)
        else:
            done = runner.submit_area(handle, raw, area, sel, keys)
        del raw
        done.result()
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
        tiles=len(sel),
        skipped=len(tiles) - len(sel),
        read_s=read_s,
        wait_s=time.perf_counter() - t0,
        device_s=out.device_s,
        runtime=(out.device, out.precision, out.batch_size, out.warmup_s),
        seconds=time.perf_counter() - t_start,
        warnings=out.warnings,
        extra=out.extra,
    )
