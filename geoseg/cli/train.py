"""``geoseg train``: train a segmentation model on a tile store."""

from __future__ import annotations

from typing import Any

import click

from geoseg.cli.options import (
    Fraction,
    Number,
    PositiveInt,
    device_opt,
    overwrite_opt,
    split_csv,
)
from geoseg.options import default_workers


def _check_model(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from geoseg.models import MODELS

    if value not in MODELS:
        raise click.BadParameter(f"unknown model {value!r}; known models: {', '.join(MODELS)}")
    return value


def _check_loss(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from geoseg.errors import InputError
    from geoseg.losses import build_loss

    weights = [1.0, 1.0] if "wce" in value.lower() else None
    try:
        build_loss(value, num_classes=2, class_weights=weights)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command(short_help="Train a model on a tile store.")
@click.argument("tiles", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    required=True,
    help=(
        "Checkpoint to write (the best epoch); OUT.resume, OUT-stem.metrics.csv and "
        "OUT-stem.curves.png go beside it."
    ),
)
@click.option(
    "--model",
    default="unet",
    show_default=True,
    callback=_check_model,
    help="Architecture (see `geoseg models`).",
)
@click.option("--encoder", help="Encoder of smp models (unet, fpn, ...), e.g. resnet18.")
@click.option("--epochs", type=PositiveInt(1), default=20, show_default=True)
@click.option(
    "--minutes",
    type=Number(0.0, exclusive=True),
    default=None,
    help="Train to a time budget: the epochs (and the learning-rate schedule) are fitted to it "
    "from timed steps, replacing --epochs; the run stops on time with the best checkpoint.",
)
@click.option("--batch-size", type=PositiveInt(1), default=8, show_default=True)
@click.option(
    "--lr", type=Number(0.0, exclusive=True), default=1e-3, show_default=True, help="Peak LR."
)
@click.option("--weight-decay", type=Fraction(), default=1e-4, show_default=True)
@click.option(
    "--schedule",
    type=click.Choice(["onecycle", "cosine", "constant"]),
    default="onecycle",
    show_default=True,
    help="Learning-rate schedule, stepped per batch.",
)
@click.option(
    "--loss",
    default="ce+dice",
    show_default=True,
    callback=_check_loss,
    help="Loss terms ce, wce, dice, focal, lovasz, boundary, dpce, weighted and joined: "
    "ce*0.5+dice, ce+boundary.",
)
@click.option(
    "--class-weights",
    type=click.Choice(["none", "median_frequency", "sqrt_median_frequency"]),
    default="none",
    show_default=True,
    help="Weights of the 'wce' term, from the training chips' class histogram.",
)
@click.option(
    "--val-scenes",
    callback=split_csv,
    help="Validation scenes by id (e.g. 2_12,3_12); the rest train.",
)
@click.option(
    "--val-fraction",
    type=Fraction(),
    default=None,
    help="Fraction of whole scenes drawn for validation [default: 0.2]; 0 = none.",
)
@click.option("--seed", type=PositiveInt(0), default=0, show_default=True)
@click.option(
    "--chip-size",
    type=PositiveInt(16),
    default=None,
    help="Random training crop in model pixels [default: whole chips; on a CPU, 128].",
)
@click.option(
    "--downsample",
    type=PositiveInt(1),
    default=1,
    help="Read chips this many times coarser (the model's GSD = the store's x N) "
    "[default: 1; on a CPU, to about 20 cm].",
)
@click.option("--no-augment", is_flag=True, default=False, help="No D4 flips/rotations.")
@click.option(
    "--photometric",
    type=click.FloatRange(0.0, 2.0),
    default=0.0,
    show_default=True,
    metavar="STRENGTH",
    help="Photometric augmentation strength (brightness, contrast, colour, blur, noise, "
    "haze; spectral bands only); 0 = off.",
)
@click.option(
    "--cache/--no-cache",
    default=False,
    help="Keep read chips in memory [default: off; on a CPU, on when they fit].",
)
@click.option(
    "--init-weights",
    type=click.Path(exists=True, dir_okay=False),
    help="Local ResNet state dict to initialise the backbone from.",
)
@click.option(
    "--contact-weight",
    type=Number(0.0),
    default=1.0,
    show_default=True,
    help="Weight of the building-contact loss when TILES has a contact target "
    "(tile --footprints); 0 trains without it.",
)
@device_opt
@click.option(
    "--workers",
    type=PositiveInt(0),
    default=default_workers,
    show_default="min(8, CPU count); on a CPU, 0",
    help="DataLoader worker processes; 0 reads chips in the main process.",
)
@click.option("--resume", is_flag=True, default=False, help="Continue from OUT.resume.")
@overwrite_opt
@click.pass_context
def train(
    ctx: click.Context,
    tiles: str,
    output: str,
    model: str,
    encoder: str | None,
    epochs: int,
    minutes: float | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    schedule: str,
    loss: str,
    class_weights: str,
    val_scenes: tuple[str, ...] | None,
    val_fraction: float | None,
    seed: int,
    chip_size: int | None,
    downsample: int,
    no_augment: bool,
    photometric: float,
    cache: bool,
    init_weights: str | None,
    contact_weight: float,
    device: str,
    workers: int,
    resume: bool,
    overwrite: bool,
) -> None:
    """Train a segmentation model on the chips of the tile store TILES.

    Scenes are split, whole, into training and validation (--val-scenes, or a seeded
    --val-fraction of them). The best epoch by validation mIoU is written to -o; per-epoch
    metrics go to OUT-stem.metrics.csv, drawn in OUT-stem.curves.png (losses and validation
    IoU per class); an interrupted run continues with --resume. A store tiled with
    --footprints trains one more output, the building contact (its validation F1 is logged
    beside mIoU), which `geoseg predict` writes as {scene}_contact.tif.

    \b
    $ geoseg train tiles/potsdam --model unet --encoder resnet18 --epochs 30 -o model.pt
    $ geoseg train tiles/potsdam --model fcn_resnet50 --val-scenes 2_12,3_12 --lr 3e-3 \\
          --loss ce+dice --batch-size 16 --device cuda -o fcn.pt
    $ geoseg train tiles/potsdam -o model.pt --resume
    """
    from tqdm import tqdm

    from geoseg._torch import torch_device
    from geoseg.train import TrainConfig, TrainEvent, adapt_store_to_cpu
    from geoseg.train import train as run_training

    if val_scenes is not None and val_fraction is not None:
        raise click.UsageError("give --val-scenes or --val-fraction, not both")
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    config = TrainConfig(
        model=model,
        encoder=encoder,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,  # type: ignore[arg-type]
        loss=loss,
        class_weights=class_weights,  # type: ignore[arg-type]
        val_scenes=val_scenes,
        val_fraction=0.2 if val_fraction is None else val_fraction,
        seed=seed,
        chip_size=chip_size,
        downsample=downsample,
        augment=not no_augment,
        photometric=photometric,
        device=device,
        workers=workers,
        cache=cache,
        init_weights=init_weights,
        contact_weight=contact_weight,
        minutes=minutes,
    )
    if torch_device(device).type == "cpu":
        given = {
            name
            for name in ctx.params
            if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        }
        config, notes = adapt_store_to_cpu(tiles, config, given=given)
        if notes:
            click.echo("CPU defaults: " + "; ".join(notes) + " (set the options to override)")
    bars: list[Any] = []

    def progress(event: TrainEvent) -> None:
        if not bars:
            done = (event.epoch - 1) * event.steps + event.step - 1
            bars.append(
                tqdm(
                    total=event.epochs * event.steps,
                    initial=done,
                    desc="train",
                    unit="step",
                    disable=None,
                )
            )
        bar = bars[0]
        if event.kind == "step":
            bar.update(1)
        post = {"epoch": f"{event.epoch}/{event.epochs}", "loss": f"{event.loss:.3f}"}
        if event.val_miou is not None:
            post["val_mIoU"] = f"{event.val_miou:.3f}"
        bar.set_postfix(post, refresh=False)

    try:
        report = run_training(
            tiles, output, config=config, resume=resume, overwrite=overwrite, progress=progress
        )
    finally:
        for bar in bars:
            bar.close()
    best = (
        f"val mIoU {report.best_val_miou:.4f}"
        if report.best_val_miou is not None
        else "no validation"
    )
    click.echo(
        f"{report.checkpoint}: epoch {report.best_epoch} of {report.epochs} ({best}); "
        f"{report.train_chips} training chips ({', '.join(report.train_scenes)}), "
        f"{report.val_chips} validation chips ({', '.join(report.val_scenes) or 'none'}), "
        f"{report.device}, {report.seconds:.0f} s; metrics: {report.log}, curves: {report.curves}"
    )
    if report.budget is not None:
        b = report.budget
        click.echo(
            f"time budget {b['minutes']:g} min: {b['epochs']} epochs fitted "
            f"({b['step_seconds']:.3f} s per step, ~{b['epoch_seconds']:.1f} s per epoch)"
            + ("; stopped early, the epochs ran slower than timed" if report.stopped_early else "")
        )
