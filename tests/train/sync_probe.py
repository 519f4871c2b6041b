"""Spot, on the CPU, the calls that would make the host wait for a CUDA device.

``torch.cuda.set_sync_debug_mode`` needs a GPU; this probe records instead, while it is
active, every call made *by geoseg code* (the caller's module is ``geoseg`` or under it) of
what reads a tensor's value on the host (``item``, ``tolist``, ``numpy``, ``cpu``,
``bool``/``float``/``int``/``index`` of a tensor) or gives a shape that depends on the data
(``nonzero``, ``masked_select``, ``unique``, indexing with a boolean tensor). Calls made by
torch itself (the CPU optimiser's step counts, say) are not recorded.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch

_READS = (
    "item",
    "tolist",
    "numpy",
    "cpu",
    "nonzero",
    "masked_select",
    "unique",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
)
_FUNCTIONS = ("nonzero", "masked_select", "unique", "argwhere")


def _caller() -> str:
    """The module of the code that called the probed function (two frames up)."""
    return str(sys._getframe(2).f_globals.get("__name__", ""))


def _is_geoseg(module: str) -> bool:
    return module == "geoseg" or module.startswith("geoseg.")


def _has_bool_index(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in items)


@contextmanager
def host_reads() -> Iterator[list[str]]:
    """Record ``"module: what"`` for each host read by geoseg code while active."""
    calls: list[str] = []

    def probe(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = _caller()
            if _is_geoseg(caller):
                calls.append(f"{caller}: {name}")
            return original(*args, **kwargs)

        return wrapper

    original_getitem = torch.Tensor.__getitem__

    def getitem(self: torch.Tensor, index: Any) -> Any:
        caller = str(sys._getframe(1).f_globals.get("__name__", ""))
        if _is_geoseg(caller) and _has_bool_index(index):
            calls.append(f"{caller}: boolean index")
        return original_getitem(self, index)

    with pytest.MonkeyPatch.context() as mp:
        for name in _READS:
            mp.setattr(torch.Tensor, name, probe(f"Tensor.{name}", getattr(torch.Tensor, name)))
        for name in _FUNCTIONS:
            mp.setattr(torch, name, probe(f"torch.{name}", getattr(torch, name)))
        mp.setattr(torch.Tensor, "__getitem__", getitem)
        yield calls
