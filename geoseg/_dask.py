"""The one way geoseg gets a Dask client: a scheduler address, a client, or local threads.

:func:`dask_client` yields a ``distributed.Client``:

* for an existing client: that client (left open: it belongs to the caller);
* for a scheduler address (``tcp://host:port``): a new client, closed on exit; an
  unreachable scheduler is an :class:`~geoseg.errors.InputError` naming the address;
* for None: an in-process ``LocalCluster`` of one worker with ``workers`` threads (no
  processes, no memory limit) and its client, both closed on exit. Its dashboards never
  claim a fixed port: two runs on one machine (or a user's own Dask dashboard on 8787)
  never collide.

While the client is in use, the ``Compute Failed`` dumps that in-process Dask workers log
for a failed task (a multi-line traceback on stderr) are dropped: the caller gets the
task's exception from its future and reports it, in one line.

One GPU per worker: :func:`probe_workers` asks every worker of a client what it sees
(host, CUDA devices, ``CUDA_VISIBLE_DEVICES``) and :func:`assign_devices`, a pure function
of those probes, gives each worker the concrete device it runs on (``cpu`` or ``cuda:N``):
with ``cuda`` (or ``auto``), the workers of one machine are spread over its GPUs. The
alternative is to pin each worker yourself, ``CUDA_VISIBLE_DEVICES=i dask worker ...``:
such a worker sees one GPU and is given ``cuda:0``, which is GPU ``i``.

``distributed`` and ``torch`` are imported inside the functions, so importing this module
stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoseg.errors import ConfigError, InputError
from geoseg.options import check_device

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["SCHEDULER_RE", "WorkerProbe", "assign_devices", "dask_client", "probe_workers"]

SCHEDULER_RE = re.compile(
    r"^(?:(?:tcp|tls|ucx|ws|wss)://(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):\d{1,5}|inproc://\S+)$"
)
"""A Dask scheduler address: ``tcp://HOST:PORT`` (or tls, ucx, ws, wss; ``inproc://``)."""

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(
    scheduler: Client | str | None,
    *,
    workers: int,
    quiet: bool = False,
    timeout: str | float = "20s",
) -> Iterator[Client]:
    """A Dask client for ``scheduler``: itself, a connection to it, or local threads.

    Args:
        scheduler: A ``distributed.Client`` (yielded as is), a scheduler address
            (``tcp://host:port``), or None for an in-process cluster of threads.
        workers: Threads of the in-process cluster (ignored otherwise).
        quiet: Keep the in-process cluster's INFO chatter (start, stop, worker
            registration) out of the log: the ``distributed`` logger is raised to WARNING
            while the cluster runs and restored afterwards.
        timeout: How long to try to reach a scheduler address.

    Yields:
        The client.

    Raises:
        InputError: The scheduler address cannot be reached.
    """
    with (
        _quiet_task_failures(),
        _client(scheduler, workers=workers, quiet=quiet, timeout=timeout) as client,
    ):
        yield client


