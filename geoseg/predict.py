"""Whole-scene prediction: Dask-scheduled, batched, seamlessly blended, resumable.

How a scene is predicted:

1. **Plan** (driver, pure math): one global tile plan for the scene (tile size, overlap,
   edge tiles shifted inside) and a grid of output blocks whose boundaries sit on tile
   starts (:func:`geoseg.blend.plan_blocks`). Each tile belongs to exactly one block, so no
   tile is ever computed twice, and each pixel always sees the same tiles whatever the
   block size.
2. **Block tasks** (Dask workers; tasks get paths, never open handles): a task opens the
   scene, reads its tiles straight from the big files one tile row at a time (one windowed
   read per row, prefetched in a thread while the model works), normalises the bands named
   by the checkpoint, and sends the tiles to the process's model runner. Tiles without a
   single valid pixel are skipped. The quantised softmax probabilities are blended into an
   exact integer accumulator (:mod:`geoseg.blend`).
3. **Model runner**: ONE per worker process and model hash (a per-process cache), on its
   device, fed by a queue that every task of the process shares, so the model always takes
   full batches (the last one is padded to the same shape: a tile's output never depends on
   its batch). On CUDA: two batches in flight (the next is copied into its pinned buffer
   while the GPU computes the current one), ``non_blocking`` copies both ways (an event
   marks a batch's results as ready), bf16 autocast and ``channels_last``.
4. **Driver**: receives block results as they complete (a bounded number in flight),
   persists them in a work folder ``OUTDIR/.{scene}.partial/`` (keyed by the options, the
   model hash and the input files) and completes the seams between blocks from the spilled
   sums, in a few threads so that it keeps up with many workers; once every block is done,
   it streams the blocks into Cloud-Optimized GeoTIFFs
   (:mod:`geoseg.writers`) that are renamed into place only when complete. A run that was
   killed resumes: finished blocks are not recomputed and the result is byte-identical.

Without a Dask client, an in-process ``LocalCluster`` of ``workers`` threads is used: one
process, one model on the device, reads and blending in parallel with the model, and
memory bounded by the number of blocks in flight. With a client (``--scheduler
tcp://host:port``) blocks of all scenes spread over the cluster's workers; every worker
loads the model once; the driver assembles one raster per scene. Workers must see the
scene and checkpoint paths (a shared filesystem).

Memory per block in flight is about ``(classes + 1) * 4`` bytes per block pixel plus a few
tile rows of input; it never depends on the scene size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg._io import atomic_path, check_output
from geoseg.blend import (
    Accumulator,
    BlendKind,
    BlockPlan,
    Edges,
    Rect,
    decode,
    plan_blocks,
    quantize_weights,
    seam_sums,
    tile_edges,
    weight_bits,
    weight_window,
)
from geoseg.errors import CheckpointError, ConfigError, InputError
from geoseg.grid import GeoBox, metres_per_unit
from geoseg.scene import SceneSpec
from geoseg.schema import IGNORE, ClassSchema
from geoseg.writers import write_classes, write_probabilities

if TYPE_CHECKING:
    import torch
    from distributed import Client

__all__ = [
    "PredictModel",
    "PredictOptions",
    "PredictReport",
    "iter_tile_rows",
    "output_paths",
    "predict_scenes",
]

logger = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "bf16", "fp32"]
TTA = Literal["none", "flip", "d4"]

WORK_VERSION = 1
GSD_TOLERANCE = 0.25
_DRIVER_THREADS = 4  # driver threads that persist block results and complete seams
_DEPTH = 2  # batches the model thread keeps in flight (copy of one overlaps compute of another)
_ROWS_AHEAD = 2  # tile rows a block task keeps queued at the model runner
_LINGER_S = 0.005  # how long the runner waits to fill a batch before running it padded
GDAL_CACHE_MB = 128
"""GDAL block cache per process while predicting (unless ``GDAL_CACHEMAX`` is set).

