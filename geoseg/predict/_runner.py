"""The model runner: one model on one device per worker process, fed full batches.

All per-pixel work of a prediction happens here, on the model's device, in one model thread
per runner (:func:`get_runner`: one per model and settings in a process, built on first use):

1. Block tasks open a block (:meth:`Runner.open_block`), then send the raw area its tiles
   cover (:meth:`Runner.submit_area`: image bands in their own pixel type, elevation float32,
   a validity mask, the ground under a derived nDSM). The model thread copies it to the device
   (:class:`Transfers`: copy streams on CUDA), normalises it there and queues views of its tiles.
2. Tiles of every open block are cut into batches of exactly ``batch_size`` (the last one
   padded: a tile's output never depends on its batch); the model runs under test-time
   augmentation; softmax probabilities are quantised to integers and added, with their
   integer window weights, into the block's accumulator on the device
   (:class:`geoseg.blend.Accumulator`). Integer sums do not depend on the order of
   addition: the result is bit-identical for any batch, block size, worker count or resume.
3. :meth:`Runner.finish_block` decodes the block's core on the device (argmax, and uint8
   probabilities when asked) and brings back only what is written: uint8 classes (and
   probabilities, and the uint8 probabilities of a model's extra outputs, such as building
   contact), and the int32 sums of its seams and of the pieces it owes to its neighbours.
   Extra outputs are blended as channels after the classes, out of the class argmax.

On CUDA: bf16 autocast, ``channels_last``, ``cudnn.benchmark`` (the batch shape is fixed),
optional ``torch.compile`` (the first batch is timed as the warm-up and a failed compile
falls back to the eager model with a warning). Results come back through blocking events,
so no thread spins a core while the GPU works.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg._torch import cpu_threads
from geoseg.blend import (
    Accumulator,
    BlendKind,
    Edges,
    decode,
    decode_extra,
    quantize_weights,
    weight_window,
)
from geoseg.blocks import Rect
from geoseg.options import TTA
from geoseg.predict._device import (
    Transfers,
    compile_module,
    model_probs,
    normalise_raw,
    quantize,
)
from geoseg.predict._model import PredictModel
from geoseg.raster import RawBlock

if TYPE_CHECKING:
    import torch

__all__ = [
    "BlockHandle",
    "BlockOutput",
    "Runner",
    "WeightKey",
]

logger = logging.getLogger(__name__)

_LINGER_S = 0.005  # how long the model thread waits to fill a batch before running it padded
WeightKey = tuple[int, int, BlendKind, int, Edges, int]
"""A tile's weight window: (rows, cols, blend kind, overlap, edges on the scene edge, bits)."""


@dataclass(eq=False)
class BlockHandle:
    """One output block open on a runner (its accumulator lives on the runner's device).

    Attributes:
        rect: The scene pixels its own tiles cover (the accumulator's rectangle).
        scale: Scene pixels per model pixel (tiles are upsampled by it before blending).
    """

    rect: Rect
    scale: int = 1
    acc: Accumulator | None = field(default=None, repr=False)
    error: BaseException | None = field(default=None, repr=False)
    device_s: float = 0.0
    released: bool = False


@dataclass
class BlockOutput:
    """What a finished block brings back from the device (host arrays).

    Attributes:
        classes: (h, w) uint8 classes of the block's core.
        probs: (C, h, w) uint8 probabilities, or None.
        seams: int32 sums (C + 1, h, w) of each requested seam rectangle.
        pieces: int32 sums of each requested piece rectangle.
        device: The device that computed it (``cpu``, ``cuda:0``...).
        precision: The precision it ran at (``bf16``, ``fp32``).
        batch_size: Tiles per model call.
        device_s: CPU seconds the model thread spent on this block's work (its share of
            every batch): on the CPU that is the per-pixel work; on CUDA, launching it.
        warmup_s: Seconds of the runner's first (compiling) batch; 0 without ``compile``.
        warnings: What the runner warned about (``--compile`` falling back).
        extra: (E, h, w) uint8 probabilities of the model's extra outputs, or None.
    """

    classes: npt.NDArray[np.uint8]
    probs: npt.NDArray[np.uint8] | None
    seams: list[npt.NDArray[np.int32]]
    pieces: list[npt.NDArray[np.int32]]
    device: str
    precision: str
    batch_size: int
    device_s: float
    warmup_s: float = 0.0
    warnings: tuple[str, ...] = ()
    extra: npt.NDArray[np.uint8] | None = None


@dataclass(eq=False)
class _Area:
    block: BlockHandle
    future: Future[None]
    tiles: Sequence[Rect]
    weights: Sequence[WeightKey]
    raw: RawBlock | None = None  # a raw area covering ``area`` ...
    area: Rect | None = None
    prepared: npt.NDArray[np.float32] | None = None  # ... or normalised model tiles
    left: int = 0


