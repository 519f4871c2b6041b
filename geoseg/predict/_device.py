"""The per-pixel work of a prediction, on the device that runs the model.

Everything here takes and returns torch tensors on the model's device (CUDA, or the CPU
running the very same code):

* :class:`Transfers` moves arrays to the device and results back. On CUDA, copies run on
  their own stream (so they overlap the model's kernels) from and into pinned host memory,
  and a result is handed over by a blocking event (the waiting thread sleeps instead of
  spinning a core). On the CPU a transfer is a view of the same memory.
* :func:`normalise` turns a raw area (image bands in their own pixel type, elevation
  bands float32, a validity mask) into the model's normalised float32 input, zero where
  invalid: the same float32 arithmetic as ``(x - mean) / std`` on the host.
* :func:`model_probs` runs the model under test-time augmentation and returns softmax
  probabilities (and the sigmoid probabilities of a model's extra outputs after them);
  :func:`quantize` turns them into the exact integers that
  :class:`geoseg.blend.Accumulator` sums.
* :func:`compile_module` wraps ``torch.compile`` (CUDA only; elsewhere it falls back to the
  eager module with a warning).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from geoseg.blend import PROB_SCALE
from geoseg.errors import CheckpointError
from geoseg.options import TTA
from geoseg.raster import RawBlock
from geoseg.raster.ground import interpolate_columns

if TYPE_CHECKING:
    import torch

__all__ = [
    "Transfers",
    "compile_module",
    "model_probs",
    "normalise",
    "normalise_raw",
    "quantize",
    "tta_views",
]

logger = logging.getLogger(__name__)


class Transfers:
    """Host <-> device copies for one runner (two copy streams and a delivery thread on CUDA).

    Args:
        device: The model's device.
    """

    def __init__(self, device: torch.device) -> None:
        import torch

        self.device = device
        self.cuda = device.type == "cuda"
        # one stream each way: an upload never queues behind a download
        self._h2d = torch.cuda.Stream(device) if self.cuda else None
        self._d2h = torch.cuda.Stream(device) if self.cuda else None
        self._ready: queue.Queue[_Delivery | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if self.cuda:
            self._thread = threading.Thread(target=self._deliver, name="geoseg-copies", daemon=True)
            self._thread.start()

    def to_device(self, arrays: Sequence[npt.NDArray[Any]]) -> list[torch.Tensor]:
        """``arrays`` on the device, usable by the model's (current) stream.

        On CUDA each array is copied into pinned memory (torch's caching host allocator keeps
        a buffer until its copy is done) and sent on the upload stream; the current stream
        waits for those copies (and earlier uploads) only.
        """
        import torch

        hosts = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if not self.cuda:
            return hosts
        assert self._h2d is not None
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._h2d):
            out = [h.pin_memory().to(self.device, non_blocking=True) for h in hosts]
            done = torch.cuda.Event()
            done.record(self._h2d)
        compute.wait_event(done)
        for t in out:
            t.record_stream(compute)  # allocated on the upload stream, used on the compute one
        return out

    def to_host(
        self,
        tensors: Sequence[torch.Tensor],
        deliver: Callable[[list[npt.NDArray[Any]]], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        """Copy ``tensors`` to host memory, then call ``deliver`` with them as numpy arrays.

        On CUDA the copies wait for the work queued so far on the model's stream, run on the
        download stream into pinned buffers, and ``deliver`` is called by the delivery thread
        once a blocking event says they are done: the caller never waits. If the device fails
        meanwhile, ``fail`` gets the error instead (nobody is left waiting). On the CPU,
        ``deliver`` is called at once; the tensors must own their memory (fresh results).
        """
        import torch

        if not self.cuda:
            deliver([t.numpy() for t in tensors])
            return
        assert self._d2h is not None
        compute = torch.cuda.current_stream(self.device)
        self._d2h.wait_stream(compute)
        with torch.cuda.stream(self._d2h):
            hosts = []
            for t in tensors:
                h = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
                h.copy_(t, non_blocking=True)
                t.record_stream(self._d2h)  # not reused before the copy read it
                hosts.append(h)
            done = torch.cuda.Event(blocking=True)
            done.record(self._d2h)
        self._ready.put(_Delivery(done, hosts, deliver, fail))

    def close(self) -> None:
        """Stop the delivery thread once every pending copy has been delivered."""
        if self._thread is not None:
            self._ready.put(None)

    def _deliver(self) -> None:
        while True:
            item = self._ready.get()
            if item is None:
                return
            try:
                item.event.synchronize()  # blocking event: sleeps, does not spin
                arrays = [h.numpy().copy() for h in item.hosts]
            except Exception as exc:  # not swallowed: handed to the block's task, which raises it
                item.fail(exc)
            else:
                item.deliver(arrays)
            del item  # the pinned buffers go back to the cache now, not at the next delivery


@dataclass
class _Delivery:
    event: Any
    hosts: list[Any]
    deliver: Callable[[list[npt.NDArray[Any]]], None]
    fail: Callable[[BaseException], None]


def normalise(
    image: torch.Tensor,
    elevation: torch.Tensor,
    valid: torch.Tensor | None,
    sources: Sequence[tuple[str, int]],
    mean: torch.Tensor,
    std: torch.Tensor,
    ground: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The model input of a raw area: ``(x - mean) / std`` per band, float32, 0 if invalid.

    Args:
        image: (k, h, w) image bands in their own pixel type.
        elevation: (e, h, w) float32 elevation bands.
        valid: (h, w) bool, or None when every pixel is valid.
        sources: Per model band, ``("image", i)``, ``("elevation", i)`` or
            ``("dsm-ground", i)`` (the nDSM ``max(0, elevation[i] - ground)``, made here).
        mean: (bands,) float32 on the device.
        std: (bands,) float32 on the device.
        ground: The :class:`geoseg.raster.ground.GroundPatch` fields (rows, c0, c1, tc) on
            the device, for a ``"dsm-ground"`` band.

    Returns:
        (bands, h, w) float32.
    """
    import torch

    h, w = valid.shape if valid is not None else (image.shape[1:] or elevation.shape[1:])
    x = torch.empty((len(sources), h, w), dtype=torch.float32, device=mean.device)
    for j, (kind, i) in enumerate(sources):
        if kind == "dsm-ground":
            assert ground is not None
            src = interpolate_columns(*ground)  # the same bits as the host's nDSM
            torch.sub(elevation[i], src, out=src)
            src.clamp_(min=0.0)
        else:
            src = image[i] if kind == "image" else elevation[i]
        torch.sub(src.to(torch.float32), mean[j], out=x[j])
        x[j].div_(std[j])
    if valid is not None:
        x.masked_fill_(~valid, 0.0)
    return x


