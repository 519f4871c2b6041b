"""Benchmarks of prediction: throughput of each stage, and peak memory.

:func:`bench_predict` synthesises (and caches) a Potsdam-like scene
(:func:`~geoseg.bench.scene.bench_scene`), saves an untrained checkpoint of the requested
architecture, and measures

(a) model-only throughput on device-resident tensors, at the same model, batch size,
    precision and tile size as the prediction;
(b) read throughput of the scene through the prediction's reader (one windowed read per
    block, as stored, the derived nDSM included), with the same number of threads;
(c) end-to-end prediction (:func:`geoseg.predict.predict_scenes`, COG writing included);

all in scene megapixels per second (a) counts the tile overlap: the model processes
``tiles * tile_size**2`` pixels per scene), the ratio ``e2e / min(a, b)`` (how close the
pipeline gets to its slowest stage) and the peak memory (RSS, and CUDA max allocated).

:func:`measure_predict_memory` runs a prediction in a child process
(:func:`memory_child`) and reports that process's peak RSS, so that scene sizes can be
compared (the memory bound says a 24000 px scene must stay within 1.3 x of a 6000 px one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg._torch import is_cuda, resolve_batch_size, resolve_device, resolve_precision
from geoseg.bench._memory import memory_line, peak_rss_mb
from geoseg.bench.host import GpuUtil, HostCost, host_cost
from geoseg.bench.scene import BENCH_BANDS, IMAGE_BANDS, bench_checkpoint, bench_scene, tiny_model
from geoseg.blocks import plan_blocks
from geoseg.errors import InputError
from geoseg.options import Device, Precision, resolve_overlap
from geoseg.predict import PredictModel, PredictOptions, predict_scenes, read_block_area
from geoseg.raster import SceneSpec

if TYPE_CHECKING:
    import torch

__all__ = [
    "BenchReport",
    "MemoryReport",
    "bench_predict",
    "measure_predict_memory",
    "memory_child",
]


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
        overlap: Tile overlap; None: a quarter of the tile
            (:func:`geoseg.options.default_overlap`), as ``geoseg predict``.
        tiles: Tiles in the plan.
        model_mpx_s: (a) model only, scene Mpx/s (tile Mpx/s divided by the overlap factor).
        model_tile_mpx_s: (a) model only, tile pixels per second (Mpx/s).
        read_mpx_s: (b) reads through the prediction's reader path, scene Mpx/s.
        e2e_mpx_s: (c) end-to-end prediction, scene Mpx/s.
        ratio: ``e2e / min(model, read)``.
        host: (d) what the host spends per scene Mpx with the 1x1 model on the same
            image+DSM scene, beside the raw-read floor (:class:`HostCost`).
        seams: The seam score of the end-to-end run (its sidecar's ``seam_score``).
        gpu_util: Mean GPU utilisation (%) during the end-to-end run (CUDA with NVML),
            else None.
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
    host: HostCost
    seams: dict[str, float | int | None]
    gpu_util: float | None
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None
    seconds: dict[str, float]
    compile: bool = False

    def summary(self) -> list[str]:
        """Human-readable lines (the CLI prints them)."""
        return [
            f"scene {self.size}x{self.size} px, {self.model} on {self.device} ({self.precision}), "
            f"batch {self.batch_size}, tile {self.tile_size}/{self.overlap}, {self.tiles} tiles",
            f"(a) model only : {self.model_mpx_s:9.2f} Mpx/s scene "
            f"({self.model_tile_mpx_s:.2f} Mpx/s of tile pixels)",
            f"(b) reads      : {self.read_mpx_s:9.2f} Mpx/s",
            f"(c) end-to-end : {self.e2e_mpx_s:9.2f} Mpx/s",
            f"e2e / min(a, b) = {self.ratio:.2f}"
            + ("" if self.gpu_util is None else f", GPU utilisation {self.gpu_util:.0f} %")
            + (f", compile warm-up {self.seconds.get('warmup', 0.0):.1f}s" if self.compile else ""),
            *self.host.summary(),
            "seam score     : border/interior class disagreement = "
            f"{self.seams.get('ratio')} ({self.seams.get('border_disagreement')} vs "
            f"{self.seams.get('interior_disagreement')})",
            memory_line(self.peak_rss_mb, self.cuda_max_allocated_mb),
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


# -- measurements ----------------------------------------------------------------------------


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
        _area, raw, _s = read_block_area(spec, plan, b, bands=model.bands)
        return int(raw.valid.size)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(read_block, plan.blocks))
    dt = time.perf_counter() - t0
    return shape[0] * shape[1] / dt / 1e6, dt


def bench_predict(
    *,
    size: int = 12000,
    model: str = "fcn_resnet50",
    device: Device = "auto",
    batch_size: int | None = None,
    precision: Precision = "auto",
    cache: str | os.PathLike[str] | None = None,
    tile_size: int = 512,
    overlap: int | None = None,
    block_size: int = 2048,
    workers: int = 2,
    min_model_seconds: float = 3.0,
    compile: bool = False,
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
        overlap: Tile overlap; None: a quarter of the tile
            (:func:`geoseg.options.default_overlap`), as ``geoseg predict``.
        block_size: Output block size.
        workers: Threads of the local scheduler and of the read benchmark.
        min_model_seconds: Minimum duration of the model-only measurement.
        compile: ``torch.compile`` the model in (c) (CUDA; its warm-up is reported).

    Returns:
        The measurements.

    Raises:
        InputError: Unknown model name or a bad size.
        ConfigError: No CUDA device for ``cuda``, or an overlap not smaller than the tile.
    """
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    bs = resolve_batch_size(batch_size, dev)
    overlap = resolve_overlap(tile_size, overlap)
    own_cache = cache is None
    root = Path(tempfile.mkdtemp(prefix="geoseg-bench-")) if cache is None else Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        spec = bench_scene(root, size, dsm=True)  # image + DSM: the model reads the nDSM
        if model == "tiny":
            pm = tiny_model(BENCH_BANDS)
            model_arg: str | PredictModel = pm
        else:
            ckpt = bench_checkpoint(root, model, tile_size)
            pm = PredictModel.from_checkpoint(ckpt)
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
        if is_cuda(dev):
            import torch

            torch.cuda.reset_peak_memory_stats(dev)
        out = Path(tempfile.mkdtemp(prefix="e2e-", dir=root))
        util = GpuUtil(dev)
        try:
            t0 = time.perf_counter()
            (rep,) = predict_scenes(
                [spec],
                model_arg,
                out,
                options=PredictOptions(
                    tile_size=tile_size,
                    overlap=overlap,
                    batch_size=bs,
                    device=dev,
                    precision=prec,  # type: ignore[arg-type]
                    block_size=block_size,
                    workers=workers,
                    compile=compile,
                ),
            )
            seconds["e2e"] = time.perf_counter() - t0
            side = json.loads(rep.sidecar.read_text())
            seconds["warmup"] = float(side["resolved"]["compile_warmup_s"])
        finally:
            gpu_util = util.stop()
            shutil.rmtree(out, ignore_errors=True)
        host = host_cost(
            spec, root, device=dev, workers=workers, tile_size=tile_size, overlap=overlap
        )
        seconds["host"] = host.seconds
        e2e = shape[0] * shape[1] / seconds["e2e"] / 1e6
        model_mpx = tile_mpx / factor
        cuda_mb = None
        if is_cuda(dev):
            import torch

            cuda_mb = torch.cuda.max_memory_allocated(dev) / 2**20
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
            host=host,
            seams=side["seam_score"],
            gpu_util=gpu_util,
            compile=compile,
            peak_rss_mb=peak_rss_mb(),
            cuda_max_allocated_mb=cuda_mb,
            seconds={k: round(v, 3) for k, v in seconds.items()},
        )
    finally:
        if own_cache:
            shutil.rmtree(root, ignore_errors=True)


def measure_predict_memory(
    size: int,
    *,
    cache: str | os.PathLike[str],
    block_size: int = 2048,
    tile_size: int = 512,
    overlap: int | None = None,
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
        overlap: Tile overlap; None: a quarter of the tile
            (:func:`geoseg.options.default_overlap`), as ``geoseg predict``.
        workers: Threads of the local scheduler.
        batch_size: Tiles per model call.
        probabilities: Also write probabilities.
    """
    overlap = resolve_overlap(tile_size, overlap)
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
        "import sys, json; from geoseg.bench.predict import memory_child; "
        "memory_child(json.loads(sys.argv[1]))"
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


def memory_child(args: dict[str, object]) -> None:
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
    summary = {"blocks": r.blocks, "tiles": r.tiles, "peak_rss_mb": peak_rss_mb()}
    (out / "memory.json").write_text(json.dumps(summary))
