"""``geoseg bench``: throughput and memory benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from geoseg.cli.options import (
    PositiveInt,
    batch_size_opt,
    check_overlap,
    device_opt,
    precision_opt,
    workers_opt,
)

F = TypeVar("F", bound=Callable[..., Any])


def _cache_opt(what: str) -> Callable[[F], F]:
    return click.option(
        "--cache",
        type=click.Path(file_okay=False),
        default=None,
        help=f"Keep {what} here (default: a temporary folder).",
    )


def _seconds_opt(what: str) -> Callable[[F], F]:
    return click.option(
        "--seconds",
        type=click.FloatRange(min=0.0),
        default=3.0,
        show_default=True,
        help=f"Minimum duration of the {what} measurement.",
    )


@click.group(short_help="Benchmarks (prediction and training throughput, memory).")
def bench() -> None:
    """Measure how fast and how lean prediction and training are on synthetic data.

    \b
    $ geoseg bench predict --size 12000 --model fcn_resnet50 --device cuda --cache ~/.bench
    $ geoseg bench memory --size 6000 --size 24000 --cache ~/.bench
    $ geoseg bench train --model fcn_resnet50 --device cuda --cache ~/.bench
    """


@bench.command("predict", short_help="Model, read and end-to-end prediction throughput.")
@click.option(
    "--size", type=PositiveInt(64), default=12000, show_default=True, help="Scene edge (px)."
)
@click.option(
    "--model",
    default="fcn_resnet50",
    show_default=True,
    help="Registered architecture (untrained), or 'tiny' (a 1x1 convolution).",
)
@device_opt
@batch_size_opt
@precision_opt
@click.option(
    "--tile-size",
    type=PositiveInt(16),
    default=512,
    show_default=True,
    is_eager=True,  # known when --overlap is checked
    help="Tile edge.",
)
@click.option(
    "--overlap",
    type=PositiveInt(0),
    default=128,
    show_default=True,
    callback=check_overlap,
    help="Tile overlap.",
)
@click.option(
    "--block-size", type=PositiveInt(64), default=2048, show_default=True, help="Block edge."
)
@_cache_opt("the synthetic scene and checkpoint")
@_seconds_opt("model-only")
@workers_opt
def bench_predict_cmd(
    size: int,
    model: str,
    device: str,
    batch_size: int | None,
    precision: str,
    tile_size: int,
    overlap: int,
    block_size: int,
    cache: str | None,
    seconds: float,
    workers: int,
) -> None:
    """Measure model, read and end-to-end throughput on a synthetic scene.

    (a) the model alone on device-resident tensors, (b) reads through the same reader path,
    (c) end-to-end prediction, all in scene Mpx/s; the ratio e2e / min(a, b); peak memory.

    \b
    $ geoseg bench predict --size 12000 --model fcn_resnet50 --device cuda --batch-size 32
    $ geoseg bench predict --size 2048 --model tiny --device cpu
    """
    from geoseg.bench import bench_predict

    report = bench_predict(
        size=size,
        model=model,
        device=device,  # type: ignore[arg-type]
        batch_size=batch_size,
        precision=precision,  # type: ignore[arg-type]
        cache=cache,
        tile_size=tile_size,
        overlap=overlap,
        block_size=block_size,
        workers=workers,
        min_model_seconds=seconds,
    )
    for line in report.summary():
        click.echo(line)


@bench.command("memory", short_help="Peak RSS of prediction at several scene sizes.")
@click.option(
    "--size",
    "sizes",
    type=PositiveInt(64),
    multiple=True,
    default=(6000, 24000),
    show_default=True,
    help="Scene edge (repeatable).",
)
@click.option(
    "--block-size", type=PositiveInt(64), default=2048, show_default=True, help="Block edge."
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False),
    required=True,
    help="Folder for the synthetic scenes (several GB at 24000 px).",
)
@workers_opt
def bench_memory_cmd(sizes: tuple[int, ...], block_size: int, cache: str, workers: int) -> None:
    """Predict synthetic scenes with a tiny model in child processes; report peak RSS.

    \b
    $ geoseg bench memory --size 6000 --size 24000 --cache /data/bench
    """
    from geoseg.bench import measure_predict_memory

    first = None
    for s in sizes:
        r = measure_predict_memory(s, cache=cache, block_size=block_size, workers=workers)
        first = first or r.peak_rss_mb
        click.echo(
            f"{s}x{s} px: peak RSS {r.peak_rss_mb:.0f} MiB ({r.peak_rss_mb / first:.2f}x the "
            f"first), {r.blocks} blocks, {r.tiles} tiles, {r.seconds:.0f}s"
        )


@bench.command("train", short_help="Training step, data loader and epoch throughput.")
@click.option("--model", default="fcn_resnet50", show_default=True, help="Registered architecture.")
@device_opt
@click.option(
    "--batch-size",
    type=PositiveInt(1),
    default=None,
    show_default="16 on cuda, 4 on cpu",
    help="Chips per step.",
)
@click.option(
    "--chip-size", type=PositiveInt(32), default=512, show_default=True, help="Chip edge (px)."
)
@click.option(
    "--scenes", type=PositiveInt(1), default=4, show_default=True, help="Synthetic scenes."
)
@click.option(
    "--scene-size",
    type=PositiveInt(64),
    default=2048,
    show_default=True,
    help="Synthetic scene edge (px).",
)
@click.option(
    "--epochs", type=PositiveInt(2), default=2, show_default=True, help="Epochs of run (c)."
)
@_cache_opt("the synthetic scenes and chips")
@_seconds_opt("training-step")
@workers_opt
def bench_train_cmd(
    model: str,
    device: str,
    batch_size: int | None,
    chip_size: int,
    scenes: int,
    scene_size: int,
    epochs: int,
    cache: str | None,
    seconds: float,
    workers: int,
) -> None:
    """Measure training throughput on synthetic chips, and how long steps wait for data.

    (a) training steps on a batch already on the device, (b) the training data loader
    alone (DataLoader workers = --workers), (c) real epochs of `geoseg train` (the last one
    is reported, with the share of step time spent waiting for a batch); all in chips/s,
    and the ratio (c) / min(a, b).

    \b
    $ geoseg bench train --model fcn_resnet50 --device cuda --batch-size 16 --workers 8
    $ geoseg bench train --model fcn_resnet18 --device cpu --chip-size 256 --scene-size 1024
    """
    from geoseg.bench import bench_train

    if chip_size > scene_size:
        raise click.BadParameter(
            f"{chip_size} exceeds --scene-size ({scene_size})", param_hint="--chip-size"
        )
    report = bench_train(
        model=model,
        device=device,  # type: ignore[arg-type]
        batch_size=batch_size,
        chip_size=chip_size,
        scenes=scenes,
        scene_size=scene_size,
        workers=workers,
        epochs=epochs,
        cache=cache,
        min_model_seconds=seconds,
    )
    for line in report.summary():
        click.echo(line)
