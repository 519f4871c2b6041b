"""Train a segmentation model on a tile store.

:func:`train` splits the store by scene (never by chip), computes per-band normalisation over
the valid pixels of the training chips, trains with AdamW and a one-cycle (or cosine)
learning-rate schedule, validates each epoch on whole validation chips scored at the chips'
own resolution, and writes:

* ``OUT`` (e.g. ``model.pt``): the best checkpoint by validation mIoU (the last one without
  validation), a :class:`~geoseg.checkpoint.Checkpoint` whose ``config`` is the
  :class:`TrainConfig` and whose ``metrics`` are that epoch's;
* ``OUT.resume`` (``model.pt.resume``): model, optimizer, scheduler, epoch, RNG states, best
  so far and the metric history, rewritten atomically after every epoch;
  ``resume=True`` continues from it and ends with the same weights as an uninterrupted run;
* ``OUT`` with suffix ``.metrics.csv`` (``model.metrics.csv``): one row per epoch with train
  and validation loss, validation mIoU and OA, per-class IoU, seconds, chips/s and the
  fraction of training step time spent waiting for data.

Learning-rate schedule: the default is one-cycle (Smith & Topin 2019) stepped per batch:
a warm-up over the first 15 % of steps from ``lr/25`` to ``lr`` protects randomly initialised
BatchNorm networks from early divergence with small batches, and the long anneal to
``lr/25000`` gives the best weights a fixed, short budget can reach (the CPU case). ``cosine``
(5 % linear warm-up, cosine decay to 0) and ``constant`` are the alternatives. Both
decaying schedules depend on the total number of steps, which is why a resumed run must keep
``epochs`` (and every other option that changes the result).

Devices: on CUDA, pinned memory and non-blocking copies, bf16 autocast and channels-last
memory format; on CPU, fp32. With a fixed seed a CPU run is reproducible, whatever the number
of DataLoader workers (see :mod:`geoseg.data`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import math
import os
import pickle
import random
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import DataLoader

from geoseg._io import atomic_path
from geoseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from geoseg.data import ChipDataset, SeededSampler, band_stats, chip_gsd, split_scenes
from geoseg.errors import (
    BandMismatchError,
    CheckpointError,
    ConfigError,
    InputError,
    OutputExistsError,
    SchemaError,
)
from geoseg.metrics import PixelMetrics, confusion_matrix
from geoseg.schema import IGNORE, ClassSchema
from geoseg.tiles import read_store

__all__ = [
    "TrainConfig",
    "TrainEvent",
    "TrainReport",
    "evaluate_chips",
    "log_path_for",
    "resume_path_for",
    "train",
]

logger = logging.getLogger(__name__)

Schedule = Literal["onecycle", "cosine", "constant"]
Device = Literal["auto", "cpu", "cuda"]
ClassWeighting = Literal["none", "median_frequency"]

RESUME_FORMAT = "geoseg-train-resume"
RESUME_VERSION = 1

# Options that may change between an interrupted run and its resumption: they do not
# change the result (workers: samples are seeded per sample; cache: memory only).
_RESUMABLE_CHANGES = frozenset({"device", "workers", "cache"})


@dataclass(frozen=True)
class TrainConfig:
    """Training options; saved in the checkpoint's ``config``.

    Attributes:
        model: Registry name (:data:`geoseg.models.MODELS`), e.g. ``unet`` or ``fcn_resnet50``.
        encoder: Encoder of the smp models (``unet``, ``fpn``...), e.g. ``resnet18``; None
            takes the model's default. Not used by ``fcn_*`` and ``segnet``.
        epochs: Passes over the training chips.
        batch_size: Chips per step.
        lr: Peak learning rate (AdamW).
        weight_decay: AdamW decoupled weight decay.
        schedule: ``onecycle``, ``cosine`` or ``constant`` (stepped per batch).
        loss: Loss spec (:func:`geoseg.losses.build_loss`), e.g. ``ce+dice``.
        class_weights: ``median_frequency`` weights from the training chips' class
            histogram for a ``wce`` loss term; ``none`` otherwise.
        val_scenes: Validation scenes by id; None draws ``val_fraction`` of the scenes.
        val_fraction: Fraction of the scenes (whole scenes, seeded) for validation; 0 trains
            without validation (the last epoch is then the best).
        seed: Seed of the split, the initial weights, the sample order and augmentation.
        chip_size: Edge of the random training crop in model pixels (after ``downsample``);
            None trains on whole chips.
        downsample: Read chips ``downsample`` times coarser (the model's ground sample
            distance is the store's times this); validation still scores the predictions,
            upsampled, against the labels at the store's resolution.
        augment: Random D4 transforms (flips and quarter turns) of the training chips.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        workers: DataLoader worker processes (0 reads in the main process).
        cache: Keep downsampled chips in memory after their first read (each worker its own).
        init_weights: A LOCAL ResNet state dict to initialise the backbone from.
    """

    model: str = "unet"
    encoder: str | None = None
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "onecycle"
    loss: str = "ce+dice"
    class_weights: ClassWeighting = "none"
    val_scenes: tuple[str, ...] | None = None
    val_fraction: float = 0.2
    seed: int = 0
    chip_size: int | None = None
    downsample: int = 1
    augment: bool = True
    device: Device = "auto"
    workers: int = 0
    cache: bool = False
    init_weights: str | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.epochs >= 1, f"epochs={self.epochs}: must be >= 1"),
            (self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1"),
            (
                math.isfinite(self.lr) and self.lr > 0,
                f"lr={self.lr}: the learning rate must be > 0",
            ),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0"),
            (
                0.0 <= self.val_fraction < 1.0,
                f"val_fraction={self.val_fraction}: must be >= 0 and < 1",
            ),
            (self.seed >= 0, f"seed={self.seed}: must be >= 0"),
            (
                self.chip_size is None or self.chip_size >= 16,
                f"chip_size={self.chip_size}: must be >= 16 pixels",
            ),
            (self.downsample >= 1, f"downsample={self.downsample}: must be an integer >= 1"),
            (self.workers >= 0, f"workers={self.workers}: must be >= 0"),
            (
                self.schedule in get_args(Schedule),
                f"schedule={self.schedule!r}: use one of {', '.join(get_args(Schedule))}",
            ),
            (
                self.device in get_args(Device),
                f"device={self.device!r}: use one of {', '.join(get_args(Device))}",
            ),
            (
                self.class_weights in get_args(ClassWeighting),
                f"class_weights={self.class_weights!r}: use one of "
                f"{', '.join(get_args(ClassWeighting))}",
            ),
            (
                self.val_scenes is None or len(self.val_scenes) > 0,
                "val_scenes is empty; give at least one scene id or None",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.val_scenes is not None:
            object.__setattr__(self, "val_scenes", tuple(str(s) for s in self.val_scenes))

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form (lists, str, numbers, None) for checkpoints and logs."""
        d = asdict(self)
        if d["val_scenes"] is not None:
            d["val_scenes"] = list(d["val_scenes"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output; unknown keys are an error.

        Raises:
            ConfigError: Unknown keys or invalid values.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}; known: {sorted(names)}")
        d = dict(data)
        if d.get("val_scenes") is not None:
            d["val_scenes"] = tuple(d["val_scenes"])
        return cls(**d)


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a run, passed to the ``progress`` callback.

    Attributes:
        kind: ``step`` after each training step, ``epoch`` after each epoch (validation
            and checkpointing done).
        epoch: Epoch number, 1-based.
        epochs: Total epochs of the run.
        step: Step within the epoch, 1-based (``steps`` for ``epoch`` events).
        steps: Steps per epoch.
        loss: The step's loss (``step``) or the epoch's mean training loss (``epoch``).
        lr: Learning rate of the step (or at the end of the epoch).
        val_miou: Latest validation mIoU, None before the first validation or without one.
        val_loss: Latest validation loss, likewise.
        best_epoch: Epoch of the best checkpoint so far (0 before any).
    """

    kind: Literal["step", "epoch"]
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    lr: float
    val_miou: float | None = None
    val_loss: float | None = None
    best_epoch: int = 0


@dataclass(frozen=True)
class TrainReport:
    """What a training run did.

    Attributes:
        checkpoint: The best checkpoint (``OUT``).
        resume: The resume state (``OUT.resume``).
        log: The per-epoch metrics CSV.
        epochs: Epochs completed (including those before a resume).
        best_epoch: Epoch of the saved checkpoint.
        best_val_miou: Its validation mIoU (None without validation).
        train_scenes: Scenes trained on.
        val_scenes: Scenes validated on.
        train_chips: Number of training chips.
        val_chips: Number of validation chips.
        device: Device used (``cpu`` or ``cuda``).
        history: One dict per epoch, the rows of the CSV.
        seconds: Wall time of this call.
    """

    checkpoint: Path
    resume: Path
    log: Path
    epochs: int
    best_epoch: int
    best_val_miou: float | None
    train_scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]
    train_chips: int
    val_chips: int
    device: str
    history: tuple[dict[str, Any], ...] = field(repr=False)
    seconds: float


def resume_path_for(out: str | os.PathLike[str]) -> Path:
    """The resume state of a run writing ``out``: ``model.pt`` -> ``model.pt.resume``."""
    p = Path(out)
    return p.with_name(p.name + ".resume")


def log_path_for(out: str | os.PathLike[str]) -> Path:
    """Where the per-epoch metrics go: ``model.pt`` -> ``model.metrics.csv``."""
    p = Path(out)
    return p.with_name(p.stem + ".metrics.csv")


# -- helpers ---------------------------------------------------------------------------------


def _resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda: no CUDA device is available (torch.cuda.is_available() is "
                "False); use --device cpu or auto"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # for third-party code that uses the global state
    random.seed(seed)


def _loader(
    dataset: ChipDataset,
    sampler: SeededSampler,
    *,
    batch_size: int,
    workers: int,
    cuda: bool,
    seed: int,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=workers,
        pin_memory=cuda,
        worker_init_fn=_seed_worker if workers > 0 else None,
        generator=g,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def _scheduler(
    opt: torch.optim.Optimizer, config: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
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


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
) -> torch.Tensor:
    """One optimisation step on a batch already on the device; returns the loss (unsynced)."""
    with _autocast(device):
        logits = model(x)
    loss: torch.Tensor = loss_fn(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def _to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the device; labels (uint8 from the loader) widened to int64 there."""
    if device.type == "cuda":
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True).long()
    return x, y.long()


@dataclass
class _EvalResult:
    confusion: np.ndarray
    loss: float


def _evaluate(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    num_classes: int,
    loss_fn: nn.Module | None,
) -> _EvalResult:
    """Predict whole chips; upsample logits to the labels' size; accumulate a confusion matrix.

    The loss is the mean of the batch losses weighted by their valid (non-255) pixels.
    """
    model.eval()
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum, weight = 0.0, 0
    with torch.no_grad():
        for x, y_host in loader:
            x, y = _to_device(x, y_host, device)
            with _autocast(device):
                logits = model(x)
            logits = logits.float()
            if logits.shape[-2:] != y.shape[-2:]:
                # Chips read f times coarser (padded to a multiple of f): upsample by f and
                # crop. Block means put coarse pixel i's centre at fine (i + 0.5) f - 0.5,
                # which is what align_corners=False assumes.
                f = max(1, round(y.shape[-1] / x.shape[-1]))
                size = (x.shape[-2] * f, x.shape[-1] * f)
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
                logits = logits[..., : y.shape[-2], : y.shape[-1]]
            n_valid = int((y != IGNORE).sum())
            if loss_fn is not None and n_valid:
                loss_sum += float(loss_fn(logits, y)) * n_valid
                weight += n_valid
            pred = logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
            cm += confusion_matrix(pred, y_host.numpy(), num_classes=num_classes)
    return _EvalResult(cm, loss_sum / weight if weight else math.nan)


def _write_log(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(buf.getvalue())


def _load_resume(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        ValueError,
        OSError,
        zipfile.BadZipFile,
    ):
        raise CheckpointError(
            f"{path}: resume state is unreadable (truncated or not a geoseg resume file); "
            "start again without --resume (and with --overwrite)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path}: not a geoseg training resume file")
    if state.get("version") != RESUME_VERSION:
        raise CheckpointError(f"{path}: resume format {state.get('version')!r} is not supported")
    return state


def _check_resumable(saved: Mapping[str, Any], config: TrainConfig, path: Path) -> None:
    now = config.to_dict()
    changed = sorted(
        k
        for k in set(saved) | set(now)
        if k not in _RESUMABLE_CHANGES and saved.get(k) != now.get(k)
    )
    if changed:
        k = changed[0]
        raise ConfigError(
            f"{path}: cannot resume with different options ({k}: was {saved.get(k)!r}, now "
            f"{now.get(k)!r}); resume with the options of the interrupted run, or start a new "
            "run with --overwrite"
        )


def _class_weights(index: Any, scenes: Sequence[str], num_classes: int) -> list[float]:
    from geoseg.losses import class_weights_from_histogram

    rows = index[index["scene"].isin(list(scenes))]
    hist = [int(rows[f"class_{c}"].sum()) for c in range(num_classes)]
    return class_weights_from_histogram(hist, method="median_frequency")


# -- the training loop -----------------------------------------------------------------------


def _check_outputs(out: Path, *, resume: bool, overwrite: bool) -> None:
    resume_file = resume_path_for(out)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other; choose one")
    if resume:
        if not resume_file.is_file():
            raise CheckpointError(
                f"{resume_file}: no resume state to continue from; run without --resume"
            )
        return
    if not overwrite:
        for p in (out, resume_file):
            if p.exists():
                raise OutputExistsError(
                    f"{p}: output already exists; pass --resume to continue that run, "
                    "--overwrite to start afresh, or choose another -o"
                )


@dataclass(frozen=True)
class _Plan:
    """What a run trains on, derived from the store and the config (no model yet)."""

    schema: ClassSchema
    bands: tuple[str, ...]
    train_scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]
    train_paths: list[Path]
    val_paths: list[Path]
    class_weights: list[float] | None
    model_chip: int
    crop: int | None
    gsd: float


def _plan(store: str | os.PathLike[str], config: TrainConfig) -> _Plan:
    meta, index = read_store(store)
    if not meta.get("labels"):
        raise InputError(
            f"{store}: the tile store has no labels; training needs a store tiled from "
            "labelled scenes"
        )
    if len(index) == 0:
        raise InputError(f"{store}: the tile store has no chips; tile some scenes first")
    try:
        schema = ClassSchema.from_dict(meta["schema"], source=str(store))
    except SchemaError as exc:
        raise InputError(f"{store}: tiles.json has a malformed schema ({exc})") from None
    train_scenes, val_scenes = split_scenes(
        [str(s) for s in index["scene"]],
        val_scenes=config.val_scenes,
        val_fraction=config.val_fraction,
        seed=config.seed,
    )
    weights = None
    if config.class_weights == "median_frequency":
        if "wce" not in config.loss.replace(" ", "").lower():
            raise ConfigError(
                f"class weights apply to the 'wce' loss term only, and loss {config.loss!r} "
                "has none; use e.g. --loss wce+dice, or --class-weights none"
            )
        weights = _class_weights(index, train_scenes, len(schema))
        logger.info("class weights (median frequency): %s", [round(w, 3) for w in weights])
    chip_size = int(meta.get("size", 0))
    model_chip = -(-chip_size // config.downsample)
    if config.chip_size is not None and config.chip_size > model_chip:
        raise ConfigError(
            f"chip_size={config.chip_size}: larger than the store's chips ({chip_size} px, "
            f"{model_chip} px after downsampling by {config.downsample}); use at most "
            f"{model_chip}"
        )
    root = Path(store)

    def paths(scenes: tuple[str, ...]) -> list[Path]:
        return [root / p for p in sorted(index[index["scene"].isin(scenes)]["path"])]

    train_paths = paths(train_scenes)
    return _Plan(
        schema=schema,
        bands=tuple(str(b) for b in meta["bands"]),
        train_scenes=train_scenes,
        val_scenes=val_scenes,
        train_paths=train_paths,
        val_paths=paths(val_scenes),
        class_weights=weights,
        model_chip=model_chip,
        crop=config.chip_size,
        gsd=chip_gsd(train_paths[0]) * config.downsample,
    )


@dataclass
class _EpochStats:
    loss: float
    chips: int
    seconds: float
    wait: float
    compute: float


def _train_epoch(
    model: nn.Module,
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]],
    *,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    on_step: Callable[[int, float, float], None],
) -> _EpochStats:
    """One pass over the loader; times the wait for each batch apart from its compute."""
    model.train()
    t_epoch = time.perf_counter()
    wait = compute = 0.0
    loss_sum, seen = 0.0, 0
    it: Iterator[tuple[torch.Tensor, torch.Tensor]] = iter(loader)
    for step in range(1, len(loader) + 1):
        t0 = time.perf_counter()
        x, y = next(it)
        t1 = time.perf_counter()
        x, y = _to_device(x, y, device)
        loss = _train_step(model, x, y, loss_fn=loss_fn, opt=opt, device=device)
        lr = float(opt.param_groups[0]["lr"])
        sched.step()
        value = float(loss.item())  # synchronises: the step's compute is complete
        wait += t1 - t0
        compute += time.perf_counter() - t1
        loss_sum += value * int(x.shape[0])
        seen += int(x.shape[0])
        on_step(step, value, lr)
    return _EpochStats(
        loss=loss_sum / max(1, seen),
        chips=seen,
        seconds=time.perf_counter() - t_epoch,
        wait=wait,
        compute=compute,
    )


