"""The training loop: :func:`train` a model on a tile store, one epoch after another.

Each epoch trains on random crops of the training chips (:func:`train_epoch`), validates on
whole validation chips (:func:`geoseg.train._validation.evaluate_epoch`), appends a row to
the metrics log, saves the checkpoint if the epoch is the best so far and rewrites the resume
state (:mod:`geoseg.train._resume`). The training-curve picture
(:func:`geoseg.train._curves.write_curves`) is drawn at the end of the run and, in a long one,
after an epoch when :data:`CURVES_EVERY_S` have passed since it was last drawn.

Learning-rate schedule (:func:`make_scheduler`): the default is one-cycle (Smith & Topin
2019) stepped per batch: a warm-up over the first 15 % of steps from ``lr/25`` to ``lr``
protects randomly initialised BatchNorm networks from early divergence with small batches,
and the long anneal to ``lr/25000`` gives the best weights a fixed, short budget can reach
(the CPU case). ``cosine`` (5 % linear warm-up, cosine decay to 0) and ``constant`` are the
alternatives. Both decaying schedules depend on the total number of steps, which is why a
resumed run must keep ``epochs`` (and every other option that changes the result).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader

from geoseg._torch import torch_device
from geoseg.checkpoint import save_checkpoint
from geoseg.data import ChipDataset, SeededSampler, band_stats
from geoseg.evaluate import PixelMetrics
from geoseg.train._budget import BudgetPlan, fit_budget, over_budget
from geoseg.train._config import TrainConfig, TrainEvent, TrainReport
from geoseg.train._contact import ContactLoss, contact_metrics
from geoseg.train._curves import write_curves
from geoseg.train._plan import plan_training
from geoseg.train._resume import (
    build_checkpoint,
    check_outputs,
    check_resumable,
    curves_path_for,
    load_resume,
    log_path_for,
    resume_path_for,
    save_resume,
    write_log,
)
from geoseg.train._step import (
    adamw_fused,
    make_loader,
    to_device,
    train_step,
    use_implementation,
)
from geoseg.train._validation import EvalResult, evaluate_epoch

__all__ = [
    "CURVES_EVERY_S",
    "LOG_EVERY",
    "EpochStats",
    "epoch_row",
    "is_log_step",
    "make_scheduler",
    "train",
    "train_epoch",
]

# the package's logger: records keep the name they had before the package was split
logger = logging.getLogger("geoseg.train")

LOG_EVERY = 10
"""Training steps between two reads of the running loss by the host (see :func:`train_epoch`)."""

CURVES_EVERY_S = 60.0
"""Seconds after which an epoch's end redraws the curves PNG (a write costs ~0.2 s)."""


