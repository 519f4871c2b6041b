"""Block tasks (run on Dask workers): read a block's tiles, run them, blend them.

A task gets paths, never open handles: it opens the scene, reads its tiles straight from
the big files one tile row at a time (one windowed read per row, prefetched in a thread
while the model works, :func:`iter_tile_rows`), normalises the bands named by the model,
averages scene pixels into model pixels when the model was trained at a coarser GSD
(:func:`gsd_scale`), and sends the tiles to the process's model runner. Tiles without a
single valid pixel are skipped. The quantised probabilities are blended into an exact
integer accumulator (:mod:`geoseg.blend`); the result (:class:`BlockResult`) holds the
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

from geoseg.blend import (
    Accumulator,
    BlendKind,
    BlockPlan,
    Edges,
    Rect,
    decode,
    quantize_weights,
    tile_edges,
    weight_window,
)
from geoseg.data import downsample_mean
from geoseg.options import TTA, Device, Precision
from geoseg.predict._model import ModelRef
from geoseg.predict._runner import get_runner
from geoseg.raster import SceneSpec

__all__ = ["BlockJob", "BlockResult", "gsd_scale", "iter_tile_rows", "run_block"]

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
    blend_s: float
    seconds: float


def iter_tile_rows(
    spec: SceneSpec,
    rows: Sequence[Sequence[Rect]],
    *,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
) -> Generator[tuple[Rect, npt.NDArray[np.float32], npt.NDArray[np.bool_], float], None, None]:
    """Read rows of tiles straight from a scene, normalised, one windowed read per row.

    The next row is read in a background thread while the caller works on the current one
    (GDAL releases the GIL). The scene is opened here and used by that thread only.

    Args:
        spec: The scene.
        rows: Tiles grouped by row (each row: same rows, increasing columns).
        bands: Band names to read, in model channel order.
        mean: Per-band normalisation mean.
        std: Per-band normalisation standard deviation.

    Yields:
        ``(strip, data, valid, seconds)``: the strip rectangle, its normalised bands
        (bands, h, w) float32 with invalid pixels 0, its validity (h, w), and the read time.
    """
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    sd = np.asarray(std, dtype=np.float32)[:, None, None]
    names = tuple(bands)

    def read(
        scene: Any, row: Sequence[Rect]
    ) -> tuple[Rect, npt.NDArray[np.float32], npt.NDArray[np.bool_], float]:
        t0 = time.perf_counter()
        strip = Rect(
            row[0].row, row[0].col, row[0].height, row[-1].col + row[-1].width - row[0].col
        )
        blk = scene.read(Window(strip.col, strip.row, strip.width, strip.height), bands=names)
        data = blk.data
        data -= m
        data /= sd
        data[:, ~blk.valid] = 0.0
        return strip, data, blk.valid, time.perf_counter() - t0

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


def _upsample_probs(
    probs_q: npt.NDArray[np.uint16], f: int, tiles: Sequence[Rect]
) -> npt.NDArray[np.uint16]:
    """Quantised model-pixel probabilities back to scene pixels (bilinear), cropped to tiles."""
    import torch

    x = torch.from_numpy(probs_q.astype(np.float32))
    up = torch.nn.functional.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
    h, w = tiles[0].height, tiles[0].width
    out = up[:, :, :h, :w].round_().clamp_(0.0, 65535.0).numpy().astype(np.uint16)
    return out


def run_block(job: BlockJob, ref: ModelRef) -> BlockResult:
    """Predict one output block (runs on a Dask worker)."""
    t_start = time.perf_counter()
    meta = ref.meta
    runner = get_runner(
        ref, device=job.device, precision=job.precision, batch_size=job.batch_size, tta=job.tta
    )
    plan, block = job.plan, job.block
    brect = plan.block_rect(block)
    acc = Accumulator(plan.extent_rect(block), meta.schema.num_classes)
    valid = np.zeros((brect.height, brect.width), dtype=bool)
    windows: dict[Edges, npt.NDArray[np.int32]] = {}
    rows = plan.tile_rows(block)
    stats = {"read": 0.0, "wait": 0.0, "blend": 0.0, "tiles": 0, "skipped": 0}

    def consume(sel: list[Rect], fut: Future[npt.NDArray[np.uint16]] | None) -> None:
        if fut is None:
            return
        t0 = time.perf_counter()
        probs_q = fut.result()
        if job.scale > 1:
            probs_q = _upsample_probs(probs_q, job.scale, sel)
        t1 = time.perf_counter()
        for tile, pq in zip(sel, probs_q, strict=True):
            edges = tile_edges(tile, plan.shape)
            w = windows.get(edges)
            if w is None:
                w = quantize_weights(
                    weight_window(
                        (tile.height, tile.width), kind=job.blend, overlap=job.overlap, edges=edges
                    ),
                    job.weight_bits,
                )
                windows[edges] = w
            acc.add(pq, w, tile)
        stats["wait"] += t1 - t0
        stats["blend"] += time.perf_counter() - t1

    pending: deque[tuple[list[Rect], Future[npt.NDArray[np.uint16]] | None]] = deque()
    strips = iter_tile_rows(job.spec, rows, bands=meta.bands, mean=meta.mean, std=meta.std)
    with contextlib.closing(strips):
        for row, (strip, data, strip_valid, seconds) in zip(rows, strips, strict=True):
            stats["read"] += seconds
            part = strip.intersect(brect)
            valid[part.slices(brect)] = strip_valid[part.slices(strip)]
            sel = []
            for tile in row:
                if strip_valid[tile.slices(strip)].any():
                    sel.append(tile)
                else:
                    stats["skipped"] += 1
            fut = None
            if sel:
                tiles = np.stack([data[(slice(None), *tile.slices(strip))] for tile in sel])
                if job.scale > 1:
                    # the training rule: the mean of the valid scene pixels of each model pixel
                    tile_valid = np.stack([strip_valid[tile.slices(strip)] for tile in sel])
                    tiles = np.ascontiguousarray(downsample_mean(tiles, tile_valid, job.scale)[0])
                fut = runner.submit(tiles)
                stats["tiles"] += len(sel)
            pending.append((sel, fut))
            del data
            while len(pending) > _ROWS_AHEAD:
                consume(*pending.popleft())
    while pending:
        consume(*pending.popleft())
    t0 = time.perf_counter()
    core = acc.sums[(slice(None), *brect.slices(acc.rect))]
    classes, probs = decode(core, valid, probabilities=job.probabilities)
    seams = [
        (rect, acc.take(rect), valid[rect.slices(brect)].copy()) for rect in plan.seam_rects(block)
    ]
    pieces = []
    for dest in plan.dependents(block):
        rect = plan.piece_rect(block, dest)
        if not rect.empty:
            pieces.append((dest, rect, acc.take(rect)))
    stats["blend"] += time.perf_counter() - t0
    return BlockResult(
        scene_index=job.scene_index,
        block=block,
        classes=classes,
        probs=probs,
        seams=seams,
        pieces=pieces,
        tiles=int(stats["tiles"]),
        skipped=int(stats["skipped"]),
        read_s=float(stats["read"]),
        wait_s=float(stats["wait"]),
        blend_s=float(stats["blend"]),
        seconds=time.perf_counter() - t_start,
    )
