"""Training to a time budget (``minutes``) and the defaults that adapt to a CPU.

:func:`fit_budget` times the run's own work before it starts (a few training steps of a
throw-away copy of the model on real chips, the validation of one batch, the writing of a
checkpoint and resume state) and fits the number of epochs, so that the learning-rate
schedule is complete when the budget ends. The loop then stops early only if the epochs run
slower than the probe said (:func:`over_budget`), keeping the best checkpoint so far.

:func:`adapt_to_cpu` chooses, for the options a user left unset, what a small CPU machine
needs: a model ground sample distance near :data:`CPU_GSD` (chips read coarser), random
crops of :data:`CPU_CROP` pixels, no DataLoader workers and chips cached in memory.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg._io import available_memory
from geoseg.errors import ConfigError
from geoseg.train._config import TrainConfig
from geoseg.train._step import to_device, train_step

__all__ = [
    "CPU_CROP",
    "CPU_GSD",
    "SAFETY",
    "BudgetPlan",
    "adapt_store_to_cpu",
    "adapt_to_cpu",
    "epochs_that_fit",
    "fit_budget",
    "over_budget",
]

logger = logging.getLogger("geoseg.train")

CPU_GSD = 0.2
"""Model ground sample distance (metres) that the CPU defaults aim at: chips finer than this
are read ``round(CPU_GSD / gsd)`` times coarser (5 cm Potsdam chips: 4x, 20 cm)."""

CPU_CROP = 128
"""Random training crop (model pixels) of the CPU defaults."""

SAFETY = 0.9
"""Share of the time left that the fitted epochs may take (the rest absorbs noise)."""

PROBE_STEPS = 3
"""Timed training steps of the probe (after one warm-up step)."""


@dataclass(frozen=True)
class BudgetPlan:
    """How a time budget was spent on epochs.

    Attributes:
        minutes: The budget.
        epochs: Epochs fitted into it.
        step_seconds: Seconds per training step (the probe's median).
        epoch_seconds: Predicted seconds per epoch (steps, validation, saving).
        first_epoch_seconds: Predicted extra seconds of the first epoch (reading the chips
            before they are cached).
        seconds_left: Seconds of the budget left when the epochs were fitted.
    """

    minutes: float
    epochs: int
    step_seconds: float
    epoch_seconds: float
    first_epoch_seconds: float
    seconds_left: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain data for logs and reports."""
        return {
            "minutes": self.minutes,
            "epochs": self.epochs,
            "step_seconds": round(self.step_seconds, 4),
            "epoch_seconds": round(self.epoch_seconds, 2),
            "first_epoch_seconds": round(self.first_epoch_seconds, 2),
            "seconds_left": round(self.seconds_left, 1),
        }


def epochs_that_fit(
    seconds_left: float, *, epoch_seconds: float, first_epoch_seconds: float = 0.0
) -> int:
    """How many epochs of ``epoch_seconds`` fit in :data:`SAFETY` of ``seconds_left``.

    The first epoch costs ``first_epoch_seconds`` more. Zero when not even one fits.
    """
    usable = SAFETY * seconds_left - first_epoch_seconds
    if epoch_seconds <= 0:
        return 1 if usable > 0 else 0
    return max(0, math.floor(usable / epoch_seconds))


def over_budget(
    elapsed: float, budget: float, epoch_times: list[float], *, epoch: int, epochs: int
) -> bool:
    """Whether the run must stop after ``epoch``: another epoch would end past the budget.

    The next epoch is predicted to take the mean of the epochs after the first (which reads
    the chips before they are cached), or the first one's time when it is the only one.
    """
    if epoch >= epochs or not epoch_times:
        return False
    warm = epoch_times[1:] or epoch_times
    return elapsed + sum(warm) / len(warm) > budget


def fit_budget(
    config: TrainConfig,
    *,
    model: nn.Module,
    loss_fn: nn.Module,
    train_item: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    val_item: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    train_chips: int,
    val_chips: int,
    validate: Callable[[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]], Any],
    device: torch.device,
    elapsed: float,
    scratch: os.PathLike[str] | str,
) -> BudgetPlan:
    """Fit the epochs of a run into ``config.minutes``.

    Times, on this machine: reading a batch of training chips (``train_item``), training
    steps of a deep copy of ``model`` on it (the run's own weights and random state are not
    touched), validating one batch (``validate``, the run's validation), and writing a
    checkpoint and resume state of the copy to ``scratch`` (a folder; the probe file is
    removed).

    Args:
        config: The run's options (``minutes`` set).
        model: The run's model, on ``device``.
        loss_fn: The run's loss.
        train_item: A training sample by index (crop and augmentation as in training).
        val_item: A validation sample by index.
        train_chips: Training chips (samples per epoch).
        val_chips: Validation chips.
        validate: Runs the run's validation on a list of batches.
        device: The run's device.
        elapsed: Seconds of the budget already spent (data planning, band statistics).
        scratch: Folder for the probe's checkpoint file (or its nearest existing ancestor).

    Raises:
        ConfigError: Not even one epoch fits in what is left of the budget.
    """
    assert config.minutes is not None
    budget = 60.0 * config.minutes
    t_start = time.perf_counter()
    n = min(config.batch_size, train_chips)
    t0 = time.perf_counter()
    items = [train_item(i) for i in range(n)]
    read_s = (time.perf_counter() - t0) / n
    x, y = to_device(
        torch.stack([it[0] for it in items]), torch.stack([it[1] for it in items]), device
    )
    probe = copy.deepcopy(model)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-6)
    times = []
    for _ in range(PROBE_STEPS + 1):
        t0 = time.perf_counter()
        train_step(probe, x, y, loss_fn=loss_fn, opt=opt, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    step_s = sorted(times[1:])[len(times[1:]) // 2]
    steps = math.ceil(train_chips / config.batch_size)
    val_s = 0.0
    val_read_s = 0.0
    if val_chips:
        m = min(config.batch_size, val_chips)
        t0 = time.perf_counter()
        vitems = [val_item(i) for i in range(m)]
        val_read_s = (time.perf_counter() - t0) / m
        batch = [(torch.stack([v[0] for v in vitems]), torch.stack([v[1] for v in vitems]))]
        t0 = time.perf_counter()
        validate(probe, batch)
        val_s = (time.perf_counter() - t0) / m * val_chips
    t0 = time.perf_counter()
    buffer = io.BytesIO()
    torch.save({"model": probe.state_dict(), "optimizer": opt.state_dict()}, buffer)
    folder = Path(scratch).absolute()
    while not folder.is_dir():  # the output folder may not exist yet: its nearest ancestor
        folder = folder.parent
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".geoseg-probe-", suffix=".pt") as f:
        f.write(buffer.getbuffer())
        f.write(buffer.getbuffer()[: len(buffer.getbuffer()) // 3])  # + the checkpoint
        f.flush()
    save_s = time.perf_counter() - t0
    del probe, opt
    reads = read_s * max(0, train_chips - n) + val_read_s * max(0, val_chips - min(n, val_chips))
    if config.cache:
        per_epoch = steps * step_s + val_s + save_s
        first = reads
    else:  # every epoch reads its chips; workers read while the model computes
        per_epoch = steps * max(step_s, read_s * config.batch_size / max(1, config.workers))
        per_epoch += val_s + val_read_s * val_chips / max(1, config.workers) + save_s
        first = 0.0
    left = budget - elapsed - (time.perf_counter() - t_start)
    epochs = epochs_that_fit(left, epoch_seconds=per_epoch, first_epoch_seconds=first)
    if epochs < 1:
        need = (first + per_epoch) / SAFETY + (budget - left)
        raise ConfigError(
            f"minutes={config.minutes:g}: one epoch takes about {per_epoch + first:.0f} s here "
            f"and only {max(0.0, left):.0f} s of the budget are left; give --minutes "
            f"{math.ceil(need / 60.0 * 10) / 10:g} or more, or fewer/smaller chips"
        )
    return BudgetPlan(
        minutes=config.minutes,
        epochs=epochs,
        step_seconds=step_s,
        epoch_seconds=per_epoch,
        first_epoch_seconds=first,
        seconds_left=left,
    )


def adapt_to_cpu(
    config: TrainConfig,
    *,
    store_gsd: float,
    chip_px: int,
    chips: int,
    bands: int,
    given: Collection[str],
    memory_bytes: int | None = None,
) -> tuple[TrainConfig, list[str]]:
    """The CPU defaults for the options not in ``given``, and a note for each one changed.

    * ``downsample``: chips finer than :data:`CPU_GSD` are read ``round(CPU_GSD / gsd)``
      times coarser (a 5 cm store trains a 20 cm model), or less where the chips would get
      smaller than the crop (``chip_size``, else :data:`CPU_CROP`);
    * ``chip_size``: random crops of :data:`CPU_CROP` model pixels when the chips are larger;
    * ``workers``: 0 (reading in the main process; worker processes compete with the
      model's threads for the few cores);
    * ``cache``: on, when the chips, read at the model's resolution, take at most a quarter
      of ``memory_bytes`` (the available memory by default).

    Args:
        config: The options as given (and their library defaults).
        store_gsd: Ground sample distance of the store's chips (metres).
        chip_px: Edge of the store's chips (pixels).
        chips: Chips in the store.
        bands: Bands per chip.
        given: Names of the options that the user set; they are kept.
        memory_bytes: Memory the cache may use a quarter of (None: the available memory).
    """
    changes: dict[str, Any] = {}
    notes: list[str] = []
    downsample = config.downsample
    if "downsample" not in given and store_gsd > 0 and store_gsd < 0.75 * CPU_GSD:
        # never so coarse that the chips get smaller than the crop (given, or CPU_CROP)
        crop = config.chip_size or CPU_CROP
        downsample = max(1, min(round(CPU_GSD / store_gsd), chip_px // crop))
        if downsample != config.downsample:
            changes["downsample"] = downsample
            notes.append(
                f"downsample {downsample} (model GSD {store_gsd * downsample:.2f} m from "
                f"{store_gsd:.2f} m chips)"
            )
    model_chip = -(-chip_px // downsample)
    if "chip_size" not in given and config.chip_size is None and model_chip > CPU_CROP:
        changes["chip_size"] = CPU_CROP
        notes.append(f"random {CPU_CROP} px crops of the {model_chip} px chips")
    if "workers" not in given and config.workers != 0:
        changes["workers"] = 0
        notes.append("0 loader workers (chips read in the main process)")
    if "cache" not in given and not config.cache:
        if memory_bytes is None:
            memory_bytes = available_memory()
        need = chips * (bands * 4 + 2) * model_chip * model_chip
        if need <= memory_bytes // 4:
            changes["cache"] = True
            notes.append(f"chips cached in memory ({need / 2**20:.0f} MiB)")
    return (replace(config, **changes) if changes else config), notes


def adapt_store_to_cpu(
    store: str | os.PathLike[str], config: TrainConfig, *, given: Collection[str]
) -> tuple[TrainConfig, list[str]]:
    """:func:`adapt_to_cpu` for the chips of a tile store (its GSD, chip size and count).

    Raises:
        InputError: ``store`` is not a tile store, or has no chips.
    """
    from geoseg.data import chip_gsd
    from geoseg.errors import InputError
    from geoseg.tiles import read_store

    meta, index = read_store(store)
    if len(index) == 0:
        raise InputError(f"{store}: the tile store has no chips; tile some scenes first")
    return adapt_to_cpu(
        config,
        store_gsd=chip_gsd(Path(store) / str(index["path"].iloc[0])),
        chip_px=int(meta.get("size", 0)),
        chips=len(index),
        bands=len(meta["bands"]),
        given=given,
    )
