"""The runners of a process: one per model and settings, built on first use, kept while busy.

Block tasks get their runner from :func:`get_runner`; a process keeps at most
:data:`_MAX_RUNNERS` idle ones (a busy runner, with a block open on it, is never closed).
:func:`bound_gdal_cache` caps GDAL's block cache of a predicting process.
"""

from __future__ import annotations

import logging
import os
import threading

from geoseg._torch import resolve_batch_size, resolve_device, resolve_precision
from geoseg.options import TTA, Device, Precision
from geoseg.predict._model import ModelRef, load_model
from geoseg.predict._runner import Runner

__all__ = ["GDAL_CACHE_MB", "bound_gdal_cache", "get_runner"]

logger = logging.getLogger("geoseg.predict._runner")

GDAL_CACHE_MB = 128
"""GDAL block cache per process while predicting (unless ``GDAL_CACHEMAX`` is set).

GDAL's default, 5 % of the RAM, would let the cache grow with the scene size; a block task
reads its area once.
"""


_RUNNERS: dict[tuple[str, str, str, int, str, bool], Runner] = {}
_RUNNERS_LOCK = threading.Lock()
_MAX_RUNNERS = 2


def get_runner(
    ref: ModelRef,
    *,
    device: Device | str,
    precision: Precision,
    batch_size: int | None,
    tta: TTA,
    compile: bool = False,
) -> Runner:
    """The process's runner for this model and settings (built on first use)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    bs = resolve_batch_size(batch_size, dev)
    key = (ref.meta.sha256, dev, prec, bs, tta, compile)
    with _RUNNERS_LOCK:
        r = _RUNNERS.get(key)
        if r is None:
            bound_gdal_cache()
            model = ref.inline if ref.inline is not None else load_model(ref)
            r = Runner(model, device=dev, precision=prec, batch_size=bs, tta=tta, compile=compile)
            for k in [k for k, v in _RUNNERS.items() if v.broken]:
                _RUNNERS.pop(k)  # a runner that failed or was closed is never handed out
            for k in list(_RUNNERS):
                if len(_RUNNERS) < _MAX_RUNNERS:
                    break
                if _RUNNERS[k].close_if_idle():  # a busy runner is kept, however many
                    del _RUNNERS[k]
            _RUNNERS[key] = r
            logger.info(
                "loaded model %s (%s) on %s, %s", ref.meta.name, ref.meta.sha256[:12], dev, prec
            )
        return r


def bound_gdal_cache() -> None:
    """Cap GDAL's (process-wide) block cache so that memory does not grow with the scene."""
    if "GDAL_CACHEMAX" not in os.environ:
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB)
