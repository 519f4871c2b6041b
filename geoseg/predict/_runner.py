"""The model runner: one model on one device per worker process, fed full batches.

Block tasks of a process :meth:`Runner.submit` tiles to the process's runner
(:func:`get_runner`, one per model hash and settings, built on first use); a model thread
concatenates the tiles of every pending request into batches of exactly ``batch_size``
(the last one padded to the same shape: a tile's output never depends on its batch), runs
the model with test-time augmentation (:data:`~geoseg.options.TTA`) and hands back
quantised softmax probabilities. On CUDA two batches are in flight (the next is copied into
its pinned buffer while the GPU computes the current one), copies are ``non_blocking`` both
ways (an event marks a batch's results as ready), with bf16 autocast and ``channels_last``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._torch import resolve_batch_size, resolve_device, resolve_precision
from geoseg.errors import CheckpointError
from geoseg.options import TTA, Device, Precision
from geoseg.predict._model import ModelRef, PredictModel, load_model

if TYPE_CHECKING:
    import torch

__all__ = ["GDAL_CACHE_MB", "Runner", "bound_gdal_cache", "get_runner"]

logger = logging.getLogger(__name__)

_DEPTH = 2  # batches the model thread keeps in flight (copy of one overlaps compute of another)
_LINGER_S = 0.005  # how long the runner waits to fill a batch before running it padded
GDAL_CACHE_MB = 128
"""GDAL block cache per process while predicting (unless ``GDAL_CACHEMAX`` is set).

