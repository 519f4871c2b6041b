"""``geoseg bench``: throughput, memory and quality benchmarks (:mod:`geoseg.bench`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from geoseg.cli.options import (
    Number,
    PositiveInt,
    batch_size_opt,
    check_overlap,
    device_opt,
    device_type,
    precision_opt,
    record_option,
    workers_opt,
)
from geoseg.options import PredictOptions, VectorizeOptions

F = TypeVar("F", bound=Callable[..., Any])


def _check_cache(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from geoseg._io import check_output_path
    from geoseg.errors import OutputError

    if value is not None:
        try:
            check_output_path(value, kind="dir")
        except OutputError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _cache_opt(what: str) -> Callable[[F], F]:
    return click.option(
        "--cache",
        type=click.Path(file_okay=False),
        default=None,
        callback=_check_cache,
        help=f"Keep {what} here (default: a temporary folder).",
    )


def _seconds_opt(what: str) -> Callable[[F], F]:
    return click.option(
        "--seconds",
        type=Number(0.0),
        default=3.0,
        show_default=True,
        help=f"Minimum duration of the {what} measurement.",
    )


@click.group(short_help="Benchmarks (throughput, memory, training quality).")
def bench() -> None:
    """Measure how fast, how lean and how good geoseg is on synthetic data.

    \b
    $ geoseg bench predict --size 12000 --model fcn_resnet50 --device cuda --cache ~/.bench
    $ geoseg bench memory --size 6000 --size 24000 --cache ~/.bench
    $ geoseg bench train --model fcn_resnet50 --device cuda --cache ~/.bench
    $ geoseg bench quality --minutes 15
    $ geoseg bench vectorize --size 20000 --cache ~/.bench
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
# --size is the scene here; the bench makes its own checkpoint with a 512 px tile
@record_option(
    PredictOptions,
    "tile_size",
    flags=("--tile-size",),
    default=512,
    show_default=True,
    is_eager=True,
)
@record_option(PredictOptions, "overlap", callback=check_overlap)
@record_option(PredictOptions, "block_size")
@record_option(PredictOptions, "compile")
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
    overlap: int | None,
    block_size: int,
    compile: bool,
    cache: str | None,
    seconds: float,
    workers: int,
) -> None:
    """Measure model, read and end-to-end throughput on a synthetic scene.

    (a) the model alone on device-resident tensors, (b) reads through the same reader path,
    (c) end-to-end prediction, all in scene Mpx/s; the ratio e2e / min(a, b); the seam score;
    peak memory; (d) the host's CPU-ms per scene Mpx with a 1x1 model beside the read floor.

    \b
    $ geoseg bench predict --size 12000 --model fcn_resnet50 --device cuda --compile
    $ geoseg bench predict --size 6000 --model tiny --device cpu
    """
    from geoseg.bench import bench_predict

    report = bench_predict(
        size=size,
        model=model,
        device=device,
        batch_size=batch_size,
        precision=precision,  # type: ignore[arg-type]
        cache=cache,
        tile_size=tile_size,
        overlap=overlap,
        block_size=block_size,
        workers=workers,
        min_model_seconds=seconds,
        compile=compile,
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
        device=device,
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


@bench.command("quality", short_help="Training quality within a time budget (test mIoU).")
@click.option(
    "--minutes",
    type=Number(0.0, exclusive=True),
    default=15.0,
    show_default=True,
    help="Wall-time budget, all steps.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="bench_train",
    show_default=True,
    help="Work folder: scenes, tile stores, model and bench_train.json.",
)
@click.option(
    "--train-scenes", type=PositiveInt(1), default=12, show_default=True, help="Training scenes."
)
@click.option(
    "--test-scenes", type=PositiveInt(1), default=3, show_default=True, help="Test scenes."
)
@click.option(
    "--val-scenes",
    type=PositiveInt(0),
    default=1,
    show_default=True,
    help="Of the training scenes.",
)
@click.option(
    "--scene-size",
    type=PositiveInt(64),
    default=2048,
    show_default=True,
    help="Scene edge, 5 cm pixels.",
)
@click.option(
    "--chip",
    type=PositiveInt(16),
    default=1024,
    show_default=True,
    help="Store chip edge, 5 cm pixels.",
)
@click.option(
    "--overlap",
    type=PositiveInt(0),
    default=0,
    show_default=True,
    help="Training store chip overlap.",
)
@click.option(
    "--downsample",
    type=PositiveInt(1),
    default=4,
    show_default=True,
    help="Model GSD = 5 cm x this.",
)
@click.option(
    "--crop",
    type=PositiveInt(0),
    default=128,
    show_default=True,
    help="Training crop, model pixels (0: whole chips).",
)
@click.option("--model", default="unet", show_default=True, help="Registered architecture.")
@click.option(
    "--encoder",
    default="resnet18",
    show_default=True,
    help="Encoder of the smp models ('' for the model's default).",
)
@click.option(
    "--batch-size", type=PositiveInt(1), default=8, show_default=True, help="Chips per step."
)
@click.option(
    "--lr",
    type=Number(0.0, exclusive=True),
    default=3e-3,
    show_default=True,
    help="Peak learning rate.",
)
@click.option("--loss", default="ce+dice", show_default=True, help="Loss spec.")
@click.option(
    "--class-weights",
    type=click.Choice(["none", "median_frequency", "sqrt_median_frequency"]),
    default="none",
    show_default=True,
    help="Class weights of a wce loss term.",
)
@click.option(
    "--epochs",
    type=PositiveInt(1),
    default=None,
    show_default="as many as fit",
    help="Training epochs.",
)
@click.option(
    "--workers",
    type=PositiveInt(0),
    default=0,
    show_default=True,
    help="DataLoader worker processes.",
)
@click.option(
    "--device",
    type=device_type(),
    default="cpu",
    show_default=True,
    help="Training and test device.",
)
@click.option(
    "--threads",
    type=PositiveInt(1),
    default=None,
    show_default="all",
    help="torch threads.",
)
@click.option("--seed", type=PositiveInt(0), default=0, show_default=True, help="Training seed.")
def bench_quality_cmd(**params: Any) -> None:
    """Train on synthetic scenes within a time budget; score the model on unseen scenes.

    Synthesizes training scenes (seed 0) and test scenes (seed 1), tiles them, trains for
    as many epochs as fit in --minutes (timed on the CPU first), scores the best checkpoint
    on every test chip at 5 cm and writes WORKDIR/bench_train.json. Use -v to follow it.

    \b
    $ geoseg bench quality --minutes 15
    $ geoseg bench quality --device cuda --model fcn_resnet50 --encoder '' --downsample 1 \\
        --epochs 30 --workdir bench_gpu
    """
    from geoseg.bench import bench_quality

    if params["chip"] > params["scene_size"]:
        raise click.BadParameter(
            f"{params['chip']} exceeds --scene-size ({params['scene_size']})", param_hint="--chip"
        )
    if params["val_scenes"] >= params["train_scenes"]:
        raise click.BadParameter(
            f"{params['val_scenes']} leaves no training scene of --train-scenes "
            f"({params['train_scenes']}); use fewer",
            param_hint="--val-scenes",
        )
    report = bench_quality(**params)
    for line in report.summary():
        click.echo(line)


@bench.command("vectorize", short_help="Vectorize throughput and memory against a naive way.")
@click.option(
    "--size",
    type=PositiveInt(64),
    default=20000,
    show_default=True,
    help="Class map edge (px).",
)
@record_option(VectorizeOptions, "block_size")
@record_option(VectorizeOptions, "workers")
@click.option("--seed", type=PositiveInt(0), default=0, show_default=True, help="Data seed.")
@_cache_opt("the synthetic class map")
def bench_vectorize_cmd(
    size: int, block_size: int, workers: int, seed: int, cache: str | None
) -> None:
    """Vectorize a synthetic class map with geoseg and the naive way; compare speed and memory.

    geoseg's block-wise vectorize (buildings and roads) and the naive whole-raster
    rasterio.features.shapes + shapely run on the same raster, each in a child process;
    for each: Mpx/s and peak RSS (and geoseg's largest worker).

    \b
    $ geoseg bench vectorize --size 20000 --workers 2 --cache ~/.bench
    """
    from geoseg.bench import bench_vectorize

    report = bench_vectorize(
        size=size, block_size=block_size, workers=workers, seed=seed, cache=cache
    )
    for line in report.summary():
        click.echo(line)