def make_scheduler(
    opt: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-batch learning-rate schedule of ``config`` over ``total_steps`` steps."""
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=config.lr,
            total_steps=max(1, total_steps),
            pct_start=0.15,
            div_factor=25.0,
            final_div_factor=1e3,
        )
    if config.schedule == "cosine":
        warm = max(1, round(0.05 * total_steps))

        def cosine(step: int) -> float:
            ramp = min(1.0, (step + 1) / warm)
            return ramp * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

        return torch.optim.lr_scheduler.LambdaLR(opt, cosine)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def _none_if_nan(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class EpochStats:
    """Mean loss, chips, seconds and the seconds spent waiting for data vs computing."""

    loss: float
    chips: int
    seconds: float
    wait: float
    compute: float


def is_log_step(step: int, steps: int, every: int) -> bool:
    """Whether a step is a log point: the first, every ``every``-th and the last of an epoch."""
    return step == 1 or step % every == 0 or step == steps


def train_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    on_step: Callable[[int, float, float], None],
    log_every: int = LOG_EVERY,
) -> EpochStats:
    """One pass over the loader; times the wait for each batch apart from its compute.

    The losses are summed on the device; the host reads them at the log points only
    (:func:`is_log_step`), one synchronisation each, so that the host queues the next steps
    while the device computes. ``on_step(step, loss, lr)`` is called after every step with
    the mean loss of the steps since the previous log point, as read at the latest one.
    Time spent waiting for the device is counted as compute (at the log points).
    """
    model.train()
    t_epoch = time.perf_counter()
    wait = compute = 0.0
    steps = len(loader)
    # sums of loss x chips in float64: the epoch's and the current log interval's
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    seen = interval_chips = 0
    loss_sum, value = 0.0, math.nan
    it: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        x, y = to_device(x, y, device)
        loss = train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=device)
        lr = float(opt.param_groups[0]["lr"])
        sched.step()
        chips = int(x.shape[0])
        sums += loss.detach().double() * chips
        seen += chips
        interval_chips += chips
        if is_log_step(step, steps, log_every):
            loss_sum, interval_sum = sums.tolist()  # synchronises: the steps are complete
            value = interval_sum / interval_chips
            sums[1].zero_()
            interval_chips = 0
        wait += t1 - t0
        compute += time.perf_counter() - t1
        on_step(step, value, lr)
    return EpochStats(
        loss=loss_sum / max(1, seen),
        chips=seen,
        seconds=time.perf_counter() - t_epoch,
        wait=wait,
        compute=compute,
    )


def epoch_row(
    epoch: int,
    lr: float,
    stats: EpochStats,
    val: EvalResult | None,
    class_names: Sequence[str],
    val_seconds: float,
    contact: bool = False,
) -> dict[str, Any]:
    """One row of the metrics log (None for what was not measured).

    With ``contact`` (a model with a contact output) it has ``val_contact_f1`` and
    ``val_contact_iou`` after ``val_oa``.
    """
    metrics = None if val is None else PixelMetrics.from_confusion(val.confusion, class_names)
    row: dict[str, Any] = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": stats.loss,
        "val_loss": None if val is None else _none_if_nan(val.loss),
        "val_miou": None if metrics is None else _none_if_nan(metrics.miou),
        "val_oa": None if metrics is None else _none_if_nan(metrics.overall_accuracy),
    }
    if contact:
        counts = None if val is None else val.contact
        row.update(
            contact_metrics(counts)
            if counts is not None
            else {"val_contact_f1": None, "val_contact_iou": None}
        )
    for c, name in enumerate(class_names):
        row[f"iou_{name}"] = None if metrics is None else _none_if_nan(float(metrics.iou[c]))
    busy = stats.wait + stats.compute
    row.update(
        train_seconds=stats.seconds,
        val_seconds=val_seconds,
        seconds=stats.seconds + val_seconds,
        chips_per_s=stats.chips / stats.seconds if stats.seconds > 0 else None,
        data_wait_fraction=stats.wait / busy if busy > 0 else None,
    )
    return row


def train(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[TrainEvent], None] | None = None,
) -> TrainReport:
    """Train a model on a tile store and write the best checkpoint to ``out``.

    Args:
        store: A labelled tile store (``geoseg tile``).
        out: The checkpoint to write (e.g. ``model.pt``); the resume state, the
            metrics CSV and the training-curve PNG are written next to it (see
            :func:`resume_path_for`, :func:`log_path_for`, :func:`curves_path_for`).
        config: The training options.
        resume: Continue from ``out``'s resume state; the options must be the same as the
            interrupted run's, except ``device``, ``workers`` and ``cache``.
        overwrite: Start afresh even if ``out`` or its resume state exist.
        progress: Called with a :class:`TrainEvent` after every step and every epoch.

    Returns:
        A :class:`TrainReport`.

    Raises:
        InputError: ``store`` is not a labelled tile store, a validation scene is not in it,
            or the model name is unknown.
        ConfigError: Bad options, a single-scene store with validation, options that differ
            from the interrupted run's on resume, CUDA asked for but absent.
        OutputExistsError: ``out`` (or its resume state) exists and neither ``overwrite``
            nor ``resume`` is set.
        CheckpointError: The resume state is missing or unreadable.
    """
    from geoseg.losses import build_loss
    from geoseg.models import build_model, load_init_weights, model_spec

    t_start = time.perf_counter()
    out = Path(out)
    resume_file, log_file = resume_path_for(out), log_path_for(out)
    curves_file = curves_path_for(out)
    check_outputs(out, resume=resume, overwrite=overwrite)
    plan = plan_training(store, config)
    num_classes = len(plan.schema)
    loss_fn = build_loss(config.loss, num_classes=num_classes, class_weights=plan.class_weights)
    if plan.contact:  # one more output channel, the contact logit, and its loss term
        loss_fn = ContactLoss(
            loss_fn,
            num_classes=num_classes,
            weight=config.contact_weight,
            pos_weight=plan.contact_pos_weight,
        )
    arch_args: dict[str, Any] = {} if config.encoder is None else {"encoder": config.encoder}
    spec = model_spec(
        config.model,
        in_channels=len(plan.bands),
        num_classes=num_classes + int(plan.contact),
        **arch_args,
    )
    device = torch_device(config.device)
    cuda = device.type == "cuda"
    state: dict[str, Any] | None = None
    if resume:
        state = load_resume(resume_file)
        if config.minutes is not None:  # finish the epochs the interrupted run fitted
            config = replace(config, epochs=int(state["config"].get("epochs", config.epochs)))
        check_resumable(state["config"], config, resume_file)

    train_ds = ChipDataset(
        plan.train_paths,
        num_classes=num_classes,
        crop=plan.crop,
        augment=config.augment,
        photometric=config.photometric,
        bands=plan.bands,
        downsample=config.downsample,
        cache=config.cache,
        contact=plan.contact,
    )
    if state is not None:
        mean, std = tuple(state["mean"]), tuple(state["std"])
    else:
        t0 = time.perf_counter()
        stats = band_stats(train_ds)
        mean, std = stats.mean, stats.std
        logger.info(
            "band statistics over %d valid pixels in %.1f s: mean %s, std %s",
            stats.pixels,
            time.perf_counter() - t0,
            [round(v, 3) for v in mean],
            [round(v, 3) for v in std],
        )
    train_ds.set_normalisation(mean, std)
    val_ds = ChipDataset(
        plan.val_paths,
        num_classes=num_classes,
        mean=mean,
        std=std,
        downsample=config.downsample,
        native_labels=True,
        cache=config.cache,
        contact=plan.contact,
    )

    torch.manual_seed(config.seed)
    model = build_model(spec["name"], **spec["args"])
    if config.init_weights and state is None:
        load_init_weights(model, config.init_weights, band_names=plan.bands)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    loss_fn.to(device)
    validate = functools.partial(
        evaluate_epoch,
        device=device,
        num_classes=num_classes,
        loss_fn=loss_fn,
        contact=plan.contact,
    )
    budget: BudgetPlan | None = None
    if config.minutes is not None and state is None:
        budget = fit_budget(
            config,
            model=model,
            loss_fn=loss_fn,
            train_item=lambda i: train_ds[(i, config.seed)],
            val_item=lambda i: val_ds[i],
            train_chips=len(train_ds),
            val_chips=len(val_ds),
            validate=validate,
            device=device,
            elapsed=time.perf_counter() - t_start,
            scratch=out.parent,
        )
        config = replace(config, epochs=budget.epochs)
        logger.info(
            "time budget %g min: %d epochs fit (%.3f s per step, ~%.1f s per epoch, "
            "+%.0f s in the first; %.0f s left)",
            budget.minutes, budget.epochs, budget.step_seconds, budget.epoch_seconds,
            budget.first_epoch_seconds, budget.seconds_left,
        )  # fmt: skip
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.weight_decay, fused=adamw_fused(device, params)
    )
    steps = math.ceil(len(train_ds) / config.batch_size)
    sched = make_scheduler(opt, config, steps * config.epochs)
    train_sampler = SeededSampler(len(train_ds), seed=config.seed, shuffle=True)
    loaders = {
        "train": make_loader(
            train_ds,
            train_sampler,
            batch_size=config.batch_size,
            workers=config.workers,
            cuda=cuda,
            seed=config.seed,
        ),
        "val": make_loader(
            val_ds,
            SeededSampler(len(val_ds), seed=config.seed, shuffle=False),
            batch_size=config.batch_size,
            workers=config.workers if len(val_ds) else 0,
            cuda=cuda,
            seed=config.seed,
        ),
    }

    history: list[dict[str, Any]] = []
    best_miou: float | None = None
    best_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        use_implementation(opt, adamw_fused(device, params))
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda"):
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        history = [dict(r) for r in state["history"]]
        best_miou, best_epoch = state["best_miou"], int(state["best_epoch"])
        write_log(log_file, history)  # drops rows of an epoch whose state was not saved
        logger.info("resuming %s after epoch %d", resume_file, len(history))
    else:
        # A fresh run: an old resume state must not be picked up if this one is interrupted
        # before its first epoch ends. An old checkpoint stays until the new one replaces it.
        resume_file.unlink(missing_ok=True)
        log_file.unlink(missing_ok=True)
        curves_file.unlink(missing_ok=True)

    # the curves PNG: epochs drawn last, and when (time.perf_counter())
    drawn, drawn_at = -1, t_start

    def draw_curves() -> None:
        nonlocal drawn, drawn_at
        try:
            write_curves(history, plan.schema.classes, curves_file, colours=plan.schema.colours)
        except ImportError:  # a minimal install (the GPU check's) without matplotlib
            logger.warning("matplotlib is not installed: no training curves PNG")
        drawn, drawn_at = len(history), time.perf_counter()

    if history:  # resumed: redrawn without the epochs the CSV dropped
        draw_curves()
    logger.info(
        "training %s on %d chips (%s), validating on %d chips (%s), %d steps/epoch, %s",
        config.model,
        len(train_ds),
        ", ".join(plan.train_scenes),
        len(val_ds),
        ", ".join(plan.val_scenes) or "none",
        steps,
        device,
    )

    def event(
        kind: Literal["step", "epoch"], epoch: int, step: int, loss: float, lr: float
    ) -> None:
        if progress is not None:
            last = history[-1] if history else {}
            progress(
                TrainEvent(
                    kind=kind,
                    epoch=epoch,
                    epochs=config.epochs,
                    step=step,
                    steps=steps,
                    loss=loss,
                    lr=lr,
                    val_miou=last.get("val_miou"),
                    val_loss=last.get("val_loss"),
                    best_epoch=best_epoch,
                )
            )

    epoch_times: list[float] = []  # of this call's epochs, for the time budget
    stopped_early = False
    for epoch in range(len(history) + 1, config.epochs + 1):
        t_epoch = time.perf_counter()
        train_sampler.set_epoch(epoch)
        stats_e = train_epoch(
            model,
            loaders["train"],
            loss_fn=loss_fn,
            opt=opt,
            sched=sched,
            device=device,
            on_step=functools.partial(event, "step", epoch),
        )
        t_val = time.perf_counter()
        val = None
        if len(val_ds):
            val = validate(model, loaders["val"])
        row = epoch_row(
            epoch,
            float(opt.param_groups[0]["lr"]),
            stats_e,
            val,
            plan.schema.classes,
            time.perf_counter() - t_val,
            contact=plan.contact,
        )
        history.append(row)
        write_log(log_file, history)
        miou = row["val_miou"]
        if (
            val is None
            or best_epoch == 0
            or (miou is not None and (best_miou is None or miou > best_miou))
        ):
            best_miou, best_epoch = miou, epoch
            save_checkpoint(
                build_checkpoint(model, spec, plan, mean, std, row, config, store),
                out,
                overwrite=True,
            )
        save_resume(
            resume_file, config, epoch, model, opt, sched, cuda, best_miou, best_epoch,
            mean, std, history,
        )  # fmt: skip
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %s, val mIoU %s%s, %.1f s, %.1f chips/s, "
            "data wait %.1f %%",
            epoch,
            config.epochs,
            row["train_loss"],
            _fmt(row["val_loss"]),
            _fmt(row["val_miou"]),
            f", val contact F1 {_fmt(row['val_contact_f1'])}" if plan.contact else "",
            row["seconds"],
            row["chips_per_s"] or 0.0,
            100 * (row["data_wait_fraction"] or 0.0),
        )
        if time.perf_counter() - drawn_at >= CURVES_EVERY_S:
            draw_curves()
        event("epoch", epoch, steps, row["train_loss"], row["lr"])
        epoch_times.append(time.perf_counter() - t_epoch)
        if config.minutes is not None and over_budget(
            time.perf_counter() - t_start,
            60.0 * config.minutes,
            epoch_times,
            epoch=epoch,
            epochs=config.epochs,
        ):
            stopped_early = True
            logger.warning(
                "time budget of %g min reached after epoch %d of %d (epochs ran slower than "
                "timed); stopping with the best checkpoint, epoch %d",
                config.minutes, epoch, config.epochs, best_epoch,
            )  # fmt: skip
            break

    if history and drawn != len(history):
        draw_curves()
    return TrainReport(
        checkpoint=out,
        resume=resume_file,
        log=log_file,
        curves=curves_file,
        epochs=len(history),
        best_epoch=best_epoch,
        best_val_miou=best_miou,
        train_scenes=plan.train_scenes,
        val_scenes=plan.val_scenes,
        train_chips=len(train_ds),
        val_chips=len(val_ds),
        device=device.type,
        history=tuple(history),
        seconds=time.perf_counter() - t_start,
        budget=None if budget is None else budget.to_dict(),
        stopped_early=stopped_early,
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"