def _epoch_row(
    epoch: int,
    lr: float,
    stats: _EpochStats,
    val: _EvalResult | None,
    class_names: Sequence[str],
    val_seconds: float,
) -> dict[str, Any]:
    """One row of the metrics log (None for what was not measured)."""
    metrics = None if val is None else PixelMetrics.from_confusion(val.confusion, class_names)
    row: dict[str, Any] = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": stats.loss,
        "val_loss": None if val is None else _none_if_nan(val.loss),
        "val_miou": None if metrics is None else _none_if_nan(metrics.miou),
        "val_oa": None if metrics is None else _none_if_nan(metrics.overall_accuracy),
    }
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
        out: The checkpoint to write (e.g. ``model.pt``); the resume state and the
            metrics CSV are written next to it (see :func:`resume_path_for`,
            :func:`log_path_for`).
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
    _check_outputs(out, resume=resume, overwrite=overwrite)
    plan = _plan(store, config)
    num_classes = len(plan.schema)
    loss_fn = build_loss(config.loss, num_classes=num_classes, class_weights=plan.class_weights)
    arch_args: dict[str, Any] = {} if config.encoder is None else {"encoder": config.encoder}
    spec = model_spec(
        config.model, in_channels=len(plan.bands), num_classes=num_classes, **arch_args
    )
    device = _resolve_device(config.device)
    cuda = device.type == "cuda"
    state: dict[str, Any] | None = None
    if resume:
        state = _load_resume(resume_file)
        _check_resumable(state["config"], config, resume_file)

    train_ds = ChipDataset(
        plan.train_paths,
        num_classes=num_classes,
        crop=plan.crop,
        augment=config.augment,
        downsample=config.downsample,
        cache=config.cache,
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
    )

    torch.manual_seed(config.seed)
    model = build_model(spec["name"], **spec["args"])
    if config.init_weights and state is None:
        load_init_weights(model, config.init_weights, band_names=plan.bands)
    model.to(device)
    if cuda:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        torch.backends.cudnn.benchmark = True
    loss_fn.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(train_ds) / config.batch_size)
    sched = _scheduler(opt, config, steps * config.epochs)
    train_sampler = SeededSampler(len(train_ds), seed=config.seed, shuffle=True)
    loaders = {
        "train": _loader(
            train_ds,
            train_sampler,
            batch_size=config.batch_size,
            workers=config.workers,
            cuda=cuda,
            seed=config.seed,
        ),
        "val": _loader(
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
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if cuda and state.get("rng_cuda"):
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        history = [dict(r) for r in state["history"]]
        best_miou, best_epoch = state["best_miou"], int(state["best_epoch"])
        _write_log(log_file, history)  # drops rows of an epoch whose state was not saved
        logger.info("resuming %s after epoch %d", resume_file, len(history))
    else:
        # A fresh run: an old resume state must not be picked up if this one is interrupted
        # before its first epoch ends. An old checkpoint stays until the new one replaces it.
        resume_file.unlink(missing_ok=True)
        log_file.unlink(missing_ok=True)
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

    for epoch in range(len(history) + 1, config.epochs + 1):
        train_sampler.set_epoch(epoch)
        stats_e = _train_epoch(
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
            val = _evaluate(
                model, loaders["val"], device=device, num_classes=num_classes, loss_fn=loss_fn
            )
        row = _epoch_row(
            epoch,
            float(opt.param_groups[0]["lr"]),
            stats_e,
            val,
            plan.schema.classes,
            time.perf_counter() - t_val,
        )
        history.append(row)
        _write_log(log_file, history)
        miou = row["val_miou"]
        if (
            val is None
            or best_epoch == 0
            or (miou is not None and (best_miou is None or miou > best_miou))
        ):
            best_miou, best_epoch = miou, epoch
            save_checkpoint(
                _checkpoint(model, spec, plan, mean, std, row, config, store),
                out,
                overwrite=True,
            )
        _save_resume(
            resume_file, config, epoch, model, opt, sched, cuda, best_miou, best_epoch,
            mean, std, history,
        )  # fmt: skip
        logger.info(
            "epoch %d/%d: train loss %.4f, val loss %s, val mIoU %s, %.1f s, %.1f chips/s, "
            "data wait %.1f %%",
            epoch,
            config.epochs,
            row["train_loss"],
            _fmt(row["val_loss"]),
            _fmt(row["val_miou"]),
            row["seconds"],
            row["chips_per_s"] or 0.0,
            100 * (row["data_wait_fraction"] or 0.0),
        )
        event("epoch", epoch, steps, row["train_loss"], row["lr"])

    return TrainReport(
        checkpoint=out,
        resume=resume_file,
        log=log_file,
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
    )


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _checkpoint(
    model: nn.Module,
    spec: dict[str, Any],
    plan: _Plan,
    mean: Sequence[float],
    std: Sequence[float],
    row: Mapping[str, Any],
    config: TrainConfig,
    store: str | os.PathLike[str],
) -> Checkpoint:
    return Checkpoint(
        arch=spec,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        bands=plan.bands,
        mean=tuple(mean),
        std=tuple(std),
        schema=plan.schema,
        tile_size=plan.crop if plan.crop is not None else plan.model_chip,
        gsd=plan.gsd,
        metrics={
            **{k: v for k, v in row.items() if not k.startswith("iou_")},
            "val_iou": {name: row[f"iou_{name}"] for name in plan.schema.classes},
            "train_scenes": list(plan.train_scenes),
            "val_scenes": list(plan.val_scenes),
            "train_chips": len(plan.train_paths),
            "val_chips": len(plan.val_paths),
            "store": str(Path(store).resolve()),
        },
        config=config.to_dict(),
    )


def _save_resume(
    path: Path,
    config: TrainConfig,
    epoch: int,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    cuda: bool,
    best_miou: float | None,
    best_epoch: int,
    mean: Sequence[float],
    std: Sequence[float],
    history: Sequence[Mapping[str, Any]],
) -> None:
    state = {
        "format": RESUME_FORMAT,
        "version": RESUME_VERSION,
        "config": config.to_dict(),
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if cuda else [],
        "best_miou": best_miou,
        "best_epoch": best_epoch,
        "mean": list(mean),
        "std": list(std),
        "history": [dict(r) for r in history],
    }
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)


# -- evaluation of a checkpoint on store chips -----------------------------------------------


def evaluate_chips(
    checkpoint: Checkpoint | str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    scenes: Sequence[str] | None = None,
    batch_size: int = 8,
    device: Device = "auto",
    workers: int = 0,
) -> PixelMetrics:
    """Score a checkpoint on whole chips of a labelled store, as validation does in training.

    Chips are read at the checkpoint's ground sample distance (downsampled by
    ``checkpoint.gsd / store GSD``), normalised with the checkpoint's statistics, and the
    predicted logits are upsampled back to the chips' resolution and compared with their
    labels (255 ignored). Overlapping chips count their shared pixels more than once.

    Args:
        checkpoint: A :class:`~geoseg.checkpoint.Checkpoint` or its file.
        store: A labelled tile store with the checkpoint's bands and classes.
        scenes: Scenes to score (all of the store's if None).
        batch_size: Chips per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        workers: DataLoader worker processes.

    Returns:
        The :class:`~geoseg.metrics.PixelMetrics` over all scored pixels.

    Raises:
        InputError: Not a labelled store, unknown scenes.
        BandMismatchError: The store's bands differ from the checkpoint's.
        SchemaError: The store's classes differ from the checkpoint's.
        CheckpointError: An unreadable checkpoint.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    meta, index = read_store(store)
    if not meta.get("labels"):
        raise InputError(f"{store}: the tile store has no labels to score against")
    bands = tuple(meta["bands"])
    if bands != tuple(ckpt.bands):
        raise BandMismatchError(
            f"{store}: store bands {list(bands)} differ from the checkpoint's "
            f"{list(ckpt.bands)}; tile the scenes with --bands {','.join(ckpt.bands)}"
        )
    classes = tuple(c["name"] for c in meta["schema"]["classes"])
    if classes != ckpt.schema.classes:
        raise SchemaError(
            f"{store}: store classes {list(classes)} differ from the checkpoint's "
            f"{list(ckpt.schema.classes)}"
        )
    known = sorted(set(index["scene"]))
    wanted = known if scenes is None else list(scenes)
    missing = [s for s in wanted if s not in known]
    if missing:
        raise InputError(f"scene {missing[0]!r} is not in {store}; its scenes: {', '.join(known)}")
    rows = index[index["scene"].isin(wanted)].sort_values("path")
    paths = [Path(store) / p for p in rows["path"]]
    if not paths:
        raise InputError(f"{store}: no chips to score")
    ratio = ckpt.gsd / chip_gsd(paths[0])
    factor = max(1, round(ratio))
    if abs(ratio - factor) > 0.01 * factor:
        raise InputError(
            f"{store}: chips at {chip_gsd(paths[0])} m/px cannot be read at the checkpoint's "
            f"{ckpt.gsd} m/px by an integer factor; tile scenes at a compatible resolution"
        )
    dev = _resolve_device(device)
    ds = ChipDataset(
        paths,
        num_classes=ckpt.num_classes,
        mean=ckpt.mean,
        std=ckpt.std,
        downsample=factor,
        native_labels=True,
    )
    loader = _loader(
        ds,
        SeededSampler(len(ds), seed=0, shuffle=False),
        batch_size=batch_size,
        workers=workers,
        cuda=dev.type == "cuda",
        seed=0,
    )
    model = ckpt.build_model().to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    result = _evaluate(model, loader, device=dev, num_classes=ckpt.num_classes, loss_fn=None)
    return PixelMetrics.from_confusion(result.confusion, ckpt.schema.classes)
