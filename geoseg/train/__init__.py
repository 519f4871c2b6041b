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

Devices: on CUDA, pinned memory and non-blocking copies, bf16 autocast, channels-last
memory format and the fused AdamW; on CPU, fp32. Within an epoch the host waits for the
device only where it reads the running training loss (every
:data:`~geoseg.train._loop.LOG_EVERY` steps) and at the end of validation (its confusion
matrix and loss). With a fixed seed a CPU run is reproducible, whatever the number of
DataLoader workers (see :mod:`geoseg.data`).

The package, in the order of a run: :mod:`._config` (options, events, the report),
:mod:`._plan` (what a run trains on), :mod:`._loop` (the loop and the learning-rate
schedule), :mod:`._step` (one training step, the loader, the device), :mod:`._validation`
(scoring whole chips: each epoch's validation and :func:`evaluate_chips`), :mod:`._resume`
(the checkpoint, the resume state and the metrics log), :mod:`._contact` (the building-contact
output of a store tiled with footprints: its loss, validation counts and positive weight),
:mod:`._budget` (a time budget fitted into epochs, and the defaults that adapt to a CPU).
"""

from __future__ import annotations

from geoseg.train._budget import adapt_store_to_cpu
from geoseg.train._config import TrainConfig, TrainEvent, TrainReport
from geoseg.train._loop import train
from geoseg.train._resume import log_path_for, resume_path_for
from geoseg.train._step import adamw_fused, make_loader, train_step
from geoseg.train._validation import evaluate_chips, evaluate_epoch

__all__ = [
    "TrainConfig",
    "TrainEvent",
    "TrainReport",
    "adamw_fused",
    "adapt_store_to_cpu",
    "evaluate_chips",
    "evaluate_epoch",
    "log_path_for",
    "make_loader",
    "resume_path_for",
    "train",
    "train_step",
]