GDAL's default, 5 % of the RAM, would let the cache grow with the scene size; reads need
only a tile row of the input's internal blocks.
"""


# -- options, model, report ---------------------------------------------------------------


@dataclass(frozen=True)
class PredictOptions:
    """How scenes are predicted.

    Attributes:
        tile_size: Tile edge; None means the checkpoint's tile size.
        overlap: Pixels shared by neighbouring tiles (blended); None means a quarter of
            the tile size.
        batch_size: Tiles per model call; None means 32 on CUDA, 4 on the CPU.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``auto`` (bf16 on CUDA, fp32 on the CPU), ``bf16`` or ``fp32``.
        tta: Test-time augmentation: ``none``, ``flip`` (4 flips) or ``d4`` (8 dihedral).
        probabilities: Also write ``{scene}_probs.tif``.
        blend: Weight window: ``hann``, ``spline`` or ``mean``.
        block_size: Output block edge in pixels (rounded to whole tile strides); bounds
            memory, never changes the result.
        workers: Threads of the local scheduler (ignored with a Dask client).
        overwrite: Replace existing outputs.
        creation_options: Extra GDAL COG creation options ``(KEY, VALUE)``.
    """

    tile_size: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    device: Device = "auto"
    precision: Precision = "auto"
    tta: TTA = "none"
    probabilities: bool = False
    blend: BlendKind = "hann"
    block_size: int = 2048
    workers: int = 2
    overwrite: bool = False
    creation_options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        choices = {
            "device": ("auto", "cpu", "cuda"),
            "precision": ("auto", "bf16", "fp32"),
            "tta": ("none", "flip", "d4"),
            "blend": ("hann", "spline", "mean"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r}: use one of {', '.join(allowed)}"
                )
        if self.tile_size is not None and self.tile_size < 16:
            raise ConfigError(f"tile_size={self.tile_size}: must be >= 16")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"overlap={self.overlap}: must be >= 0")
        if (
            self.tile_size is not None
            and self.overlap is not None
            and self.overlap >= self.tile_size
        ):
            raise ConfigError(
                f"overlap={self.overlap} must be smaller than the tile size ({self.tile_size})"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}: must be >= 1")
        if self.block_size < 1:
            raise ConfigError(f"block_size={self.block_size}: must be >= 1")
        if self.workers < 1:
            raise ConfigError(f"workers={self.workers}: must be >= 1")


@dataclass(frozen=True, eq=False)
class PredictModel:
    """A model ready to predict, with what it needs to be applied correctly.

    Build one from a checkpoint with :meth:`from_checkpoint`, or directly from any
    ``torch.nn.Module`` that maps (N, bands, H, W) to logits (N, classes, H, W).

    Attributes:
        module: The network (switched to eval mode and moved to the device when used).
        bands: Input band names, in channel order (mapped by name onto scene bands).
        mean: Per-band normalisation mean.
        std: Per-band normalisation standard deviation.
        schema: Output classes.
        tile_size: Tile edge the model was trained on.
        gsd: Ground sample distance of the training data (metres per pixel).
        name: Architecture name (for provenance).
        sha256: Model hash (of the checkpoint file, or of the name and weights when empty).
    """

    module: torch.nn.Module
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    schema: ClassSchema
    tile_size: int
    gsd: float
    name: str = "model"
    sha256: str = ""

    def __post_init__(self) -> None:
        if not (len(self.bands) == len(self.mean) == len(self.std)) or not self.bands:
            raise CheckpointError(
                f"model {self.name!r}: {len(self.bands)} bands but {len(self.mean)} means and "
                f"{len(self.std)} stds; give one mean and std per band"
            )
        if any(s <= 0 for s in self.std):
            raise CheckpointError(f"model {self.name!r}: normalisation std must be > 0")
        if not self.sha256:
            object.__setattr__(self, "sha256", _module_sha256(self.module, self.name))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike[str]) -> PredictModel:
        """Load a checkpoint (:func:`geoseg.checkpoint.load_checkpoint`) and build its model.

        Raises:
            CheckpointError: Missing, corrupt or foreign checkpoint, or weights that do not
                fit the architecture.
        """
        from geoseg.checkpoint import file_sha256, load_checkpoint

        ckpt = load_checkpoint(path)
        return cls(
            module=ckpt.build_model(),
            bands=ckpt.bands,
            mean=ckpt.mean,
            std=ckpt.std,
            schema=ckpt.schema,
            tile_size=ckpt.tile_size,
            gsd=ckpt.gsd,
            name=str(ckpt.arch.get("name", "model")),
            sha256=file_sha256(path),
        )


@dataclass(frozen=True)
class PredictReport:
    """What :func:`predict_scenes` did for one scene.

    Attributes:
        scene: Scene id.
        classes: The class COG.
        probabilities: The probability COG, if requested.
        sidecar: The JSON sidecar (options, model hash, timings, tiles, blocks).
        blocks: Output blocks of the scene.
        blocks_resumed: Blocks taken from an interrupted earlier run.
        tiles: Tiles in the plan (each computed at most once).
        tiles_computed: Tiles run through the model in this run.
        tiles_skipped_nodata: Tiles without a valid pixel (not run).
        seconds: Wall time for the scene (from the start of the run to its outputs).
        megapixels: Scene size in megapixels.
        warnings: Warnings raised for the scene (e.g. a GSD mismatch).
    """

    scene: str
    classes: Path
    probabilities: Path | None
    sidecar: Path
    blocks: int
    blocks_resumed: int
    tiles: int
    tiles_computed: int
    tiles_skipped_nodata: int
    seconds: float
    megapixels: float
    warnings: tuple[str, ...] = ()


def output_paths(outdir: str | os.PathLike[str], scene_id: str) -> dict[str, Path]:
    """The files :func:`predict_scenes` writes for a scene: classes, probs, sidecar, work."""
    d = Path(outdir)
    return {
        "classes": d / f"{scene_id}_classes.tif",
        "probs": d / f"{scene_id}_probs.tif",
        "sidecar": d / f"{scene_id}.json",
        "work": d / f".{scene_id}.partial",
    }


# -- model references, runners (one per process) --------------------------------------------


@dataclass(frozen=True)
class _ModelMeta:
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    schema: ClassSchema
    tile_size: int
    gsd: float
    name: str
    sha256: str


@dataclass(frozen=True)
class _ModelRef:
    """What a task needs to get the model: the checkpoint path, or the model itself."""

    meta: _ModelMeta
    path: str | None = None
    inline: PredictModel | None = field(default=None, compare=False)


def _meta_of(m: PredictModel) -> _ModelMeta:
    return _ModelMeta(
        bands=tuple(m.bands),
        mean=tuple(float(v) for v in m.mean),
        std=tuple(float(v) for v in m.std),
        schema=m.schema,
        tile_size=int(m.tile_size),
        gsd=float(m.gsd),
        name=m.name,
        sha256=m.sha256,
    )


def _model_ref(model: str | os.PathLike[str] | PredictModel) -> _ModelRef:
    if isinstance(model, PredictModel):
        return _ModelRef(meta=_meta_of(model), inline=model)
    from geoseg.checkpoint import file_sha256, load_checkpoint

    path = Path(model)
    ckpt = load_checkpoint(path)
    meta = _ModelMeta(
        bands=tuple(ckpt.bands),
        mean=tuple(ckpt.mean),
        std=tuple(ckpt.std),
        schema=ckpt.schema,
        tile_size=ckpt.tile_size,
        gsd=ckpt.gsd,
        name=str(ckpt.arch.get("name", "model")),
        sha256=file_sha256(path),
    )
    return _ModelRef(meta=meta, path=str(path.resolve()))


def _module_sha256(module: torch.nn.Module, name: str) -> str:
    import torch

    h = hashlib.sha256(name.encode())
    h.update(type(module).__qualname__.encode())
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _bound_gdal_cache() -> None:
    """Cap GDAL's (process-wide) block cache so that memory does not grow with the scene."""
    if "GDAL_CACHEMAX" not in os.environ:
        from rasterio.env import set_gdal_config

        set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB)


