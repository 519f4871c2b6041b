"""One training step and what surrounds it: the device, the DataLoader, a batch on the device.

Public so that the benchmarks time the very code that trains (:func:`train_step`,
:func:`make_loader`, :func:`adamw_fused`). On CUDA: pinned memory, non-blocking copies,
bf16 autocast, channels-last memory format and the fused AdamW; on CPU, fp32 and torch's
default AdamW.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from geoseg.data import ChipDataset, SeededSampler

__all__ = [
    "adamw_fused",
    "autocast",
    "make_loader",
    "seed_worker",
    "to_device",
    "train_step",
    "use_implementation",
]


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
        sampler=sampler,
        num_workers=workers,
        pin_memory=cuda,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=g,
        persistent_workers=workers > 0,
        # Not "fork" (Linux's default): the caller may have threads (a model runner, Dask,
        # tqdm's monitor, OpenMP and GDAL pools); a forked worker can inherit a lock one of
        # them held and wait on it forever, and the loader with it.
        multiprocessing_context="spawn" if workers > 0 else None,
        drop_last=False,
    )


def adamw_fused(device: torch.device, params: Iterable[torch.Tensor] = ()) -> bool | None:
    """The ``fused`` argument of :class:`torch.optim.AdamW` for parameters on ``device``.

    On CUDA ``True``: a few fused kernels update every parameter, where the default
    (foreach) implementation launches many per step. Its state dict has the same keys and
    shapes (the step counts become tensors on the parameters' device when loaded), so a
    resume state moves between devices and implementations. Elsewhere ``None``: torch's
    default, unchanged on the CPU. ``None`` too when a parameter is not a floating-point
    CUDA tensor (the fused kernel takes no other).

    Args:
        device: The training device.
        params: The parameters to optimise (already on ``device``); none to decide by the
            device alone.
    """
    if device.type != "cuda":
        return None
    if any(p.device.type != "cuda" or not p.is_floating_point() for p in params):
        return None
    return True


def use_implementation(opt: torch.optim.Optimizer, fused: bool | None) -> None:
    """Make a resumed AdamW run the implementation chosen here, not the saved one's.

    ``load_state_dict`` takes ``fused``/``foreach`` from the saved groups: a CPU state resumed
    on CUDA would run unfused, a CUDA state on the CPU the CPU's fused kernel. The fused
    kernels want their step counts as float32 tensors on the parameters' device.
    """
    for group in opt.param_groups:
        group["fused"] = fused
        group["foreach"] = None
        if fused:
            for p in group["params"]:
                st = opt.state.get(p)
                if st and "step" in st:
                    st["step"] = torch.as_tensor(st["step"], dtype=torch.float32, device=p.device)


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