def normalise_raw(
    raw: RawBlock, mean: torch.Tensor, std: torch.Tensor, transfers: Transfers
) -> torch.Tensor:
    """:func:`normalise` of a raw area read by :meth:`geoseg.raster.Scene.read_raw`.

    Its arrays (and the ground under a derived nDSM, and the validity mask unless every pixel
    is valid) go to ``transfers``' device first.
    """
    g = raw.ground
    patch: list[npt.NDArray[Any]] = [] if g is None else [g.rows, g.c0, g.c1, g.tc]
    mask = [] if raw.all_valid else [raw.valid]
    image, elev, *rest = transfers.to_device([raw.image, raw.elevation, *patch, *mask])
    ground, valid = (rest[:4], rest[4:]) if patch else (None, rest)
    return normalise(image, elev, valid[0] if valid else None, raw.sources, mean, std, ground)


def tta_views(tta: TTA) -> list[tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """The (forward, inverse) transforms of a test-time augmentation."""
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
        views.append((ident, ident) if k == 0 else (rot(k), rot(-k)))
        views.append((flip_rot(k), unrot_flip(k)))
    return views


def model_probs(
    module: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tta: TTA,
    num_classes: int,
    extra: int = 0,
) -> torch.Tensor:
    """Softmax probabilities (N, C, H, W) float32, averaged over the TTA views.

    With ``extra`` E > 0 the model returns C + E channels: the softmax of the first C and
    the sigmoid of each of the last E, (N, C + E, H, W).

    Raises:
        CheckpointError: The model does not return (N, C + E, H, W) logits of the input's size.
    """
    import torch

    views = tta_views(tta)
    total: torch.Tensor | None = None
    channels = num_classes + extra
    for fwd, inv in views:
        xin = fwd(x)
        if xin.is_cuda:  # rotations change the strides: one layout for cuDNN and one graph
            xin = xin.contiguous(memory_format=torch.channels_last)
        logits = module(xin)
        if logits.ndim != 4 or logits.shape[1] != channels:
            raise CheckpointError(
                f"the model returned shape {tuple(logits.shape)} for input "
                f"{tuple(x.shape)}; expected (N, {channels}, H, W) logits"
            )
        if extra:
            lf = logits.float()
            p = torch.cat(
                [torch.softmax(lf[:, :num_classes], dim=1), torch.sigmoid(lf[:, num_classes:])],
                dim=1,
            )
            p = inv(p)
        else:
            p = inv(torch.softmax(logits.float(), dim=1))
        total = p if total is None else total.add_(p)
    assert total is not None
    if total.shape[2:] != x.shape[2:]:
        raise CheckpointError(
            f"the model returned {tuple(total.shape[2:])} pixels for {tuple(x.shape[2:])} "
            "tiles; it must keep the input size"
        )
    return total if len(views) == 1 else total.div_(len(views))


def quantize(probs: torch.Tensor) -> torch.Tensor:
    """``rint(clip(p, 0, 1) * 65535)`` as int32, in place of ``probs`` where possible.

    The same integers as :func:`geoseg.blend.quantize_probs` (round half to even).
    """
    import torch

    return probs.mul_(float(PROB_SCALE)).round_().clamp_(0.0, float(PROB_SCALE)).to(torch.int32)


def compile_module(
    module: torch.nn.Module, device: torch.device, warn: Callable[[str], None]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile(module)`` on CUDA; the module itself elsewhere (``warn`` says why).

    Compilation happens lazily at the first call; :class:`geoseg.predict.Runner` times that
    first batch as the warm-up and falls back to the eager module if it fails.
    """
    import torch

    if device.type != "cuda":
        warn(f"--compile: torch.compile is only used on CUDA; running eagerly on {device}")
        return module
    compiled: Callable[[torch.Tensor], torch.Tensor] = torch.compile(module)
    return compiled
