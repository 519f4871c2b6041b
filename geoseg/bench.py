"""Benchmarks of whole-scene prediction: throughput of each stage, and peak memory.

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

The synthetic scene is a fast procedural generator (blocks of "buildings", roads, noisy
vegetation, a DSM), written strip by strip in bounded memory, not :mod:`geoseg.synth`,
whose full-resolution polygon rendering is too slow at these sizes. ``tiny`` is a
1x1-convolution model for I/O and memory measurements.
"""

from __future__ import annotations

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
    "bench_predict",
    "bench_scene",
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
        cuda = (
            f", CUDA max allocated {self.cuda_max_allocated_mb:.0f} MiB"
            if self.cuda_max_allocated_mb is not None
            else ""
        )
        return [
            f"scene {self.size}x{self.size} px, {self.model} on {self.device} ({self.precision}), "
            f"batch {self.batch_size}, tile {self.tile_size}/{self.overlap}, {self.tiles} tiles",
            f"(a) model only : {self.model_mpx_s:9.2f} Mpx/s scene "
            f"({self.model_tile_mpx_s:.2f} Mpx/s of tile pixels)",
            f"(b) reads      : {self.read_mpx_s:9.2f} Mpx/s",
            f"(c) end-to-end : {self.e2e_mpx_s:9.2f} Mpx/s",
            f"e2e / min(a, b) = {self.ratio:.2f}",
            f"peak RSS {self.peak_rss_mb:.0f} MiB{cuda}",
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
    with atomic_path(image, overwrite=True) as tmp_img:
        with rasterio.open(
            tmp_img, "w", count=4, dtype="uint8", compress="packbits", **common
        ) as di:
            dd = None
            tmp_dsm = dsm_path.with_name(".dsm.partial.tif")
            if dsm:
                dd = rasterio.open(
                    tmp_dsm, "w", count=1, dtype="float32", compress="lzw", predictor=3, **common
                )
            try:
                for r0 in range(0, size, _STRIP):
                    h = min(_STRIP, size - r0)
                    img, elev = _synth_strip(r0, h, size, seed)
                    di.write(img, window=Window(0, r0, size, h))
                    if dd is not None:
                        dd.write(elev, 1, window=Window(0, r0, size, h))
            finally:
                if dd is not None:
                    dd.close()
            if dsm:
                os.replace(tmp_dsm, dsm_path)
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
    from geoseg.predict import _resolve_device, _resolve_precision

    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    bs = batch_size or (32 if dev == "cuda" else 4)
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
