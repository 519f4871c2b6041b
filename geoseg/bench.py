"""Benchmarks of prediction and training: throughput of each stage, and peak memory.

:func:`bench_predict` synthesises (and caches) a Potsdam-like scene, saves an untrained
checkpoint of the requested architecture, and measures

(a) model-only throughput on device-resident tensors, at the same model, batch size,
    precision and tile size as the prediction;
(b) raw read throughput of the scene through the same reader path as the prediction
    (one windowed read per tile row, band mapping and normalisation included), with the
    same number of threads;
(c) end-to-end prediction (:func:`geoseg.predict.predict_scenes`, COG writing included);

all in scene megapixels per second (a) counts the tile overlap: the model processes
``tiles * tile_size**2`` pixels per scene), the ratio ``e2e / min(a, b)`` (how close the
pipeline gets to its slowest stage) and the peak memory (RSS, and CUDA max allocated).

:func:`measure_predict_memory` runs a prediction in a child process and reports that
process's peak RSS, so that scene sizes can be compared (the memory bound says a 24000 px
scene must stay within 1.3 x of a 6000 px one).

:func:`bench_train` does the same for training, in chips per second: (a) training steps
(forward, backward, optimiser) on a device-resident batch, (b) the training DataLoader alone,
(c) real epochs of :func:`geoseg.train.train`, with the share of step time spent waiting for
data.

The synthetic scene of the prediction benchmarks is a fast procedural generator (blocks of
"buildings", roads, noisy vegetation, a DSM), written strip by strip in bounded memory, not
:mod:`geoseg.synth`, whose full-resolution polygon rendering is too slow at these sizes
(the training benchmark, on small scenes, uses :mod:`geoseg.synth`). ``tiny`` is a
1x1-convolution model for I/O and memory measurements.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.blend import plan_blocks
from geoseg.errors import InputError
from geoseg.predict import PredictModel, PredictOptions, iter_tile_rows, predict_scenes
from geoseg.scene import SceneSpec
from geoseg.schema import POTSDAM

if TYPE_CHECKING:
    import torch

__all__ = [
    "BenchReport",
    "MemoryReport",
    "TrainBenchReport",
    "bench_predict",
    "bench_scene",
    "bench_train",
    "measure_predict_memory",
    "tiny_model",
]

logger = logging.getLogger(__name__)

BENCH_GSD = 0.05
BENCH_BANDS = ("red", "green", "blue", "nir", "ndsm")
IMAGE_BANDS = ("red", "green", "blue", "nir")
_STRIP = 512


@dataclass(frozen=True)
class BenchReport:
    """Throughput of each stage of a prediction (scene megapixels per second).

    Attributes:
        size: Scene edge in pixels.
        model: Architecture.
        device: Device used.
        precision: Precision used.
        batch_size: Tiles per model call.
        tile_size: Tile edge.
        overlap: Tile overlap.
        tiles: Tiles in the plan.
        model_mpx_s: (a) model only, scene Mpx/s (tile Mpx/s divided by the overlap factor).
        model_tile_mpx_s: (a) model only, tile pixels per second (Mpx/s).
        read_mpx_s: (b) reads through the prediction's reader path, scene Mpx/s.
        e2e_mpx_s: (c) end-to-end prediction, scene Mpx/s.
        ratio: ``e2e / min(model, read)``.
        peak_rss_mb: Peak resident memory of this process (MiB).
        cuda_max_allocated_mb: Peak CUDA memory allocated by torch (MiB), None on the CPU.
        seconds: Wall time of each measurement.
    """

    size: int
    model: str
    device: str
    precision: str
    batch_size: int
    tile_size: int
    overlap: int
    tiles: int
    model_mpx_s: float
    model_tile_mpx_s: float
    read_mpx_s: float
    e2e_mpx_s: float
    ratio: float
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None
    seconds: dict[str, float]

    def summary(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        return [
            f"scene {self.size}x{self.size} px, {self.model} on {self.device} ({self.precision}), "
            f"batch {self.batch_size}, tile {self.tile_size}/{self.overlap}, {self.tiles} tiles",
            f"(a) model only : {self.model_mpx_s:9.2f} Mpx/s scene "
            f"({self.model_tile_mpx_s:.2f} Mpx/s of tile pixels)",
            f"(b) reads      : {self.read_mpx_s:9.2f} Mpx/s",
            f"(c) end-to-end : {self.e2e_mpx_s:9.2f} Mpx/s",
            f"e2e / min(a, b) = {self.ratio:.2f}",
            _memory_line(self.peak_rss_mb, self.cuda_max_allocated_mb),
        ]


@dataclass(frozen=True)
class MemoryReport:
    """Peak memory of one prediction run in a child process.

    Attributes:
        size: Scene edge in pixels.
        peak_rss_mb: Peak resident memory of the child (MiB).
        seconds: Wall time of the child.
        blocks: Output blocks.
        tiles: Tiles in the plan.
        block_size: Requested block size.
    """

    size: int
    peak_rss_mb: float
    seconds: float
    blocks: int
    tiles: int
    block_size: int


# -- synthetic scene -------------------------------------------------------------------------


def _hash01(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A cheap deterministic hash of integer grids to [0, 1)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ (
        b.astype(np.uint64) * np.uint64(0x85EBCA77)
    )
    x ^= np.uint64(seed * 0x27D4EB2F + 1)
    x = (x ^ (x >> np.uint64(15))) * np.uint64(0x2C1B3C6D)
    x = (x ^ (x >> np.uint64(12))) * np.uint64(0x297A2D39)
    x ^= x >> np.uint64(15)
    return (x & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(1 << 24)


def _synth_strip(r0: int, h: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(r0, r0 + h)[:, None]
    cols = np.arange(size)[None, :]
    cell = 240  # 12 m blocks at 5 cm
    cr, cc = rows // cell, cols // cell
    kind = _hash01(cr, cc, seed)
    inner = (
        ((rows % cell) > 30)
        & ((rows % cell) < cell - 30)
        & ((cols % cell) > 30)
        & ((cols % cell) < cell - 30)
    )
    road = ((rows % (cell * 4)) < 60) | ((cols % (cell * 4)) < 60)
    building = inner & (kind < 0.35) & ~road
    tree = inner & (kind >= 0.35) & (kind < 0.6) & ~road
    noise = _hash01(rows + np.zeros_like(cols), cols + np.zeros_like(rows), seed + 7)
    img = np.empty((4, h, size), dtype=np.uint8)
    base = np.where(road, 120, np.where(building, 170, np.where(tree, 60, 95))).astype(np.float32)
    red = base + 30 * noise + np.where(building, 40, 0)
    green = base + 30 * noise + np.where(tree, 50, np.where(road | building, 0, 35))
    blue = base + 20 * noise
    nir = np.where(tree, 200, np.where(road | building, 70, 160)) + 40 * noise
    for i, band in enumerate((red, green, blue, nir)):
        img[i] = np.clip(band, 0, 255).astype(np.uint8)
    ground = 35.0 + 2.0 * np.sin(rows / 3000.0) + 2.0 * np.cos(cols / 3500.0)
    dsm = ground + np.where(building, 12.0 + 6 * kind, 0.0) + np.where(tree, 8.0 * noise, 0.0)
    return img, dsm.astype(np.float32)


def bench_scene(
    cache: str | os.PathLike[str], size: int, *, seed: int = 0, dsm: bool = True
) -> SceneSpec:
    """A synthetic ``size`` x ``size`` scene at 5 cm, cached under ``cache``.

    Written strip by strip (bounded memory): an RGBIR image (uint8, tiled 512, PackBits
    like Potsdam) and, with ``dsm``, a float32 DSM. Reused when already complete.

    Args:
        cache: Folder for cached scenes.
        size: Scene edge in pixels (>= 64).
        seed: Pattern seed.
        dsm: Also write a DSM (the default bench model reads the derived nDSM).

    Raises:
        InputError: ``size`` below 64.
    """
    if size < 64:
        raise InputError(f"--size {size}: a bench scene needs at least 64 px")
    folder = Path(cache) / f"scene_{size}_s{seed}{'_dsm' if dsm else ''}"
    image, dsm_path, done = folder / "image.tif", folder / "dsm.tif", folder / "done.json"
    spec = SceneSpec(
        id=f"bench_{size}",
        image=image,
        dsm=dsm_path if dsm else None,
        image_bands=IMAGE_BANDS,
    )
    if done.exists():
        return spec
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tf = Affine(BENCH_GSD, 0, 366000.0, 0, -BENCH_GSD, 5808000.0)
    common = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": "EPSG:32633",
        "transform": tf,
    }
    common |= {"tiled": True, "blockxsize": 512, "blockysize": 512, "bigtiff": "if_safer"}
    with contextlib.ExitStack() as stack:
        tmp_img = stack.enter_context(atomic_path(image, overwrite=True))
        di = stack.enter_context(
            rasterio.open(tmp_img, "w", count=4, dtype="uint8", compress="packbits", **common)
        )
        dd = None
        if dsm:
            tmp_dsm = stack.enter_context(atomic_path(dsm_path, overwrite=True))
            dd = stack.enter_context(
                rasterio.open(
                    tmp_dsm, "w", count=1, dtype="float32", compress="lzw", predictor=3, **common
                )
            )
        for r0 in range(0, size, _STRIP):
            h = min(_STRIP, size - r0)
            img, elev = _synth_strip(r0, h, size, seed)
            di.write(img, window=Window(0, r0, size, h))
            if dd is not None:
                dd.write(elev, 1, window=Window(0, r0, size, h))
    done.write_text(json.dumps({"size": size, "seed": seed, "dsm": dsm}))
    logger.info("synthesised a %d px bench scene in %.1fs", size, time.perf_counter() - t0)
    return spec


# -- models --------------------------------------------------------------------------------


def tiny_model(bands: tuple[str, ...] = IMAGE_BANDS, *, seed: int = 0) -> PredictModel:
    """A 1x1-convolution model (fixed seed) for I/O and memory measurements."""
    import torch

    torch.manual_seed(seed)
    module = torch.nn.Conv2d(len(bands), POTSDAM.num_classes, kernel_size=1)
    return PredictModel(
        module=module,
        bands=bands,
        mean=(128.0,) * len(bands),
        std=(64.0,) * len(bands),
        schema=POTSDAM,
        tile_size=512,
        gsd=BENCH_GSD,
        name="tiny",
    )


def _bench_checkpoint(cache: Path, name: str, tile_size: int) -> Path:
    """An untrained checkpoint of architecture ``name`` (cached)."""
    from geoseg.checkpoint import Checkpoint, save_checkpoint

    path = cache / f"untrained_{name}_{len(BENCH_BANDS)}b_{tile_size}.pt"
    if path.exists():
        return path
    ckpt = Checkpoint.untrained(
        name,
        bands=BENCH_BANDS,
        mean=(100.0, 100.0, 100.0, 120.0, 3.0),
        std=(50.0, 50.0, 50.0, 50.0, 5.0),
        schema=POTSDAM,
        tile_size=tile_size,
        gsd=BENCH_GSD,
        config={"note": "untrained, for benchmarks"},
    )
    save_checkpoint(ckpt, path, overwrite=True)
    return path


# -- measurements ------------------------------------------------------------------------------


def _model_throughput(
    model: PredictModel,
    *,
    device: str,
    precision: str,
    batch_size: int,
    tile: int,
    min_seconds: float,
) -> tuple[float, float]:
    """(a): tile Mpx/s of the model alone on device-resident tensors, and the seconds."""
    import torch

    dev = torch.device(device)
    module = model.module.eval().to(dev)
    if dev.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, len(model.bands), tile, tile, device=dev)
    if dev.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        with (
            torch.inference_mode(),
            torch.autocast(dev.type, dtype=dtype, enabled=precision == "bf16"),
        ):
            torch.softmax(module(x).float(), dim=1)

    step()
    _sync(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        _sync(dev)
        if time.perf_counter() - t0 >= min_seconds and n >= 3:
            break
    dt = time.perf_counter() - t0
    return n * batch_size * tile * tile / dt / 1e6, dt


def _sync(dev: torch.device) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _read_throughput(
    spec: SceneSpec, model: PredictModel, *, tile: int, overlap: int, block: int, workers: int
) -> tuple[float, float]:
    """(b): scene Mpx/s of reading every tile row through the prediction's reader."""
    with spec.open() as scene:
        shape = scene.geobox.shape
    plan = plan_blocks(shape, tile_size=tile, overlap=overlap, block_size=block)

    def read_block(b: tuple[int, int]) -> int:
        n = 0
        for _strip, data, _valid, _s in iter_tile_rows(
            spec, plan.tile_rows(b), bands=model.bands, mean=model.mean, std=model.std
        ):
            n += data.shape[1] * data.shape[2]
        return n

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(read_block, plan.blocks))
    dt = time.perf_counter() - t0
    return shape[0] * shape[1] / dt / 1e6, dt