@dataclass(eq=False)
class _Finish:
    block: BlockHandle
    future: Future[BlockOutput]
    core: Rect
    valid: npt.NDArray[np.bool_]
    seams: Sequence[Rect]
    pieces: Sequence[Rect]
    probabilities: bool


class Runner:
    """One model on one device, fed full batches by a model thread (see the module docs).

    Args:
        model: The model.
        device: A concrete device (``cpu``, ``cuda``, ``cuda:N``).
        precision: ``bf16`` or ``fp32``.
        batch_size: Tiles per model call.
        tta: Test-time augmentation.
        compile: ``torch.compile`` the model (CUDA only; elsewhere a warning).
    """

    def __init__(
        self,
        model: PredictModel,
        *,
        device: str,
        precision: str,
        batch_size: int,
        tta: TTA,
        compile: bool = False,
    ) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        module = model.module.eval().to(self.device)
        if self.cuda:
            module = module.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # one batch shape: tune its kernels once
        self.module = module
        self.warnings: list[str] = []
        self._forward: Callable[[torch.Tensor], torch.Tensor] = module
        if compile:
            self._forward = compile_module(module, self.device, self._warn)
        self._warm = not compile or self._forward is module
        self.compile_s = 0.0
        self.num_classes = model.schema.num_classes
        self.extra = len(model.extra_outputs)  # channels after the classes
        self.channels = self.num_classes + self.extra
        self.mean = torch.tensor(model.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(model.std, dtype=torch.float32, device=self.device)
        self.batch_size = batch_size
        self.tta = tta
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else None
        self.batches = 0
        self.tiles = 0
        self.transfers = Transfers(self.device)
        self._queue: queue.Queue[_Area | _Finish | None] = queue.Queue()
        self._tiles: deque[tuple[_Area, int, torch.Tensor]] = deque()
        self._weights: dict[WeightKey, torch.Tensor] = {}
        self._batch: torch.Tensor | None = None
        self._last: Any = None  # CUDA event after the last batch: is the GPU still busy?
        self._broken: BaseException | None = None
        self._open = 0  # blocks opened and not yet delivered (a busy runner is never evicted)
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="geoseg-model", daemon=True)
        self._thread.start()

    # -- the block tasks' side ------------------------------------------------------------

    def open_block(self, rect: Rect, *, scale: int = 1) -> BlockHandle:
        """A new block whose own tiles cover ``rect`` (its accumulator is made on first use).

        Raises:
            RuntimeError: The runner was closed (evicted by another model's runner): the
                block fails and the same command resumes it.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the model runner was closed; run the same command again")
            self._open += 1
        return BlockHandle(rect=rect, scale=scale)

    def close_if_idle(self) -> bool:
        """Close the runner if no block is open on it (atomically); whether it was closed."""
        with self._lock:
            if self._open or self._closed:
                return False
            self._closed = True
        self._queue.put(None)
        return True

    def _release(self, block: BlockHandle) -> None:
        with self._lock:
            if not block.released:
                block.released = True
                self._open -= 1

    def submit_area(
        self,
        block: BlockHandle,
        raw: RawBlock,
        area: Rect,
        tiles: Sequence[Rect],
        weights: Sequence[WeightKey],
    ) -> Future[None]:
        """Queue a raw area and the tiles in it; the future resolves once they are blended."""
        return self._put(_Area(block, Future(), tiles, weights, raw=raw, area=area))

    def submit_tiles(
        self,
        block: BlockHandle,
        prepared: npt.NDArray[np.float32],
        tiles: Sequence[Rect],
        weights: Sequence[WeightKey],
    ) -> Future[None]:
        """Queue normalised model tiles (n, bands, T, T) (a coarser model: averaged on the host)."""
        return self._put(_Area(block, Future(), tiles, weights, prepared=prepared))

    def finish_block(
        self,
        block: BlockHandle,
        *,
        core: Rect,
        valid: npt.NDArray[np.bool_],
        seams: Sequence[Rect] = (),
        pieces: Sequence[Rect] = (),
        probabilities: bool = False,
    ) -> Future[BlockOutput]:
        """Decode ``core`` and bring back its classes and the sums of ``seams`` and ``pieces``.

        Call it once every area of the block is blended (their futures resolved).
        """
        f: Future[BlockOutput] = Future()
        self._put(_Finish(block, f, core, valid, seams, pieces, probabilities))
        return f

    def discard_block(self, block: BlockHandle) -> None:
        """Give up an open block (its task failed): its queued tiles are skipped."""
        block.error = block.error or RuntimeError("the block was discarded")
        block.acc = None
        self._release(block)

    def close(self) -> None:
        """Stop the model thread (queued work is still done first)."""
        with self._lock:
            self._closed = True
        self._queue.put(None)

    def _put(self, item: Any) -> Any:
        self._queue.put(item)
        if self._broken is not None:
            self._drain(self._broken)
        return item.future

    @property
    def broken(self) -> bool:
        """Whether the runner failed or was closed (it serves nothing more)."""
        return self._broken is not None or self._closed

    def _warn(self, msg: str) -> None:
        logger.warning("%s", msg)
        self.warnings.append(msg)

    # -- the model thread ------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.set_device(self.device)  # no stream switch ever touches another GPU
        else:
            # This thread's own intra-op threads (thread-local): on the CPU the model thread
            # takes half the cores, the block tasks read and the driver writes on the rest
            # (measured on 2 cores: 1.9x faster and 44 % less CPU than torch's default of all).
            torch.set_num_threads(cpu_threads())
        try:
            self._serve()
            # closed: anything queued from now on fails at once instead of waiting
            self._broken = RuntimeError("the model runner was closed; run the same command again")
            self._drain(self._broken)
        except BaseException as exc:
            # A failure of the runner itself (not of one block: _fail handles those) must
            # not leave block tasks waiting forever: fail everything, now and later.
            self._broken = exc
            for item, _, _ in self._tiles:
                _set_exception(item.future, exc)
            self._drain(exc)
        finally:
            self.transfers.close()

    def _drain(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                _set_exception(item.future, exc)

    def _serve(self) -> None:
        closing = False
        while True:
            n = len(self._tiles)
            if n >= self.batch_size or (closing and n):
                self._run_batch()
                continue
            if closing:
                return
            try:
                item = self._queue.get(timeout=None if n == 0 else _LINGER_S)
            except queue.Empty:
                if self._last is not None and not self._last.query():
                    continue  # the GPU is still busy: a fuller batch may yet come
                self._run_batch()  # nothing new and the device idle: run what there is, padded
                continue
            if item is None:
                closing = True
            elif isinstance(item, _Area):
                self._accept(item)
            else:
                self._finish(item)

    def _accept(self, item: _Area) -> None:
        """Send an area to the device and queue its tiles (views of it)."""
        block = item.block
        if block.error is not None:
            _set_exception(item.future, block.error)
            return
        t0 = time.thread_time()
        try:
            if item.raw is not None:
                raw, area = item.raw, item.area
                assert area is not None
                x = normalise_raw(raw, self.mean, self.std, self.transfers)
                views = [x[(slice(None), *t.slices(area))] for t in item.tiles]
            else:
                assert item.prepared is not None
                (x,) = self.transfers.to_device([item.prepared])
                views = list(x)
        except Exception as exc:  # not swallowed: handed to the block's task, which raises it
            self._fail_block(block, exc, [item])
            return
        item.left = len(views)
        for i, v in enumerate(views):
            self._tiles.append((item, i, v))
        block.device_s += time.thread_time() - t0
        if not views:
            _set_result(item.future, None)

    def _run_batch(self) -> None:
        """Run one batch of queued tiles and blend each into its block."""
        import torch

        t0 = time.thread_time()
        take = [self._tiles.popleft() for _ in range(min(self.batch_size, len(self._tiles)))]
        live = [(item, i, v) for item, i, v in take if item.block.error is None]
        if not live:
            return
        try:
            q = self._quantized([v for _, _, v in live])
            for k, (item, i, _) in enumerate(live):
                self._blend(item, i, q[k])
        except Exception as exc:  # not swallowed: handed to the blocks' tasks, which raise it
            for block in {id(it.block): it.block for it, _, _ in live}.values():
                self._fail_block(block, exc, [it for it, _, _ in live if it.block is block])
            if self.cuda:
                torch.cuda.synchronize(self.device)
            return
        share = (time.thread_time() - t0) / len(live)
        for item, _, _ in live:
            item.block.device_s += share
            item.left -= 1
            if item.left == 0:
                _set_result(item.future, None)
        self.batches += 1
        self.tiles += len(live)
        if self.cuda:
            self._last = torch.cuda.Event()
            self._last.record()

    def _quantized(self, views: list[torch.Tensor]) -> torch.Tensor:
        """Quantised probabilities (n, C, T, T) int32 of a batch of tiles (padded to full)."""
        import torch

        n = len(views)
        shape = (self.batch_size, *views[0].shape)
        if self._batch is None or tuple(self._batch.shape) != shape:
            fmt = torch.channels_last if self.cuda else torch.contiguous_format
            self._batch = torch.empty(shape, device=self.device, memory_format=fmt)
        buf = self._batch
        for k, v in enumerate(views):
            buf[k].copy_(v)
        if n < self.batch_size:
            buf[n:].zero_()  # a fixed batch shape: a tile's output never depends on its batch
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.dtype or torch.float32,
                enabled=self.dtype is not None,
            ),
        ):
            probs = self._probs(buf)
            return quantize(probs[:n])

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        if self._warm:
            return model_probs(
                self._forward, x, tta=self.tta, num_classes=self.num_classes, extra=self.extra
            )
        t0 = time.perf_counter()
        try:
            out = model_probs(
                self._forward, x, tta=self.tta, num_classes=self.num_classes, extra=self.extra
            )
            if self.cuda:
                import torch

                torch.cuda.synchronize(self.device)
        except RuntimeError as exc:  # torch.compile's failures are RuntimeErrors
            import torch

            if isinstance(exc, torch.OutOfMemoryError):
                raise  # not the compiler's fault: the batch does not fit
            self._warn(f"--compile: torch.compile failed ({exc}); running the model eagerly")
            self._forward = self.module
            out = model_probs(
                self._forward, x, tta=self.tta, num_classes=self.num_classes, extra=self.extra
            )
        self.compile_s = time.perf_counter() - t0
        self._warm = True
        return out

    def _blend(self, item: _Area, i: int, q: torch.Tensor) -> None:
        import torch

        block, tile = item.block, item.tiles[i]
        if block.scale > 1:
            up = torch.nn.functional.interpolate(
                q[None].to(torch.float32),
                scale_factor=block.scale,
                mode="bilinear",
                align_corners=False,
            )
            q = up[0, :, : tile.height, : tile.width].round_().clamp_(0.0, 65535.0)
        acc = block.acc  # the task's thread may drop it (discard_block) at any time
        if acc is None:
            if block.error is not None:
                return
            acc = block.acc = Accumulator(block.rect, self.channels, device=self.device)
        acc.add(q, self._weight(item.weights[i]), tile)

    def _weight(self, key: WeightKey) -> torch.Tensor:
        w = self._weights.get(key)
        if w is None:
            h, wd, kind, overlap, edges, bits = key
            win = weight_window((h, wd), kind=kind, overlap=overlap, edges=edges)
            (w,) = self.transfers.to_device([quantize_weights(win, bits)])
            self._weights[key] = w
        return w

    def _finish(self, fin: _Finish) -> None:
        """Decode a block on the device and send back what is written."""
        block = fin.block
        fin.future.add_done_callback(lambda _: self._release(block))
        if block.error is not None:
            _set_exception(fin.future, block.error)
            return
        t0 = time.thread_time()
        ns = len(fin.seams)
        device = str(self.device)

        def deliver(arrays: list[npt.NDArray[Any]]) -> None:
            has_probs = fin.probabilities
            rest = arrays[1:]
            probs = rest.pop(0) if has_probs else None
            extra = rest.pop(0) if self.extra else None
            _set_result(
                fin.future,
                BlockOutput(
                    classes=arrays[0],
                    probs=probs,
                    extra=extra,
                    seams=rest[:ns],
                    pieces=rest[ns:],
                    device=device,
                    precision=self.precision,
                    batch_size=self.batch_size,
                    device_s=block.device_s,
                    warmup_s=self.compile_s,
                    warnings=tuple(self.warnings),
                ),
            )

        try:
            acc = block.acc or Accumulator(block.rect, self.channels, device=self.device)
            block.acc = None  # its memory goes back once the copies below have read it
            (valid,) = self.transfers.to_device([fin.valid])
            core = acc.sums[(slice(None), *fin.core.slices(acc.rect))]
            classes, probs = decode(core, valid, probabilities=fin.probabilities, extra=self.extra)
            extra = [decode_extra(core, valid, extra=self.extra)] if self.extra else []
            sums = [acc.take(r) for r in (*fin.seams, *fin.pieces)]
            tensors = [classes, *([] if probs is None else [probs]), *extra, *sums]
            block.device_s += time.thread_time() - t0
            self.transfers.to_host(tensors, deliver, lambda e: _set_exception(fin.future, e))
        except Exception as exc:  # not swallowed: handed to the block's task, which raises it
            _set_exception(fin.future, exc)

    def _fail_block(self, block: BlockHandle, exc: BaseException, items: list[_Area]) -> None:
        """Fail a block: its queued tiles are dropped and its tasks get ``exc``."""
        block.error = exc
        block.acc = None
        for item in items:
            _set_exception(item.future, exc)


def _set_exception(fut: Future[Any], exc: BaseException) -> None:
    """Fail ``fut`` unless it already has an outcome (several threads may try)."""
    with contextlib.suppress(InvalidStateError):
        if not fut.done():
            fut.set_exception(exc)


def _set_result(fut: Future[Any], value: Any) -> None:
    with contextlib.suppress(InvalidStateError):
        if not fut.done():
            fut.set_result(value)
