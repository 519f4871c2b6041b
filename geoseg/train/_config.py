"""Training options, progress events and the report of a run.

:class:`TrainConfig` holds the options, :class:`TrainEvent` is what the ``progress``
callback receives, :class:`TrainReport` what :func:`geoseg.train.train` returns.

The config is validated when built (:class:`~geoseg.errors.ConfigError` names the bad value)
and saved in every checkpoint and resume state as plain data (:meth:`TrainConfig.to_dict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from geoseg.errors import ConfigError
from geoseg.options import DEVICE_PATTERN, DEVICE_VALUES, Device

__all__ = ["ClassWeighting", "Device", "Schedule", "TrainConfig", "TrainEvent", "TrainReport"]

Schedule = Literal["onecycle", "cosine", "constant"]
ClassWeighting = Literal["none", "median_frequency", "sqrt_median_frequency"]


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
        class_weights: ``median_frequency`` (or its square root, ``sqrt_median_frequency``)
            weights from the training chips' class histogram for a ``wce`` loss term;
            ``none`` otherwise.
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
        photometric: Strength of a random photometric change of the training chips'
            spectral bands (brightness, contrast, colour, blur, noise, haze;
            :func:`geoseg.augment.photometric`), 0..2; 0 = off.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        workers: DataLoader worker processes (0 reads in the main process).
        cache: Keep downsampled chips in memory after their first read (each worker its own).
        init_weights: A LOCAL ResNet state dict to initialise the backbone from.
        contact_weight: Weight of the building-contact loss (a positive-weighted binary
            cross-entropy) added to the class loss, when the store has a contact target
            (``geoseg tile --footprints``); the model then has a ``contact`` output. 0 trains
            without it.
        minutes: A time budget for the whole call (None: none). The epochs are fitted to
            it before training starts (``epochs`` is then replaced by the number that fits,
            see :mod:`geoseg.train._budget`) and the run stops early, with the best
            checkpoint, if the epochs run slower than timed. The result then depends on the
            machine's speed; the fitted ``epochs`` are saved, and rerunning with them
            reproduces the run.
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
    photometric: float = 0.0
    device: Device = "auto"
    workers: int = 0
    cache: bool = False
    init_weights: str | None = None
    contact_weight: float = 1.0
    minutes: float | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.epochs >= 1, f"epochs={self.epochs}: must be >= 1"),
            (
                self.minutes is None or (math.isfinite(self.minutes) and self.minutes > 0),
                f"minutes={self.minutes}: the time budget must be a number of minutes > 0",
            ),
            (self.batch_size >= 1, f"batch_size={self.batch_size}: must be >= 1"),
            (
                math.isfinite(self.lr) and self.lr > 0,
                f"lr={self.lr}: the learning rate must be > 0",
            ),
            (self.weight_decay >= 0, f"weight_decay={self.weight_decay}: must be >= 0"),
            (
                math.isfinite(self.contact_weight) and self.contact_weight >= 0,
                f"contact_weight={self.contact_weight}: must be a number >= 0",
            ),
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
            (
                0.0 <= self.photometric <= 2.0,
                f"photometric={self.photometric}: the strength must be >= 0 and <= 2 (0 = off)",
            ),
            (self.workers >= 0, f"workers={self.workers}: must be >= 0"),
            (
                self.schedule in get_args(Schedule),
                f"schedule={self.schedule!r}: use one of {', '.join(get_args(Schedule))}",
            ),
            (
                isinstance(self.device, str) and bool(re.fullmatch(DEVICE_PATTERN, self.device)),
                f"device={self.device!r}: use one of {', '.join(DEVICE_VALUES)}",
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
        loss: ``step``: the mean loss of the steps since the previous log point, read from
            the device at the log points only (the first step of an epoch, every
            :data:`~geoseg.train._loop.LOG_EVERY`-th and the last) and repeated by the steps
            in between; ``epoch``: the epoch's mean training loss.
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
        curves: The training-curve PNG drawn from it (losses, validation IoU per class).
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
        budget: With ``minutes``: how the budget was spent
            (:meth:`~geoseg.train._budget.BudgetPlan.to_dict`), else None.
        stopped_early: The run stopped before its last epoch because another would have
            ended past the ``minutes`` budget.
    """

    checkpoint: Path
    resume: Path
    log: Path
    curves: Path
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
    budget: dict[str, Any] | None = None
    stopped_early: bool = False