def bench_predict(
    *,
    size: int = 12000,
    model: str = "fcn_resnet50",
    device: Literal["auto", "cpu", "cuda"] = "auto",
    batch_size: int | None = None,
    precision: Literal["auto", "bf16", "fp32"] = "auto",
    cache: str | os.PathLike[str] | None = None,
    tile_size: int = 512,
    overlap: int = 128,
    block_size: int = 2048,
    workers: int = 2,
    min_model_seconds: float = 3.0,
) -> BenchReport:
    """Benchmark model, reads and end-to-end prediction on a synthetic scene.

    Args:
        size: Scene edge in pixels.
        model: A registered architecture (:mod:`geoseg.models`) saved as an untrained
            checkpoint, or ``tiny`` (a 1x1 convolution, for I/O measurements).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Tiles per model call (None: 32 on CUDA, 4 on the CPU).
        precision: ``auto``, ``bf16`` or ``fp32``.
        cache: Folder for the synthetic scene and checkpoint (default: a temporary folder
            removed afterwards).
        tile_size: Tile edge.
        overlap: Tile overlap.
        block_size: Output block size.
        workers: Threads of the local scheduler and of the read benchmark.
        min_model_seconds: Minimum duration of the model-only measurement.

    Returns:
        The measurements.

    Raises:
        InputError: Unknown model name, no CUDA device for ``cuda``, or a bad size.
    """
    from geoseg.predict import _resolve_batch_size, _resolve_device, _resolve_precision

    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    bs = _resolve_batch_size(batch_size, dev)
    own_cache = cache is None
    root = Path(tempfile.mkdtemp(prefix="geoseg-bench-")) if cache is None else Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        if model == "tiny":
            pm = tiny_model()
            spec = bench_scene(root, size, dsm=False)
            model_arg: str | PredictModel = pm
        else:
            ckpt = _bench_checkpoint(root, model, tile_size)
            pm = PredictModel.from_checkpoint(ckpt)
            spec = bench_scene(root, size, dsm=True)
            model_arg = str(ckpt)
        seconds["setup"] = time.perf_counter() - t0
        with spec.open() as scene:
            shape = scene.geobox.shape
        plan = plan_blocks(shape, tile_size=tile_size, overlap=overlap, block_size=block_size)
        factor = plan.n_tiles * tile_size * tile_size / (shape[0] * shape[1])
        tile_mpx, seconds["model"] = _model_throughput(
            pm,
            device=dev,
            precision=prec,
            batch_size=bs,
            tile=tile_size,
            min_seconds=min_model_seconds,
        )
        pm.module.to("cpu")
        read_mpx, seconds["read"] = _read_throughput(
            spec, pm, tile=tile_size, overlap=overlap, block=block_size, workers=workers
        )
        if dev == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        out = Path(tempfile.mkdtemp(prefix="e2e-", dir=root))
        try:
            t0 = time.perf_counter()
            predict_scenes(
                [spec],
                model_arg,
                out,
                options=PredictOptions(
                    tile_size=tile_size,
                    overlap=overlap,
                    batch_size=bs,
                    device=dev,  # type: ignore[arg-type]
                    precision=prec,  # type: ignore[arg-type]
                    block_size=block_size,
                    workers=workers,
                ),
            )
            seconds["e2e"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        e2e = shape[0] * shape[1] / seconds["e2e"] / 1e6
        model_mpx = tile_mpx / factor
        cuda_mb = None
        if dev == "cuda":
            import torch

            cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        return BenchReport(
            size=size,
            model=model,
            device=dev,
            precision=prec,
            batch_size=bs,
            tile_size=tile_size,
            overlap=overlap,
            tiles=plan.n_tiles,
            model_mpx_s=model_mpx,
            model_tile_mpx_s=tile_mpx,
            read_mpx_s=read_mpx,
            e2e_mpx_s=e2e,
            ratio=e2e / min(model_mpx, read_mpx),
            peak_rss_mb=_peak_rss_mb(),
            cuda_max_allocated_mb=cuda_mb,
            seconds={k: round(v, 3) for k, v in seconds.items()},
        )
    finally:
        if own_cache:
            shutil.rmtree(root, ignore_errors=True)


def _memory_line(peak_rss_mb: float, cuda_mb: float | None) -> str:
    cuda = "" if cuda_mb is None else f", CUDA max allocated {cuda_mb:.0f} MiB"
    return f"peak RSS {peak_rss_mb:.0f} MiB{cuda}"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process since its ``exec`` (MiB)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure_predict_memory(
    size: int,
    *,
    cache: str | os.PathLike[str],
    block_size: int = 2048,
    tile_size: int = 512,
    overlap: int = 128,
    workers: int = 2,
    batch_size: int = 4,
    probabilities: bool = False,
) -> MemoryReport:
    """Peak RSS of predicting a synthetic ``size`` px scene with :func:`tiny_model`.

    The scene is synthesised (or reused) in this process first; the prediction runs in a
    fresh child process, which reports its own peak RSS (``VmHWM``, reset by ``exec``;
    the rusage ``ru_maxrss`` of a child would include the forked parent's pages).

    Args:
        size: Scene edge in pixels.
        cache: Folder for the synthetic scene and the outputs.
        block_size: Output block size.
        tile_size: Tile edge.
        overlap: Tile overlap.
        workers: Threads of the local scheduler.
        batch_size: Tiles per model call.
        probabilities: Also write probabilities.
    """
    root = Path(cache)
    spec = bench_scene(root, size, dsm=False)
    out = root / f"mem_out_{size}_{block_size}"
    shutil.rmtree(out, ignore_errors=True)
    args = {
        "image": str(spec.image),
        "out": str(out),
        "block_size": block_size,
        "tile_size": tile_size,
        "overlap": overlap,
        "workers": workers,
        "batch_size": batch_size,
        "probabilities": probabilities,
    }
    code = (
        "import sys, json; from geoseg.bench import _memory_child; "
        "_memory_child(json.loads(sys.argv[1]))"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise InputError(f"the memory measurement for size {size} failed (exit {proc.returncode})")
    report = json.loads((out / "memory.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return MemoryReport(
        size=size,
        peak_rss_mb=float(report["peak_rss_mb"]),
        seconds=seconds,
        blocks=int(report["blocks"]),
        tiles=int(report["tiles"]),
        block_size=block_size,
    )


def _memory_child(args: dict[str, object]) -> None:
    """Entry point of the child process of :func:`measure_predict_memory`."""
    spec = SceneSpec(id="mem", image=Path(str(args["image"])), image_bands=IMAGE_BANDS)
    out = Path(str(args["out"]))
    reports = predict_scenes(
        [spec],
        tiny_model(),
        out,
        options=PredictOptions(
            tile_size=int(args["tile_size"]),  # type: ignore[call-overload]
            overlap=int(args["overlap"]),  # type: ignore[call-overload]
            block_size=int(args["block_size"]),  # type: ignore[call-overload]
            workers=int(args["workers"]),  # type: ignore[call-overload]
            batch_size=int(args["batch_size"]),  # type: ignore[call-overload]
            device="cpu",
            probabilities=bool(args["probabilities"]),
        ),
    )
    r = reports[0]
    summary = {"blocks": r.blocks, "tiles": r.tiles, "peak_rss_mb": _peak_rss_mb()}
    (out / "memory.json").write_text(json.dumps(summary))


# -- training throughput ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrainBenchReport:
    """Throughput of each stage of training (chips per second).

    Attributes:
        model: Architecture.
        device: Device used.
        precision: ``bf16`` (autocast, CUDA) or ``fp32``.
        batch_size: Chips per step.
        chip_size: Chip edge (pixels).
        chips: Chips in the synthetic store (one epoch).
        workers: DataLoader worker processes.
        model_chips_s: (a) training steps (forward, backward, optimiser) on a batch already
            on the device.
        loader_chips_s: (b) the training DataLoader alone (reads, crops, D4 augmentation,
            normalisation, collation, pinning on CUDA), warm workers.
        e2e_chips_s: (c) :func:`geoseg.train.train`, its last epoch.
        epoch_seconds: Duration of that epoch.
        data_wait_fraction: Share of that epoch's step time spent waiting for a batch.
        ratio: ``e2e / min(model, loader)``.
        peak_rss_mb: Peak resident memory of this process (MiB).
        cuda_max_allocated_mb: Peak CUDA memory allocated by torch (MiB), None on the CPU.
        seconds: Wall time of each measurement.
    """

    model: str
    device: str
    precision: str
    batch_size: int
    chip_size: int
    chips: int
    workers: int
    model_chips_s: float
    loader_chips_s: float
    e2e_chips_s: float
    epoch_seconds: float
    data_wait_fraction: float
    ratio: float
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None
    seconds: dict[str, float]

    def summary(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        return [
            f"{self.model} on {self.device} ({self.precision}), batch {self.batch_size}, "
            f"{self.chip_size} px chips, {self.chips} chips per epoch, {self.workers} loader "
            "worker(s)",
            f"(a) training steps : {self.model_chips_s:9.2f} chips/s",
            f"(b) data loader    : {self.loader_chips_s:9.2f} chips/s",
            f"(c) train epoch    : {self.e2e_chips_s:9.2f} chips/s "
            f"({self.epoch_seconds:.1f} s per epoch, "
            f"{100 * self.data_wait_fraction:.1f} % of step time waiting for data)",
            f"e2e / min(a, b) = {self.ratio:.2f}",
            _memory_line(self.peak_rss_mb, self.cuda_max_allocated_mb),
        ]


def bench_train(
    *,
    model: str = "fcn_resnet50",
    device: Literal["auto", "cpu", "cuda"] = "auto",
    batch_size: int | None = None,
    chip_size: int = 512,
    scenes: int = 4,
    scene_size: int = 2048,
    workers: int = 2,
    epochs: int = 2,
    cache: str | os.PathLike[str] | None = None,
    min_model_seconds: float = 3.0,
) -> TrainBenchReport:
    """Benchmark training steps, the data loader and real epochs on synthetic chips.

    Synthesises (and caches) ``scenes`` Potsdam-like scenes (:mod:`geoseg.synth`), tiles them
    into ``chip_size`` chips without overlap, then measures (a) training steps on a
    device-resident batch, (b) the training DataLoader alone and (c) ``epochs`` epochs of
    :func:`geoseg.train.train` without validation, reporting the last (warm) epoch.

    Args:
        model: A registered architecture (:mod:`geoseg.models`).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Chips per step (None: 16 on CUDA, 4 on the CPU).
        chip_size: Chip edge in pixels (5 cm).
        scenes: Synthetic scenes in the store.
        scene_size: Their edge in pixels.
        workers: DataLoader worker processes.
        epochs: Epochs of the end-to-end run (>= 2 so that the last one is warm).
        cache: Folder for the scenes and chips (default: a temporary folder removed
            afterwards).
        min_model_seconds: Minimum duration of the training-step measurement.

    Raises:
        InputError: Unknown model, no CUDA device for ``cuda``, or sizes that give no chip.
    """
    import torch

    from geoseg.train import TrainConfig, _resolve_device, train

    dev = _resolve_device(device)
    bs = batch_size or (16 if dev.type == "cuda" else 4)
    if chip_size > scene_size:
        raise InputError(f"chip_size={chip_size} exceeds scene_size={scene_size}")
    own_cache = cache is None
    root = Path(tempfile.mkdtemp(prefix="geoseg-bench-")) if cache is None else Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        store = _bench_store(root, scenes=scenes, scene_size=scene_size, chip=chip_size)
        seconds["setup"] = time.perf_counter() - t0
        chips = _store_chips(store)
        model_chips_s, seconds["model"] = _train_step_throughput(
            model, dev, batch_size=bs, chip=chip_size, min_seconds=min_model_seconds
        )
        loader_chips_s, seconds["loader"] = _loader_throughput(
            chips, batch_size=bs, workers=workers, cuda=dev.type == "cuda"
        )
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out = Path(tempfile.mkdtemp(prefix="train-", dir=root))
        try:
            t0 = time.perf_counter()
            report = train(
                store,
                out / "model.pt",
                config=TrainConfig(
                    model=model,
                    epochs=max(2, epochs),
                    batch_size=bs,
                    val_fraction=0.0,
                    device=dev.type,  # type: ignore[arg-type]
                    workers=workers,
                ),
            )
            seconds["e2e"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        last = report.history[-1]
        e2e = float(last["chips_per_s"])
        cuda_mb = None
        if dev.type == "cuda":
            cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        return TrainBenchReport(
            model=model,
            device=dev.type,
            precision="bf16" if dev.type == "cuda" else "fp32",
            batch_size=bs,
            chip_size=chip_size,
            chips=len(chips),
            workers=workers,
            model_chips_s=model_chips_s,
            loader_chips_s=loader_chips_s,
            e2e_chips_s=e2e,
            epoch_seconds=float(last["train_seconds"]),
            data_wait_fraction=float(last["data_wait_fraction"]),
            ratio=e2e / min(model_chips_s, loader_chips_s),
            peak_rss_mb=_peak_rss_mb(),
            cuda_max_allocated_mb=cuda_mb,
            seconds={k: round(v, 3) for k, v in seconds.items()},
        )
    finally:
        if own_cache:
            shutil.rmtree(root, ignore_errors=True)


def _bench_store(root: Path, *, scenes: int, scene_size: int, chip: int) -> Path:
    """A labelled tile store of synthetic scenes (cached by its parameters)."""
    from geoseg.scene import list_potsdam_ids, potsdam_scene
    from geoseg.synth import synthesize
    from geoseg.tiles import TileOptions, tile_scenes

    store = root / f"train_tiles_{scenes}x{scene_size}_{chip}"
    if (store / "index.gpkg").exists():  # written last: the store is complete
        return store
    folder = root / f"train_scenes_{scenes}x{scene_size}"
    if not folder.is_dir():  # synthesize() renames the folder into place when complete
        synthesize(folder, scenes=scenes, size=scene_size, seed=0)
    tile_scenes(  # resumes an interrupted store
        [potsdam_scene(folder, sid) for sid in list_potsdam_ids(folder)],
        store,
        options=TileOptions(size=chip, overlap=0, min_valid=0.5),
        workers=2,
    )
    return store


def _store_chips(store: Path) -> list[Path]:
    from geoseg.tiles import read_store

    _, index = read_store(store)
    if index.empty:
        raise InputError(f"{store}: the synthetic store has no chip; use a larger scene size")
    return [store / p for p in sorted(index["path"])]


def _train_step_throughput(
    name: str, dev: torch.device, *, batch_size: int, chip: int, min_seconds: float
) -> tuple[float, float]:
    """(a): chips/s of full training steps on a batch that is already on the device."""
    import torch

    from geoseg.losses import build_loss
    from geoseg.models import build_model, model_spec
    from geoseg.train import _train_step

    spec = model_spec(name, in_channels=len(BENCH_BANDS), num_classes=POTSDAM.num_classes)
    torch.manual_seed(0)
    net = build_model(spec["name"], **spec["args"]).to(dev)
    x = torch.randn(batch_size, len(BENCH_BANDS), chip, chip, device=dev)
    y = torch.randint(0, POTSDAM.num_classes, (batch_size, chip, chip), device=dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = x.contiguous(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    loss_fn = build_loss("ce+dice", num_classes=POTSDAM.num_classes).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    net.train()

    def step() -> None:
        _train_step(net, x, y, loss_fn=loss_fn, opt=opt, device=dev).item()  # synchronises

    step()
    step()
    n, t0 = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if time.perf_counter() - t0 >= min_seconds and n >= 3:
            break
    dt = time.perf_counter() - t0
    return n * batch_size / dt, dt


def _loader_throughput(
    chips: list[Path], *, batch_size: int, workers: int, cuda: bool
) -> tuple[float, float]:
    """(b): chips/s of the training DataLoader (second pass: its workers are warm)."""
    from geoseg.data import ChipDataset, SeededSampler
    from geoseg.train import _loader

    ds = ChipDataset(chips, num_classes=POTSDAM.num_classes, augment=True)
    ds.set_normalisation((100.0,) * len(BENCH_BANDS), (50.0,) * len(BENCH_BANDS))
    loader = _loader(
        ds,
        SeededSampler(len(ds), seed=0, shuffle=True),
        batch_size=batch_size,
        workers=workers,
        cuda=cuda,
        seed=0,
    )
    for _ in loader:  # start the workers, fill the page cache
        pass
    n, t0 = 0, time.perf_counter()
    for x, _y in loader:
        n += int(x.shape[0])
    dt = time.perf_counter() - t0
    return n / dt, dt