GDAL's default, 5 % of the RAM, would let the cache grow with the scene size; reads need
only a tile row of the input's internal blocks.
"""


@dataclass(eq=False)  # identity: requests hold arrays, and the runner finds them in deques
class _Request:
    tiles: npt.NDArray[np.float32]  # (n, bands, T, T), normalised
    future: Future[npt.NDArray[np.uint16]]
    out: npt.NDArray[np.uint16] | None = None
    taken: int = 0
    done: int = 0


class Runner:
    """One model on one device, fed full batches by a model thread.

    Block tasks of the process :meth:`submit` tiles; the model thread concatenates tiles of
    all pending requests into batches of exactly ``batch_size`` (padding the last one when
    nothing else arrives within a few milliseconds) and returns quantised probabilities
    (``rint(p * 65535)`` as uint16, see :mod:`geoseg.blend`).

    The thread keeps :data:`_DEPTH` batches in flight: on CUDA, batch ``k + 1`` is copied
    into its pinned buffer and sent while the GPU still computes batch ``k``, and results
    come back by non-blocking copies into pinned buffers, synchronised by an event. On the
    CPU every step is synchronous and the same loop simply runs batch after batch.
    """

    def __init__(
        self, model: PredictModel, *, device: str, precision: str, batch_size: int, tta: TTA
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        module = model.module.eval().to(self.device)
        if self.cuda:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.num_classes = model.schema.num_classes
        self.bands = len(model.bands)
        self.batch_size = batch_size
        self.tta = tta
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.seconds = 0.0
        self.batches = 0
        self.tiles = 0
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._inputs: list[torch.Tensor] = []  # one (pinned) input buffer per slot
        self._outputs: list[torch.Tensor] = []  # one (pinned) output buffer per slot (CUDA)
        self._slot = 0
        self._broken: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="geoseg-model", daemon=True)
        self._thread.start()

    def submit(self, tiles: npt.NDArray[np.float32]) -> Future[npt.NDArray[np.uint16]]:
        """Queue ``tiles`` (n, bands, T, T); the future gives (n, C, T, T) uint16."""
        fut: Future[npt.NDArray[np.uint16]] = Future()
        self._queue.put(_Request(tiles=tiles, future=fut))
        if self._broken is not None:
            self._drain(self._broken)
        return fut

    def close(self) -> None:
        """Stop the model thread (pending requests are still answered first)."""
        self._queue.put(None)

    def _loop(self) -> None:
        pending: deque[_Request] = deque()
        flight: deque[tuple[list[tuple[_Request, int, int]], _Batch]] = deque()
        try:
            self._serve(pending, flight)
        except BaseException as exc:
            # A failure of the runner itself (not of the model: _fail handles those) must not
            # leave block tasks waiting forever: fail everything, now and later.
            self._broken = exc
            waiting = [*pending, *(r for parts, _ in flight for r, _, _ in parts)]
            for r in waiting:
                _set_exception(r.future, exc)
            self._drain(exc)

    def _drain(self, exc: BaseException) -> None:
        """Fail every request still queued (the runner is broken)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _set_exception(item.future, exc)

    def _serve(
        self,
        pending: deque[_Request],
        flight: deque[tuple[list[tuple[_Request, int, int]], _Batch]],
    ) -> None:
        closing = False
        while True:
            avail = sum(r.tiles.shape[0] - r.taken for r in pending)
            if avail < self.batch_size and not closing:
                if avail == 0 and flight:
                    # Nothing to add: deliver what is computed (its tasks may be waiting).
                    self._deliver(pending, *flight.popleft())
                    continue
                try:
                    item = self._queue.get(timeout=None if avail == 0 else _LINGER_S)
                except queue.Empty:
                    item = _LINGER  # nothing new: run what there is, padded
                if item is None:
                    closing = True
                elif item is not _LINGER:
                    pending.append(item)
                    continue
            if avail == 0:
                if flight:
                    self._deliver(pending, *flight.popleft())
                    continue
                if closing:
                    return
                continue
            parts: list[tuple[_Request, int, int]] = []
            need = self.batch_size
            for r in pending:
                k = min(need, r.tiles.shape[0] - r.taken)
                if k > 0:
                    parts.append((r, r.taken, r.taken + k))
                    r.taken += k
                    need -= k
                if need == 0:
                    break
            try:
                batch = self._launch([r.tiles[a:b] for r, a, b in parts])
            except BaseException as exc:
                self._fail(pending, parts, exc)
                if self.cuda:
                    # Copies the failed launch queued from or into its slot's pinned buffers
                    # must end before that slot is filled again.
                    import torch

                    torch.cuda.synchronize(self.device)
                continue
            flight.append((parts, batch))
            if len(flight) >= _DEPTH:
                self._deliver(pending, *flight.popleft())

    def _deliver(
        self, pending: deque[_Request], parts: list[tuple[_Request, int, int]], batch: _Batch
    ) -> None:
        """Wait for a launched batch and hand each request its share."""
        try:
            out = self._collect(batch)
        except BaseException as exc:
            self._fail(pending, parts, exc)
            return
        off = 0
        for r, a, b in parts:
            n = b - a
            if r.future.done():  # an earlier batch of this request failed
                off += n
                continue
            if r.out is None:
                r.out = np.empty(
                    (r.tiles.shape[0], self.num_classes, *r.tiles.shape[2:]), dtype=np.uint16
                )
            r.out[a:b] = out[off : off + n]
            off += n
            r.done += n
            if r.done == r.tiles.shape[0]:
                r.future.set_result(r.out)
                pending.remove(r)

    @staticmethod
    def _fail(
        pending: deque[_Request], parts: list[tuple[_Request, int, int]], exc: BaseException
    ) -> None:
        # Not swallowed: handed to the waiting block tasks, which re-raise it.
        for r in {id(r): r for r, _, _ in parts}.values():
            _set_exception(r.future, exc)
            if r in pending:
                pending.remove(r)

    def _launch(self, arrays: list[npt.NDArray[np.float32]]) -> _Batch:
        """Start one batch: fill a (pinned) buffer, send it, run the model, queue the result."""
        import torch

        t0 = time.perf_counter()
        n = sum(a.shape[0] for a in arrays)
        shape = (self.batch_size, *arrays[0].shape[1:])
        slot = self._slot  # advanced only once the launch succeeded
        if len(self._inputs) < _DEPTH or tuple(self._inputs[slot].shape) != shape:
            self._inputs = [
                torch.empty(shape, dtype=torch.float32, pin_memory=self.cuda) for _ in range(_DEPTH)
            ]
            self._outputs = []
        buf = self._inputs[slot]
        off = 0
        for a in arrays:
            buf[off : off + a.shape[0]].copy_(torch.from_numpy(a))
            off += a.shape[0]
        if n < self.batch_size:
            buf[n:].zero_()  # a fixed batch shape: a tile's output never depends on its batch
        with torch.inference_mode():
            x = buf.to(self.device, non_blocking=self.cuda)
            if self.cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(
                device_type=self.device.type,
                dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None,
            ):
                probs = self._probs(x)
            # rint(p * 65535) as in geoseg.blend.quantize_probs (round half to even).
            q = probs.mul(65535.0).round_().clamp_(0.0, 65535.0).to(torch.uint16)
            event = None
            if self.cuda:
                if len(self._outputs) < _DEPTH or self._outputs[slot].shape != q.shape:
                    self._outputs = [
                        torch.empty(q.shape, dtype=torch.uint16, pin_memory=True)
                        for _ in range(_DEPTH)
                    ]
                host = self._outputs[slot].copy_(q, non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            else:
                host = q
        self._slot = (slot + 1) % _DEPTH
        self.seconds += time.perf_counter() - t0
        return _Batch(host=host, n=n, event=event)

    def _collect(self, batch: _Batch) -> npt.NDArray[np.uint16]:
        """The batch's quantised probabilities (n, C, T, T), once the device is done."""
        t0 = time.perf_counter()
        if batch.event is not None:
            batch.event.synchronize()
        out: npt.NDArray[np.uint16] = batch.host[: batch.n].numpy()
        self.seconds += time.perf_counter() - t0
        self.batches += 1
        self.tiles += batch.n
        return out

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        views = _tta_views(self.tta)
        total: torch.Tensor | None = None
        for fwd, inv in views:
            logits = self.module(fwd(x))
            if logits.ndim != 4 or logits.shape[1] != self.num_classes:
                raise CheckpointError(
                    f"the model returned shape {tuple(logits.shape)} for input "
                    f"{tuple(x.shape)}; expected (N, {self.num_classes}, H, W) logits"
                )
            p = inv(torch.softmax(logits.float(), dim=1))
            total = p if total is None else total + p
        assert total is not None
        if total.shape[2:] != x.shape[2:]:
            raise CheckpointError(
                f"the model returned {tuple(total.shape[2:])} pixels for {tuple(x.shape[2:])} "
                "tiles; it must keep the input size"
            )
        return total / len(views)


def _set_exception(fut: Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it already has an outcome (several threads may try)."""
    with contextlib.suppress(InvalidStateError):
        if not fut.done():
            fut.set_exception(exc)


@dataclass
class _Batch:
    """A launched batch: its host result buffer, valid tiles and completion event (CUDA)."""

    host: torch.Tensor
    n: int
    event: Any = None


_LINGER = _Request(tiles=np.zeros((0, 0, 0, 0), np.float32), future=Future())


def _tta_views(tta: TTA) -> list[tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    import torch

    def ident(t: torch.Tensor) -> torch.Tensor:
        return t

    def flip(dims: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: torch.flip(t, dims)

    def rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: torch.rot90(t, k, dims=(2, 3))

    if tta == "none":
        return [(ident, ident)]
    if tta == "flip":
        return [(ident, ident)] + [(flip(d), flip(d)) for d in ((3,), (2,), (2, 3))]

    def flip_rot(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: torch.rot90(torch.flip(t, (3,)), k, dims=(2, 3))

    def unrot_flip(k: int) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda t: torch.flip(torch.rot90(t, -k, dims=(2, 3)), (3,))

    views: list[tuple[Callable[[Any], Any], Callable[[Any], Any]]] = []
    for k in range(4):
        views.append((rot(k), rot(-k)))
        views.append((flip_rot(k), unrot_flip(k)))
    return views


_RUNNERS: dict[tuple[str, str, str, int, str], Runner] = {}
_RUNNERS_LOCK = threading.Lock()
_MAX_RUNNERS = 2


def get_runner(
    ref: ModelRef, *, device: Device, precision: Precision, batch_size: int | None, tta: TTA
) -> Runner:
    """The process's runner for this model and settings (built on first use)."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    bs = resolve_batch_size(batch_size, dev)
    key = (ref.meta.sha256, dev, prec, bs, tta)
    with _RUNNERS_LOCK:
        r = _RUNNERS.get(key)
        if r is None:
            bound_gdal_cache()
            model = ref.inline if ref.inline is not None else load_model(ref)
            r = Runner(model, device=dev, precision=prec, batch_size=bs, tta=tta)
            while len(_RUNNERS) >= _MAX_RUNNERS:
                _RUNNERS.pop(next(iter(_RUNNERS))).close()
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
