"""Torch helpers shared by prediction, training and the benchmarks.

* **Device, precision, batch size**: :func:`resolve_device` turns a device option (``auto``,
  ``cpu``, ``cuda``, ``cuda:N``) into the concrete device used here, ``cpu`` or ``cuda:N``
  (and refuses a CUDA device that this process does not see); :func:`resolve_precision` and
  :func:`resolve_batch_size` give the defaults that depend on that device.
* **The one safe loader**: :func:`safe_load` reads a file written by ``torch.save`` without
  running pickled code (``weights_only=True``) and turns every way it can fail into a
  :class:`~geoseg.errors.CheckpointError` that names the file.

Torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from geoseg._io import ignoring
from geoseg.errors import CheckpointError, ConfigError, first_line
from geoseg.options import Device, Precision, check_device

__all__ = [
    "LOAD_ERRORS",
    "class_argmax",
    "cpu_threads",
    "is_cuda",
    "resolve_batch_size",
    "resolve_device",
    "resolve_precision",
    "safe_load",
    "torch_device",
]

LOAD_ERRORS: tuple[type[BaseException], ...] = (
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    IndexError,
    KeyError,
    zipfile.BadZipFile,
)
"""What ``torch.load`` raises for a truncated, corrupt or foreign file (besides refusing
unsafe content with :class:`pickle.UnpicklingError`)."""


def class_argmax(scores: Any) -> Any:
    """The index of the largest score along the class axis, -3: ``(..., C, H, W)`` -> uint8.

    Ties go to the lower index, as :func:`torch.argmax`'s do. Running comparisons over the
    classes instead of ``argmax``: on the CPU a reduction across the strided class axis of a
    large map is several times slower (0.36 s against 0.05 s for 4 x 6 x 1024 x 1024).

    Args:
        scores: A float or integer tensor with the classes on axis -3 (at most 256 classes).
    """
    import torch

    best = scores.select(-3, 0).clone()
    cls = torch.zeros_like(best, dtype=torch.uint8)
    for k in range(1, int(scores.shape[-3])):
        s = scores.select(-3, k)
        more = s > best
        best = torch.maximum(best, s)
        cls.masked_fill_(more, k)
    return cls


def resolve_device(device: Device | str) -> str:
    """The concrete device to run on in this process: ``cpu`` or ``cuda:N``.

    * ``cpu``: ``cpu``.
    * ``auto``: what ``cuda`` gives when CUDA is available, else ``cpu``.
    * ``cuda``: the current CUDA device, ``cuda:{torch.cuda.current_device()}``, which is
      what torch itself means by ``cuda``: ``cuda:0`` unless the calling thread chose
      another with ``torch.cuda.set_device``. Naming the index makes runs on two GPUs
      of one machine distinguishable (model caches, sidecars, logs).
    * ``cuda:N``: itself, once ``N`` is checked against the devices this process sees
      (``torch.cuda.device_count()``, which honours ``CUDA_VISIBLE_DEVICES``);
      ``cuda:01`` is ``cuda:1``.

    Raises:
        ConfigError: Not a device option; ``cuda`` or ``cuda:N`` without CUDA; ``N`` not
            below the number of CUDA devices. One line that says how to fix it.
    """
    import torch

    check_device(device)
    if device == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        if device == "auto":
            return "cpu"
        raise ConfigError(
            f"--device {device}: no CUDA device is available here (torch.cuda.is_available() "
            "is False); use --device cpu or auto"
        )
    if device in ("auto", "cuda"):
        return f"cuda:{torch.cuda.current_device()}"
    index = int(device.partition(":")[2])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {device}: {_cuda_devices_seen(count)}; {_cuda_fix(count)}")
    return f"cuda:{index}"


def _cuda_devices_seen(count: int) -> str:
    """``this machine has 2 CUDA devices (0-1)``, naming ``CUDA_VISIBLE_DEVICES`` if set."""
    ids = "0" if count == 1 else f"0-{count - 1}"
    devices = f"{count} CUDA device{'' if count == 1 else 's'} ({ids})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return (
            f"this process sees {devices} (CUDA_VISIBLE_DEVICES={visible}, which numbers "
            "the devices it shows from 0)"
        )
    return f"this machine has {devices}"


def _cuda_fix(count: int) -> str:
    """How to name a CUDA device that exists."""
    if count == 1:
        return "use --device cuda:0 or cuda"
    return f"use --device cuda:0 to cuda:{count - 1}, or cuda"


def torch_device(device: Device | str) -> Any:
    """The ``torch.device`` of a ``device`` option, resolved by :func:`resolve_device`."""
    import torch

    return torch.device(resolve_device(device))


def is_cuda(device: str) -> bool:
    """Whether a device name (``cuda``, ``cuda:N``; not ``auto``) is a CUDA device."""
    return device == "cuda" or device.startswith("cuda:")


def resolve_precision(precision: Precision | str, device: str) -> str:
    """``bf16`` or ``fp32``: ``auto`` is bf16 on CUDA (``cuda``, ``cuda:N``), fp32 on the CPU."""
    if precision == "auto":
        return "bf16" if is_cuda(device) else "fp32"
    return precision


def resolve_batch_size(batch_size: int | None, device: str) -> int:
    """Tiles per model call: ``batch_size``, or 32 on CUDA and 4 on the CPU when None."""
    return batch_size or (32 if is_cuda(device) else 4)


def safe_load(
    path: str | os.PathLike[str],
    *,
    map_location: str = "cpu",
    what: str = "checkpoint",
    hint: str = "re-copy it or write it again",
) -> Any:
    """Load a file written by ``torch.save`` without executing any pickled code.

    Only tensors and plain data are accepted (``torch.load(weights_only=True)``); torch's
    warnings about foreign pickle protocols are silenced (the refusal is reported instead).

    Args:
        path: The file.
        map_location: Where tensors are loaded (``torch.load``'s ``map_location``).
        what: What the file should be, for messages (``checkpoint``, ``torch state
            dict``...).
        hint: How to fix it, appended to every message.

    Returns:
        What ``torch.load`` returned (the caller checks its structure).

    Raises:
        CheckpointError: The file is missing, truncated, corrupt, not a torch file, or
            holds objects other than weights and plain data; the message names the file.
    """
    import torch

    p = Path(path)
    try:
        # torch warns about foreign pickle protocols before refusing them; we report instead.
        with ignoring(UserWarning):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{p}: refused to load: the file contains objects other than weights and plain data "
            f"({_refusal(exc)}); it was tampered with or is not a {what}; {hint}"
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{p}: {what} not found; {hint}") from None
    except LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{p}: not a readable {what} (truncated or corrupt: {first_line(exc, 160)}); {hint}"
        ) from None


def _refusal(exc: BaseException) -> str:
    """The line of torch's refusal that names what was refused (not its advice to load it)."""
    for line in str(exc).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip()[:160]
    return first_line(exc, 160, "unsafe content")


def cpu_threads() -> int:
    """Intra-op threads of a model thread on the CPU: half the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(1, cores // 2)