def _resolve_device(device: Device) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def _resolve_precision(precision: Precision, device: str) -> str:
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def _resolve_batch_size(batch_size: int | None, device: str) -> int:
    return batch_size or (32 if device == "cuda" else 4)


@dataclass(eq=False)  # identity: requests hold arrays, and the runner finds them in deques
class _Request:
    tiles: npt.NDArray[np.float32]  # (n, bands, T, T), normalised
    future: Future[npt.NDArray[np.uint16]]
    out: npt.NDArray[np.uint16] | None = None
    taken: int = 0
    done: int = 0


class _Runner:
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


_RUNNERS: dict[tuple[str, str, str, int, str], _Runner] = {}
_RUNNERS_LOCK = threading.Lock()
_MAX_RUNNERS = 2


def _runner(
    ref: _ModelRef, *, device: Device, precision: Precision, batch_size: int | None, tta: TTA
) -> _Runner:
    """The process's runner for this model and settings (built on first use)."""
    dev = _resolve_device(device)
    prec = _resolve_precision(precision, dev)
    bs = _resolve_batch_size(batch_size, dev)
    key = (ref.meta.sha256, dev, prec, bs, tta)
    with _RUNNERS_LOCK:
        r = _RUNNERS.get(key)
        if r is None:
            _bound_gdal_cache()
            model = ref.inline if ref.inline is not None else _load_model(ref)
            r = _Runner(model, device=dev, precision=prec, batch_size=bs, tta=tta)
            while len(_RUNNERS) >= _MAX_RUNNERS:
                _RUNNERS.pop(next(iter(_RUNNERS))).close()
            _RUNNERS[key] = r
            logger.info(
                "loaded model %s (%s) on %s, %s", ref.meta.name, ref.meta.sha256[:12], dev, prec
            )
        return r


def _load_model(ref: _ModelRef) -> PredictModel:
    if ref.path is None:
        raise CheckpointError("the model is neither a checkpoint path nor a model object")
    model = PredictModel.from_checkpoint(ref.path)
    if model.sha256 != ref.meta.sha256:
        raise CheckpointError(
            f"{ref.path}: the checkpoint changed while predicting (hash {model.sha256[:12]} "
            f"!= {ref.meta.sha256[:12]}); do not overwrite a model that is in use"
        )
    return model


# -- block tasks (run on workers) -------------------------------------------------------------


@dataclass(frozen=True)
class _BlockJob:
    scene_index: int
    spec: SceneSpec
    plan: BlockPlan
    block: tuple[int, int]
    overlap: int
    blend: BlendKind
    weight_bits: int
    device: Device
    precision: Precision
    batch_size: int | None
    tta: TTA
    probabilities: bool
    scale: int = 1


@dataclass
class _BlockResult:
    scene_index: int
    block: tuple[int, int]
    classes: npt.NDArray[np.uint8]
    probs: npt.NDArray[np.uint8] | None
    seams: list[tuple[Rect, npt.NDArray[np.int32], npt.NDArray[np.bool_]]]
    pieces: list[tuple[tuple[int, int], Rect, npt.NDArray[np.int32]]]
    tiles: int
    skipped: int
    read_s: float
    wait_s: float
    blend_s: float
    seconds: float


def iter_tile_rows(
    spec: SceneSpec,
    rows: Sequence[Sequence[Rect]],
    *,
    bands: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
) -> Generator[tuple[Rect, npt.NDArray[np.float32], npt.NDArray[np.bool_], float], None, None]:
    """Read rows of tiles straight from a scene, normalised, one windowed read per row.

    The next row is read in a background thread while the caller works on the current one
    (GDAL releases the GIL). The scene is opened here and used by that thread only.

    Args:
        spec: The scene.
        rows: Tiles grouped by row (each row: same rows, increasing columns).
        bands: Band names to read, in model channel order.
        mean: Per-band normalisation mean.
        std: Per-band normalisation standard deviation.

    Yields:
        ``(strip, data, valid, seconds)``: the strip rectangle, its normalised bands
        (bands, h, w) float32 with invalid pixels 0, its validity (h, w), and the read time.
    """
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    sd = np.asarray(std, dtype=np.float32)[:, None, None]
    names = tuple(bands)

    def read(
        scene: Any, row: Sequence[Rect]
    ) -> tuple[Rect, npt.NDArray[np.float32], npt.NDArray[np.bool_], float]:
        t0 = time.perf_counter()
        strip = Rect(
            row[0].row, row[0].col, row[0].height, row[-1].col + row[-1].width - row[0].col
        )
        blk = scene.read(Window(strip.col, strip.row, strip.width, strip.height), bands=names)
        data = blk.data
        data -= m
        data /= sd
        data[:, ~blk.valid] = 0.0
        return strip, data, blk.valid, time.perf_counter() - t0

    if not rows:
        return
    with spec.open() as scene, ThreadPoolExecutor(1, thread_name_prefix="geoseg-read") as pool:
        nxt = pool.submit(read, scene, rows[0])
        for k in range(len(rows)):
            item = nxt.result()
            if k + 1 < len(rows):
                nxt = pool.submit(read, scene, rows[k + 1])
            yield item


def _gsd_scale(scene_gsd: float | None, model_gsd: float) -> int:
    """Integer factor by which the model's pixels are coarser than the scene's (1 = none).

    A model trained at 20 cm sees a 5 cm scene through 4 x 4 pixel averages; factors that are
    not within 5 % of an integer >= 2 are not matched (a GSD warning is raised instead).
    """
    if scene_gsd is None or scene_gsd <= 0 or model_gsd <= 0:
        return 1
    ratio = model_gsd / scene_gsd
    f = round(ratio)
    return f if f >= 2 and abs(ratio / f - 1.0) <= 0.05 else 1


