"""One training step and what surrounds it: the device, the DataLoader, a batch on the device.

Public so that the benchmarks time the very code that trains (:func:`train_step`,
:func:`make_loader`). On CUDA: pinned memory, non-blocking copies, bf16 autocast and
channels-last memory format; on CPU, fp32.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from geoseg.data import ChipDataset, SeededSampler

__all__ = ["autocast", "make_loader", "seed_worker", "to_device", "train_step"]


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a DataLoader worker from the seed torch gave it."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # for third-party code that uses the global state
    random.seed(seed)


def make_loader(
    dataset: ChipDataset,
    sampler: SeededSampler,
    *,
    batch_size: int,
    workers: int,
    cuda: bool,
    seed: int,
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    """The DataLoader of training and validation: seeded, pinned on CUDA, workers kept.

    Args:
        dataset: The chips.
        sampler: Which chips, in which order, with which sample seeds.
        batch_size: Chips per batch (the last batch may be smaller).
        workers: Worker processes (0 reads in the calling process).
        cuda: Pin host memory for asynchronous copies to the GPU.
        seed: Seed of the loader's own generator (the workers' base seed).
    """
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=workers,
        pin_memory=cuda,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=g,
        persistent_workers=workers > 0,
        drop_last=False,
    )


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing (fp32) on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
) -> torch.Tensor:
    """One optimisation step on a batch already on the device; returns the loss (unsynced)."""
    with autocast(device):
        logits = model(x)
    loss: torch.Tensor = loss_fn(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the device; labels (uint8 from the loader) widened to int64 there."""
    if device.type == "cuda":
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True).long()
    return x, y.long()
