"""Benchmark of training: throughput of each stage, in chips per second.

:func:`bench_train` measures (a) training steps (forward, backward, optimiser) on a
device-resident batch, (b) the training DataLoader alone, (c) real epochs of
:func:`geoseg.train.train`, with the share of step time spent waiting for data. It times
the very code that trains (:func:`geoseg.train.train_step`, :func:`geoseg.train.make_loader`)
on a small labelled store of :mod:`geoseg.synth` scenes (:func:`bench_store`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg._torch import torch_device
from geoseg.bench._memory import memory_line, peak_rss_mb
from geoseg.bench.scene import BENCH_BANDS
from geoseg.errors import InputError
from geoseg.options import Device
from geoseg.schema import POTSDAM

if TYPE_CHECKING:
    import torch

__all__ = ["TrainBenchReport", "bench_store", "bench_train"]


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
            memory_line(self.peak_rss_mb, self.cuda_max_allocated_mb),
        ]


def bench_train(
    *,
    model: str = "fcn_resnet50",
    device: Device = "auto",
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
        InputError: Unknown model, or sizes that give no chip.
        ConfigError: No CUDA device for ``cuda``.
    """
    import torch

    from geoseg.train import TrainConfig, train

    dev: torch.device = torch_device(device)
    bs = batch_size or (16 if dev.type == "cuda" else 4)
    if chip_size > scene_size:
        raise InputError(f"chip_size={chip_size} exceeds scene_size={scene_size}")
    own_cache = cache is None
    root = Path(tempfile.mkdtemp(prefix="geoseg-bench-")) if cache is None else Path(cache)
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        store = bench_store(root, scenes=scenes, scene_size=scene_size, chip=chip_size)
        seconds["setup"] = time.perf_counter() - t0
        chips = _store_chips(store)
        model_chips_s, seconds["model"] = _train_step_throughput(
            model, dev, batch_size=bs, chip=chip_size, min_seconds=min_model_seconds
        )
        loader_chips_s, seconds["loader"] = _loader_throughput(
            chips, batch_size=bs, workers=workers, cuda=dev.type == "cuda"
        )
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
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
                    device=dev.type,
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
            cuda_mb = torch.cuda.max_memory_allocated(dev) / 2**20
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
            peak_rss_mb=peak_rss_mb(),
            cuda_max_allocated_mb=cuda_mb,
            seconds={k: round(v, 3) for k, v in seconds.items()},
        )
    finally:
        if own_cache:
            shutil.rmtree(root, ignore_errors=True)


def bench_store(root: Path, *, scenes: int, scene_size: int, chip: int) -> Path:
    """A labelled tile store of synthetic scenes (cached by its parameters).

    Args:
        root: The cache folder.
        scenes: Synthetic scenes (:func:`geoseg.synth.synthesize`, seed 0).
        scene_size: Their edge in pixels.
        chip: Chip edge in pixels (no overlap).

    Returns:
        The store; a store whose tiling was interrupted is completed.
    """
    from geoseg.options import TileOptions
    from geoseg.raster import list_potsdam_ids, potsdam_scene
    from geoseg.synth import synthesize
    from geoseg.tiles import tile_scenes

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
    from geoseg.train import adamw_fused, train_step

    spec = model_spec(name, in_channels=len(BENCH_BANDS), num_classes=POTSDAM.num_classes)
    torch.manual_seed(0)
    net = build_model(spec["name"], **spec["args"]).to(dev)
    x = torch.randn(batch_size, len(BENCH_BANDS), chip, chip, device=dev)
    y = torch.randint(0, POTSDAM.num_classes, (batch_size, chip, chip), device=dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    loss_fn = build_loss("ce+dice", num_classes=POTSDAM.num_classes).to(dev)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=adamw_fused(dev, params))  # as train does
    net.train()

    def step() -> None:
        train_step(net, x, y, loss_fn=loss_fn, opt=opt, device=dev)  # no sync: as train does

    step()
    step()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(5):  # steps queue up on the device; the timer waits once per five
            step()
        n += 5
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if time.perf_counter() - t0 >= min_seconds and n >= 5:
            break
    dt = time.perf_counter() - t0
    return n * batch_size / dt, dt


def _loader_throughput(
    chips: list[Path], *, batch_size: int, workers: int, cuda: bool
) -> tuple[float, float]:
    """(b): chips/s of the training DataLoader (second pass: its workers are warm)."""
    from geoseg.data import ChipDataset, SeededSampler
    from geoseg.train import make_loader

    ds = ChipDataset(chips, num_classes=POTSDAM.num_classes, augment=True)
    ds.set_normalisation((100.0,) * len(BENCH_BANDS), (50.0,) * len(BENCH_BANDS))
    loader = make_loader(
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