def _pool_tiles(tiles: npt.NDArray[np.float32], f: int) -> npt.NDArray[np.float32]:
    """(n, B, H, W) scene-pixel tiles to (n, B, ceil(H/f), ceil(W/f)) model pixels (means)."""
    n, b, h, w = tiles.shape
    ph, pw = -(-h // f) * f, -(-w // f) * f
    if (ph, pw) != (h, w):
        tiles = np.pad(tiles, ((0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    return np.ascontiguousarray(
        tiles.reshape(n, b, ph // f, f, pw // f, f).mean(axis=(3, 5), dtype=np.float32)
    )


def _upsample_probs(
    probs_q: npt.NDArray[np.uint16], f: int, tiles: Sequence[Rect]
) -> npt.NDArray[np.uint16]:
    """Quantised model-pixel probabilities back to scene pixels (bilinear), cropped to tiles."""
    import torch

    x = torch.from_numpy(probs_q.astype(np.float32))
    up = torch.nn.functional.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
    h, w = tiles[0].height, tiles[0].width
    out = up[:, :, :h, :w].round_().clamp_(0.0, 65535.0).numpy().astype(np.uint16)
    return out


def _run_block(job: _BlockJob, ref: _ModelRef) -> _BlockResult:
    """Predict one output block (runs on a Dask worker)."""
    t_start = time.perf_counter()
    meta = ref.meta
    runner = _runner(
        ref, device=job.device, precision=job.precision, batch_size=job.batch_size, tta=job.tta
    )
    plan, block = job.plan, job.block
    brect = plan.block_rect(block)
    acc = Accumulator(plan.extent_rect(block), meta.schema.num_classes)
    valid = np.zeros((brect.height, brect.width), dtype=bool)
    windows: dict[Edges, npt.NDArray[np.int32]] = {}
    rows = plan.tile_rows(block)
    stats = {"read": 0.0, "wait": 0.0, "blend": 0.0, "tiles": 0, "skipped": 0}

    def consume(sel: list[Rect], fut: Future[npt.NDArray[np.uint16]] | None) -> None:
        if fut is None:
            return
        t0 = time.perf_counter()
        probs_q = fut.result()
        if job.scale > 1:
            probs_q = _upsample_probs(probs_q, job.scale, sel)
        t1 = time.perf_counter()
        for tile, pq in zip(sel, probs_q, strict=True):
            edges = tile_edges(tile, plan.shape)
            w = windows.get(edges)
            if w is None:
                w = quantize_weights(
                    weight_window(
                        (tile.height, tile.width), kind=job.blend, overlap=job.overlap, edges=edges
                    ),
                    job.weight_bits,
                )
                windows[edges] = w
            acc.add(pq, w, tile)
        stats["wait"] += t1 - t0
        stats["blend"] += time.perf_counter() - t1

    pending: deque[tuple[list[Rect], Future[npt.NDArray[np.uint16]] | None]] = deque()
    strips = iter_tile_rows(job.spec, rows, bands=meta.bands, mean=meta.mean, std=meta.std)
    with contextlib.closing(strips):
        for row, (strip, data, strip_valid, seconds) in zip(rows, strips, strict=True):
            stats["read"] += seconds
            part = strip.intersect(brect)
            valid[part.slices(brect)] = strip_valid[part.slices(strip)]
            sel = []
            for tile in row:
                if strip_valid[tile.slices(strip)].any():
                    sel.append(tile)
                else:
                    stats["skipped"] += 1
            fut = None
            if sel:
                tiles = np.stack([data[(slice(None), *tile.slices(strip))] for tile in sel])
                if job.scale > 1:
                    tiles = _pool_tiles(tiles, job.scale)
                fut = runner.submit(tiles)
                stats["tiles"] += len(sel)
            pending.append((sel, fut))
            del data
            while len(pending) > _ROWS_AHEAD:
                consume(*pending.popleft())
    while pending:
        consume(*pending.popleft())
    t0 = time.perf_counter()
    core = acc.sums[(slice(None), *brect.slices(acc.rect))]
    classes, probs = decode(core, valid, probabilities=job.probabilities)
    seams = [
        (rect, acc.take(rect), valid[rect.slices(brect)].copy()) for rect in plan.seam_rects(block)
    ]
    pieces = []
    for dest in plan.dependents(block):
        rect = plan.piece_rect(block, dest)
        if not rect.empty:
            pieces.append((dest, rect, acc.take(rect)))
    stats["blend"] += time.perf_counter() - t0
    return _BlockResult(
        scene_index=job.scene_index,
        block=block,
        classes=classes,
        probs=probs,
        seams=seams,
        pieces=pieces,
        tiles=int(stats["tiles"]),
        skipped=int(stats["skipped"]),
        read_s=float(stats["read"]),
        wait_s=float(stats["wait"]),
        blend_s=float(stats["blend"]),
        seconds=time.perf_counter() - t_start,
    )


# -- the work folder (resume state) -------------------------------------------------------------


def _save_arrays(path: Path, **arrays: npt.NDArray[Any]) -> None:
    """Write arrays as ``path/{name}.npy`` atomically (a temporary folder, then rename).

    A killed process never leaves a partial entry under the final name. Plain ``.npy``
    (no compression, no checksums) keeps the driver fast. (No fsync: the page cache
    survives the death of the process; a power cut may lose the last blocks.)
    """
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _load_arrays(path: Path, *, skip: str | None = None) -> dict[str, npt.NDArray[Any]]:
    """The arrays saved by :func:`_save_arrays`, but those whose name starts with ``skip``."""
    return {
        p.stem: np.load(p, allow_pickle=False)
        for p in path.glob("*.npy")
        if skip is None or not p.stem.startswith(skip)
    }


def _bname(kind: str, *blocks: tuple[int, int]) -> str:
    return kind + "".join(f"_{r}_{c}" for r, c in blocks)


class _SceneRun:
    """Driver-side state of one scene: plan, work folder, finished blocks and seams."""

    def __init__(
        self,
        index: int,
        spec: SceneSpec,
        *,
        scale: int = 1,
        geobox: GeoBox,
        plan: BlockPlan,
        key: str,
        paths: dict[str, Path],
        probabilities: bool,
        warnings: list[str],
    ) -> None:
        self.index = index
        self.spec = spec
        self.scale = scale
        self.geobox = geobox
        self.plan = plan
        self.key = key
        self.paths = paths
        self.work = paths["work"]
        self.probabilities = probabilities
        self.warnings = warnings
        self.done: set[tuple[int, int]] = set()
        self.sealed: set[tuple[int, int]] = set()
        self._sealing: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self.stats = {
            "tiles": 0,
            "skipped": 0,
            "read_s": 0.0,
            "wait_s": 0.0,
            "blend_s": 0.0,
            "block_s": 0.0,
            "persist_s": 0.0,
        }
        self.resumed = 0
        self._open_work()

    def _open_work(self) -> None:
        state = self.work / "state.json"
        if self.work.is_dir():
            try:
                old = json.loads(state.read_text()).get("key")
            except (OSError, ValueError):
                old = None
            if old != self.key:
                logger.warning(
                    "%s: partial results of an earlier run with other options, model or inputs; "
                    "starting afresh",
                    self.work,
                )
                shutil.rmtree(self.work)
        if not self.work.is_dir():
            self.work.mkdir(parents=True)
            with atomic_path(state) as tmp:
                tmp.write_text(json.dumps({"key": self.key, "version": WORK_VERSION}))
            return
        for b in self.plan.blocks:
            if (self.work / _bname("b", b)).exists():
                self.done.add(b)
        self.resumed = len(self.done)
        for b in sorted(self.done):
            if not self.plan.seam_rects(b) or (self.work / _bname("f", b)).exists():
                self.sealed.add(b)
                self._drop_pieces(b)
        for d in self._claim_seals(sorted(self.done - self.sealed)):
            self._seal(d)
            self.sealed.add(d)
        if self.resumed:
            logger.info(
                "%s: resuming, %d of %d blocks already done",
                self.spec.id,
                self.resumed,
                len(self.plan.blocks),
            )

    @property
    def todo(self) -> list[tuple[int, int]]:
        return [b for b in self.plan.blocks if b not in self.done]

    @property
    def complete(self) -> bool:
        with self._lock:
            return len(self.sealed) == len(self.plan.blocks)

    def persist(self, res: _BlockResult) -> None:
        """Write a block's result to the work folder, then complete every seam it unblocks.

        Thread-safe: blocks are persisted by a pool of driver threads. Each block writes
        only its own files, the bookkeeping (done, sealed) happens under a lock, and a seam
        is completed by exactly one thread, once all of its contributors' files exist.
        """
        t0 = time.perf_counter()
        self._write(res)
        b = res.block
        with self._lock:
            self.done.add(b)
            self.stats["tiles"] += res.tiles
            self.stats["skipped"] += res.skipped
            self.stats["read_s"] += res.read_s
            self.stats["wait_s"] += res.wait_s
            self.stats["blend_s"] += res.blend_s
            self.stats["block_s"] += res.seconds
            ready = self._claim_seals([b, *self.plan.dependents(b)])
        for d in ready:
            self._seal(d)
        with self._lock:
            self.stats["persist_s"] += time.perf_counter() - t0
            self.sealed.update(ready)

    def _write(self, res: _BlockResult) -> None:
        b = res.block
        if res.seams:
            arrays: dict[str, npt.NDArray[Any]] = {}
            for i, (rect, sums, valid) in enumerate(res.seams):
                arrays[f"rect{i}"] = np.asarray(_rect_tuple(rect))
                arrays[f"sums{i}"] = sums
                arrays[f"valid{i}"] = valid
            _save_arrays(self.work / _bname("s", b), **arrays)
        for dest, rect, sums in res.pieces:
            _save_arrays(
                self.work / _bname("p", dest, b), rect=np.asarray(_rect_tuple(rect)), sums=sums
            )
        core: dict[str, npt.NDArray[Any]] = {"classes": res.classes}
        if res.probs is not None:
            core["probs"] = res.probs
        _save_arrays(self.work / _bname("b", b), **core)  # last: its existence marks the block done

    def _claim_seals(self, blocks: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """Blocks whose seams can be completed now, reserved for the caller (hold the lock).

        A block without seams is sealed as soon as it is done.
        """
        ready = []
        for d in blocks:
            if d in self.sealed or d in self._sealing or d not in self.done:
                continue
            if self.plan.seam_rects(d) and any(
                c not in self.done for c in self.plan.contributors(d)
            ):
                continue
            self._sealing.add(d)
            ready.append(d)
        return ready

    def _seal(self, d: tuple[int, int]) -> None:
        """Complete block ``d``'s seams from the spilled sums of its contributors."""
        if not self.plan.seam_rects(d):
            return
        own = _load_arrays(self.work / _bname("s", d))
        pieces: list[tuple[Rect, npt.NDArray[np.int32]]] = []
        valids: list[npt.NDArray[np.bool_]] = []
        i = 0
        while f"rect{i}" in own:
            pieces.append((Rect(*(int(v) for v in own[f"rect{i}"])), own[f"sums{i}"]))
            valids.append(own[f"valid{i}"])
            i += 1
        for c in self.plan.contributors(d):
            if c != d:
                p = _load_arrays(self.work / _bname("p", d, c))
                pieces.append((Rect(*(int(v) for v in p["rect"])), p["sums"]))
        out: dict[str, npt.NDArray[Any]] = {}
        for i, ((rect, sums), valid) in enumerate(
            zip(seam_sums(self.plan, d, pieces), valids, strict=True)
        ):
            cls, probs = decode(sums, valid, probabilities=self.probabilities)
            out[f"rect{i}"] = np.asarray(_rect_tuple(rect))
            out[f"classes{i}"] = cls
            if probs is not None:
                out[f"probs{i}"] = probs
        _save_arrays(self.work / _bname("f", d), **out)
        self._drop_pieces(d)

    def _drop_pieces(self, d: tuple[int, int]) -> None:
        for c in self.plan.contributors(d):
            name = _bname("s", d) if c == d else _bname("p", d, c)
            shutil.rmtree(self.work / name, ignore_errors=True)

    def blocks(
        self, *, probs: bool = True
    ) -> Iterator[tuple[Window, npt.NDArray[np.uint8], npt.NDArray[np.uint8] | None]]:
        """Finished blocks with their seams applied, row-major (``probs``: with probabilities)."""
        skip = None if probs else "probs"
        for b, rect in self.plan.iter_rects():
            core = _load_arrays(self.work / _bname("b", b), skip=skip)
            classes = core["classes"]
            block_probs = core.get("probs")
            if self.plan.seam_rects(b):
                seam = _load_arrays(self.work / _bname("f", b), skip=skip)
                i = 0
                while f"rect{i}" in seam:
                    srect = Rect(*(int(v) for v in seam[f"rect{i}"]))
                    sl = srect.slices(rect)
                    classes[sl] = seam[f"classes{i}"]
                    if block_probs is not None:
                        block_probs[(slice(None), *sl)] = seam[f"probs{i}"]
                    i += 1
            yield Window(rect.col, rect.row, rect.width, rect.height), classes, block_probs


def _rect_tuple(r: Rect) -> tuple[int, int, int, int]:
    return (r.row, r.col, r.height, r.width)


# -- the driver ---------------------------------------------------------------------------------


def predict_scenes(
    specs: Sequence[SceneSpec],
    model: str | os.PathLike[str] | PredictModel,
    outdir: str | os.PathLike[str],
    *,
    options: PredictOptions = PredictOptions(),
    client: Client | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PredictReport]:
    """Predict class maps (and probabilities) for whole scenes.

    Writes, per scene, ``OUTDIR/{scene}_classes.tif`` (+ its ``.aux.xml`` with the class
    names), ``OUTDIR/{scene}_probs.tif`` with ``options.probabilities``, and
    ``OUTDIR/{scene}.json`` (options, model hash, timings, tiles, blocks). See the module
    docs for the scheduling, blending, memory bound and resume.

    Args:
        specs: Scenes to predict.
        model: A checkpoint path, or a :class:`PredictModel` (checkpoint paths are needed
            to run on a separate-process cluster unless the model's class is importable
            there).
        outdir: Output folder.
        options: How to predict.
        client: A ``distributed.Client`` or a scheduler address (``tcp://host:port``);
            None runs an in-process scheduler with ``options.workers`` threads.
        progress: Called with ``(blocks done, blocks total)`` after each block.

    Returns:
        One :class:`PredictReport` per scene, in input order.

    Raises:
        OutputExistsError: An output exists and ``options.overwrite`` is false (raised
            before any work).
        BandMismatchError: A scene lacks a band the model needs (named in the message).
        CheckpointError: The checkpoint is missing, corrupt or foreign.
        ConfigError: Inconsistent options (e.g. overlap >= tile size).
        InputError: Unreadable scenes, an unreachable scheduler, or no CUDA device.
    """
    t_start = time.perf_counter()
    if not specs:
        raise InputError("no scene to predict; give at least one scene")
    _bound_gdal_cache()
    out = Path(outdir)
    ref = _model_ref(model)
    meta = ref.meta
    tile = options.tile_size or meta.tile_size
    overlap = options.overlap if options.overlap is not None else tile // 4
    if overlap >= tile:
        raise ConfigError(
            f"overlap {overlap} must be smaller than the tile size ({tile}); "
            "pass a smaller --overlap or a larger --tile-size"
        )
    options = replace(options, tile_size=tile, overlap=overlap)  # resolved, as recorded
    for spec in specs:
        _check_outputs(output_paths(out, spec.id), options)
    local_device = options.device
    if client is None:
        local_device = _resolve_device(options.device)  # type: ignore[assignment]
    runs = [
        _prepare(i, spec, meta, options, out, tile=tile, device=str(local_device))
        for i, spec in enumerate(specs)
    ]
    total = sum(len(r.plan.blocks) for r in runs)
    done = sum(len(r.done) for r in runs)
    if progress is not None:
        progress(done, total)
    reports: dict[int, PredictReport] = {}
    for r in runs:
        if r.complete:
            reports[r.index] = _finish(r, options, ref, t_start, str(local_device))
    todo = deque(
        _BlockJob(
            scene_index=r.index,
            spec=r.spec,
            plan=r.plan,
            block=b,
            overlap=overlap * r.scale,
            blend=options.blend,
            weight_bits=weight_bits(r.plan.max_cover),
            device=local_device,  # type: ignore[arg-type]
            precision=options.precision,
            batch_size=options.batch_size,
            tta=options.tta,
            probabilities=options.probabilities,
            scale=r.scale,
        )
        for r in runs
        for b in r.todo
    )
    if todo:
        with _scheduler(client, options) as cl:
            _drive(
                cl,
                todo,
                runs,
                ref,
                reports,
                options,
                t_start,
                str(local_device),
                progress,
                done,
                total,
            )
    return [reports[r.index] for r in runs]


def _drive(
    client: Client,
    todo: deque[_BlockJob],
    runs: list[_SceneRun],
    ref: _ModelRef,
    reports: dict[int, PredictReport],
    options: PredictOptions,
    t_start: float,
    device: str,
    progress: Callable[[int, int], None] | None,
    done: int,
    total: int,
) -> None:
    from distributed import as_completed

    threads = max(1, sum(client.nthreads().values()))
    limit = max(2, 2 * threads)
    model_arg: Any = ref
    if ref.inline is not None:
        model_arg = client.scatter(ref, broadcast=True, hash=False)
    submitted: list[Any] = []
    ac = as_completed()
    # Results are persisted (and seams completed) by a few driver threads, so that the driver
    # keeps up with many workers and a fast GPU; a bounded number of results wait for them.
    writers = ThreadPoolExecutor(_DRIVER_THREADS, thread_name_prefix="geoseg-persist")
    max_waiting = min(threads, 2 * _DRIVER_THREADS)  # results held by the driver
    writing: set[Future[None]] = set()

    def reap(wait_one: bool) -> None:
        if wait_one and writing:
            futures_wait(writing, return_when=FIRST_COMPLETED)
        for w in [w for w in writing if w.done()]:
            writing.discard(w)
            w.result()  # a failed write is raised here
        for run in runs:
            if run.complete and run.index not in reports:
                reports[run.index] = _finish(run, options, ref, t_start, device)

    def submit() -> None:
        f = client.submit(_run_block, todo.popleft(), model_arg, pure=False)
        submitted.append(f)
        ac.add(f)

    try:
        while todo and len(submitted) < limit:
            submit()
        for fut in ac:
            res: _BlockResult = fut.result()
            fut.release()
            writing.add(writers.submit(runs[res.scene_index].persist, res))
            del res
            done += 1
            if progress is not None:
                progress(done, total)
            reap(False)
            while len(writing) > max_waiting:
                reap(True)
            if todo:
                submit()
        while writing:
            reap(True)
        reap(False)
    finally:
        pending = [f for f in submitted if not f.done()]
        if pending:
            client.cancel(pending)
        writers.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _scheduler(client: Client | str | None, options: PredictOptions) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    if client is None:
        # The in-process scheduler is an implementation detail: keep its INFO chatter
        # (start, stop, worker registration) out of the user's log unless debugging.
        dlog = logging.getLogger("distributed")
        level = dlog.level
        if not logger.isEnabledFor(logging.DEBUG):
            dlog.setLevel(max(level, logging.WARNING))
        with (
            _restore_level(dlog, level),
            LocalCluster(
                processes=False,
                n_workers=1,
                threads_per_worker=options.workers,
                dashboard_address=None,
                # The scheduler's HTTP routes would otherwise claim port 8787.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                memory_limit=0,
            ) as cluster,
            Client(cluster) as c,
        ):
            yield c
        return
    if isinstance(client, str):
        try:
            c = Client(client, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot connect to the Dask scheduler at {client} ({exc}); check the address "
                "and that the scheduler is running"
            ) from None
        try:
            yield c
        finally:
            c.close()
        return
    yield client


@contextlib.contextmanager
def _restore_level(log: logging.Logger, level: int) -> Iterator[None]:
    try:
        yield
    finally:
        log.setLevel(level)


def _check_outputs(paths: dict[str, Path], options: PredictOptions) -> None:
    check_output(paths["classes"], overwrite=options.overwrite)
    if not paths["work"].is_dir():  # an interrupted run may replace its own sidecar
        for key in ("probs", "sidecar"):
            check_output(paths[key], overwrite=options.overwrite)


def _metres_per_pixel(gb: GeoBox) -> float | None:
    if gb.crs is None:
        return None
    return (gb.resolution[0] + gb.resolution[1]) / 2.0 * metres_per_unit(gb)


def _prepare(
    index: int,
    spec: SceneSpec,
    meta: _ModelMeta,
    options: PredictOptions,
    out: Path,
    *,
    tile: int,
    device: str,
) -> _SceneRun:
    warnings: list[str] = []
    with spec.open() as scene:
        scene.check_bands(meta.bands)
        gb = scene.geobox
    gsd = _metres_per_pixel(gb)
    scale = _gsd_scale(gsd, meta.gsd)
    if scale > 1:
        logger.info(
            "%s: scene at %.3g m, model at %.3g m: each model pixel averages %dx%d scene pixels",
            spec.id,
            gsd,
            meta.gsd,
            scale,
            scale,
        )
    elif gsd is not None and meta.gsd > 0 and abs(gsd / meta.gsd - 1.0) > GSD_TOLERANCE:
        msg = (
            f"{spec.image}: scene {spec.id!r} has a ground sample distance of {gsd:.3g} m but "
            f"the model was trained at {meta.gsd:.3g} m ({abs(gsd / meta.gsd - 1):.0%} off); "
            "predictions may be poor - resample the scene or use a model trained at this GSD"
        )
        logger.warning("%s", msg)
        warnings.append(msg)
    plan = plan_blocks(
        gb.shape,
        tile_size=tile * scale,
        overlap=(options.overlap or 0) * scale,
        block_size=options.block_size,
    )
    try:
        weight_bits(plan.max_cover)
    except ValueError as exc:
        raise ConfigError(f"overlap {options.overlap} with tile size {tile}: {exc}") from None
    key = _work_key(spec, meta, options, tile=tile * scale, device=device, shape=gb.shape)
    return _SceneRun(
        index,
        spec,
        scale=scale,
        geobox=gb,
        plan=plan,
        key=key,
        paths=output_paths(out, spec.id),
        probabilities=options.probabilities,
        warnings=warnings,
    )


def _file_id(p: Path | None) -> list[object] | None:
    if p is None:
        return None
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def _work_key(
    spec: SceneSpec,
    meta: _ModelMeta,
    options: PredictOptions,
    *,
    tile: int,
    device: str,
    shape: tuple[int, int],
) -> str:
    ident = {
        "version": WORK_VERSION,
        "model": meta.sha256,
        "tile": tile,
        "overlap": options.overlap,
        "blend": options.blend,
        "tta": options.tta,
        "device": device,
        "precision": options.precision,
        "block_size": options.block_size,
        "probabilities": options.probabilities,
        "bands": list(meta.bands),
        "scene": {
            "image": _file_id(spec.image),
            "dsm": _file_id(spec.dsm),
            "ndsm": _file_id(spec.ndsm),
            "image_bands": list(spec.image_bands) if spec.image_bands else None,
            "shape": list(shape),
        },
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _options_json(options: PredictOptions, tile: int) -> dict[str, object]:
    d = asdict(options)
    d["tile_size"] = tile
    d["creation_options"] = [list(kv) for kv in options.creation_options]
    return d


def _finish(
    run: _SceneRun, options: PredictOptions, ref: _ModelRef, t_start: float, device: str
) -> PredictReport:
    """Assemble the finished blocks into the outputs and write the sidecar."""
    from geoseg import __version__

    meta = ref.meta

    t0 = time.perf_counter()
    tile = run.plan.tile_size[0]
    opts = _options_json(options, tile)
    tags = {
        "GEOSEG_VERSION": __version__,
        "GEOSEG_MODEL_SHA256": meta.sha256,
        "GEOSEG_MODEL": meta.name,
        "GEOSEG_BANDS": ",".join(meta.bands),
        "GEOSEG_SCENE": run.spec.id,
        "GEOSEG_OPTIONS": json.dumps(opts, sort_keys=True),
        "GEOSEG_SCHEMA": json.dumps(meta.schema.to_dict()),
    }
    paths = run.paths
    # Outputs of an interrupted run may be replaced; anything else was checked up front.
    replace = options.overwrite or run.work.is_dir()
    probs_path: Path | None = None
    if options.probabilities:
        probs_path = write_probabilities(
            paths["probs"],
            ((w, p, c != IGNORE) for w, c, p in run.blocks() if p is not None),
            geobox=run.geobox,
            schema=meta.schema,
            tags=tags,
            overwrite=replace,
            creation_options=options.creation_options,
        )
    t_probs = time.perf_counter() - t0
    mpx = run.geobox.width * run.geobox.height / 1e6
    side = {
        "geoseg_version": __version__,
        "scene": run.spec.id,
        "inputs": {
            "image": str(run.spec.image),
            "dsm": str(run.spec.dsm) if run.spec.dsm else None,
            "ndsm": str(run.spec.ndsm) if run.spec.ndsm else None,
        },
        "outputs": {
            "classes": paths["classes"].name,
            "class_names": paths["classes"].name + ".aux.xml",
            "probabilities": probs_path.name if probs_path else None,
        },
        "model": {
            "sha256": meta.sha256,
            "name": meta.name,
            "path": ref.path,
            "bands": list(meta.bands),
            "tile_size": meta.tile_size,
            "gsd": meta.gsd,
            "scene_pixels_per_model_pixel": run.scale,
        },
        "schema": meta.schema.to_dict(),
        "options": opts,
        "device": device,
        "grid": {
            "width": run.geobox.width,
            "height": run.geobox.height,
            "crs": run.geobox.crs.to_string() if run.geobox.crs else None,
            "transform": list(run.geobox.transform)[:6],
        },
        "tiles": {
            "planned": run.plan.n_tiles,
            "computed": run.stats["tiles"],
            "skipped_nodata": run.stats["skipped"],
            "recomputed": 0,
            "max_overlapping": run.plan.max_cover,
        },
        "blocks": {
            "total": len(run.plan.blocks),
            "grid": [run.plan.rows.n_blocks, run.plan.cols.n_blocks],
            "resumed": run.resumed,
            "computed": len(run.plan.blocks) - run.resumed,
        },
        "timings": {
            "read_s": round(run.stats["read_s"], 3),
            "model_wait_s": round(run.stats["wait_s"], 3),
            "blend_s": round(run.stats["blend_s"], 3),
            "block_tasks_s": round(run.stats["block_s"], 3),
            "driver_persist_s": round(run.stats["persist_s"], 3),
        },
        "megapixels": round(mpx, 3),
        "warnings": run.warnings,
    }
    side["timings"]["write_probs_s"] = round(t_probs, 3)  # type: ignore[index]
    side["timings"]["wall_s"] = round(time.perf_counter() - t_start, 3)  # type: ignore[index]
    # The sidecar first, the class raster last: its existence marks a finished scene.
    with atomic_path(paths["sidecar"], overwrite=True) as tmp:  # checked up front
        tmp.write_text(json.dumps(side, indent=2))
    write_classes(
        paths["classes"],
        ((w, c) for w, c, _ in run.blocks(probs=False)),
        geobox=run.geobox,
        schema=meta.schema,
        tags=tags,
        overwrite=replace,
        creation_options=options.creation_options,
    )
    shutil.rmtree(run.work, ignore_errors=True)
    seconds = time.perf_counter() - t_start
    logger.info("%s: %.1f Mpx predicted in %.1fs", run.spec.id, mpx, seconds)
    return PredictReport(
        scene=run.spec.id,
        classes=paths["classes"],
        probabilities=probs_path,
        sidecar=paths["sidecar"],
        blocks=len(run.plan.blocks),
        blocks_resumed=run.resumed,
        tiles=run.plan.n_tiles,
        tiles_computed=int(run.stats["tiles"]),
        tiles_skipped_nodata=int(run.stats["skipped"]),
        seconds=seconds,
        megapixels=mpx,
        warnings=tuple(run.warnings),
    )
