"""Torch helpers shared by prediction, training and the benchmarks.

* **Device, precision, batch size**: :func:`resolve_device` turns ``auto`` into the device
  used here (and refuses ``cuda`` where there is none), :func:`resolve_precision` and
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
from typing import Any, get_args

from geoseg._io import ignoring
from geoseg.errors import CheckpointError, ConfigError, first_line
from geoseg.options import Device, Precision

__all__ = [
    "LOAD_ERRORS",
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


def resolve_device(device: Device | str) -> str:
    """The device to run on: ``cpu`` or ``cuda`` (``auto`` is CUDA when available).

    Raises:
        ConfigError: ``cuda`` without a CUDA device, or an unknown device name.
    """
    import torch

    if device not in get_args(Device):
        raise ConfigError(f"device={device!r}: use one of {', '.join(get_args(Device))}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA device is available here (torch.cuda.is_available() is "
            "False); use --device cpu or auto"
        )
    return device


def torch_device(device: Device | str) -> Any:
    """The ``torch.device`` of a ``device`` option, resolved by :func:`resolve_device`."""
    import torch

    return torch.device(resolve_device(device))


def resolve_precision(precision: Precision | str, device: str) -> str:
    """``bf16`` or ``fp32``: ``auto`` is bf16 on CUDA and fp32 on the CPU."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def resolve_batch_size(batch_size: int | None, device: str) -> int:
    """Tiles per model call: ``batch_size``, or 32 on CUDA and 4 on the CPU when None."""
    return batch_size or (32 if device == "cuda" else 4)


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