@contextlib.contextmanager
def _client(
    scheduler: Client | str | None, *, workers: int, quiet: bool, timeout: str | float
) -> Iterator[Client]:
    import dask
    from distributed import Client, LocalCluster

    if scheduler is None:
        dlog = logging.getLogger("distributed")
        level = dlog.level
        if quiet:
            dlog.setLevel(max(level, logging.WARNING))
        with (
            _restore_level(dlog, level),
            # An in-process cluster of one worker needs no statistical profiler (it samples
            # every thread 100 times a second for a dashboard nobody sees), no work stealing
            # (there is no other worker) and no 20 ms watchdog tick: CPU the host keeps.
            dask.config.set(
                {
                    "distributed.worker.profile.enabled": False,
                    "distributed.scheduler.work-stealing": False,
                    "distributed.admin.tick.interval": "1s",
                }
            ),
            LocalCluster(
                processes=False,
                n_workers=1,
                threads_per_worker=workers,
                dashboard_address=None,
                # The scheduler's HTTP routes would otherwise claim port 8787.
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                memory_limit=0,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    if isinstance(scheduler, str):
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot connect to the Dask scheduler at {scheduler} ({exc}); check the "
                "address and that the scheduler (`dask scheduler`) is running"
            ) from None
        logger.info(
            "connected to %s: %d workers, %d threads",
            scheduler,
            len(client.nthreads()),
            sum(client.nthreads().values()),
        )
        try:
            yield client
        finally:
            client.close()
        return
    yield scheduler


class _NoTaskFailureDump(logging.Filter):
    """Drops the worker's ``Compute Failed`` record (the caller reports the failure)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


@contextlib.contextmanager
def _quiet_task_failures() -> Iterator[None]:
    log = logging.getLogger("distributed.worker")
    dropper = _NoTaskFailureDump()
    log.addFilter(dropper)
    try:
        yield
    finally:
        log.removeFilter(dropper)


@contextlib.contextmanager
def _restore_level(log: logging.Logger, level: int) -> Iterator[None]:
    try:
        yield
    finally:
        log.setLevel(level)


# -- one GPU per worker --------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerProbe:
    """What one Dask worker sees (:func:`probe_workers`).

    Attributes:
        address: The worker's address (``tcp://10.0.0.5:40331``).
        host: The host name of its machine (``socket.gethostname()``).
        cuda_devices: The CUDA devices its process sees (``torch.cuda.device_count()``:
            0 without CUDA; ``CUDA_VISIBLE_DEVICES`` counts).
        visible: Its ``CUDA_VISIBLE_DEVICES``, or None when unset.
    """

    address: str
    host: str
    cuda_devices: int
    visible: str | None


def _probe_here() -> dict[str, Any]:
    """Run on a worker by :func:`probe_workers`: what this process sees."""
    import torch

    return {
        "host": socket.gethostname(),
        "cuda_devices": int(torch.cuda.device_count()),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def probe_workers(client: Client) -> list[WorkerProbe]:
    """What every worker of ``client`` sees, in address order.

    Asks each worker once (``client.run``). Counting CUDA devices does not initialise
    torch's CUDA state on the worker (no context, no device memory).
    """
    answers = client.run(_probe_here)
    return sorted(
        (WorkerProbe(address=address, **answer) for address, answer in answers.items()),
        key=lambda p: _natural(p.address),
    )


def assign_devices(
    probes: Iterable[WorkerProbe], device: str, *, allow_mixed: bool = False
) -> dict[str, str]:
    """The concrete device of each worker (``cpu`` or ``cuda:N``) for a device option.

    * ``cpu``: every worker on its CPU.
    * ``cuda:N``: every worker on its device ``N``; each must see it.
    * ``cuda``: the workers of one machine are spread over its GPUs, round-robin in
      address order: worker ``i`` of a host gets ``cuda:(i % count)``. Workers are
      grouped by what they see (host, ``CUDA_VISIBLE_DEVICES`` and device count), so a
      worker pinned with ``CUDA_VISIBLE_DEVICES=3 dask worker ...`` sees one device and
      gets ``cuda:0`` (GPU 3), and workers that share a set of GPUs share it out. Every
      worker must see a GPU.
    * ``auto``: like ``cuda`` for the workers that see a GPU, ``cpu`` for the others;
      a run that would mix CPU and GPU workers is refused unless ``allow_mixed``: their
      outputs differ slightly (bf16 on the GPU, fp32 on the CPU), so one scene would be
      cut from blocks of two kinds.

    Args:
        probes: What the workers see (:func:`probe_workers`).
        device: The device option: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        allow_mixed: Accept CPU and GPU workers in one run (``auto`` only; an explicit
            ``cuda`` always needs a GPU on every worker).

    Returns:
        Worker address -> device; empty when there are no workers.

    Raises:
        ConfigError: Not a device option; a worker lacks the GPU asked for; ``auto`` would
            mix CPU and GPU workers without ``allow_mixed``. One line that names the
            workers (a few) and says how to fix it.
    """
    check_device(device)
    ordered = sorted(probes, key=lambda p: _natural(p.address))
    if device == "cpu":
        return {p.address: "cpu" for p in ordered}
    if device.startswith("cuda:"):
        index = int(device.partition(":")[2])
        short = [p for p in ordered if p.cuda_devices <= index]
        if short:
            pinned = any(p.visible is not None for p in short)
            raise ConfigError(
                f"--device {device}: {_workers(short)} {'sees' if len(short) == 1 else 'see'} "
                f"fewer than {index + 1} CUDA device{'' if index == 0 else 's'}"
                f"{' (CUDA_VISIBLE_DEVICES numbers the devices it shows from 0)' if pinned else ''}"
                "; use --device cuda to spread the workers over the GPUs each one sees, or an "
                "index every worker has"
            )
        return {p.address: f"cuda:{index}" for p in ordered}
    gpu = [p for p in ordered if p.cuda_devices > 0]
    cpu = [p for p in ordered if p.cuda_devices == 0]
    if cpu and device == "cuda":
        raise ConfigError(
            f"--device cuda: {_workers(cpu)} {'has' if len(cpu) == 1 else 'have'} no CUDA "
            "device; use --device cpu, or start the workers on GPU machines (with a CUDA "
            "build of torch)"
        )
    if cpu and gpu and not allow_mixed:
        raise ConfigError(
            f"--device auto: {_workers(cpu)} {'has' if len(cpu) == 1 else 'have'} no CUDA "
            f"device but {len(gpu)} other worker(s) have one; CPU and GPU workers give "
            "slightly different outputs: use --device cpu, start GPU workers only, or allow "
            "mixing them (--allow-mixed-devices)"
        )
    out = {p.address: "cpu" for p in cpu}
    groups: dict[tuple[str, str | None, int], int] = {}
    for p in gpu:
        key = (p.host, p.visible, p.cuda_devices)
        i = groups.get(key, 0)
        groups[key] = i + 1
        out[p.address] = f"cuda:{i % p.cuda_devices}"
    return {p.address: out[p.address] for p in ordered}


def _natural(address: str) -> tuple[str, ...]:
    """Sort key of an address that compares its numbers as numbers (port 9 before 10)."""
    # re.split with a group alternates text and digits, so equal positions hold like parts
    return tuple(p.zfill(10) if p.isdigit() else p for p in re.split(r"(\d+)", address))


def _workers(probes: list[WorkerProbe], limit: int = 3) -> str:
    """``worker tcp://a:1 (host h)`` or ``workers tcp://a:1, tcp://b:2 and 3 more``."""
    named = [f"{p.address} ({p.host})" for p in probes[:limit]]
    more = f" and {len(probes) - limit} more" if len(probes) > limit else ""
    return f"worker{'s' if len(probes) > 1 else ''} {', '.join(named)}{more}"
