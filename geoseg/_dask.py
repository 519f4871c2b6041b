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

``distributed`` is imported inside the function, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from geoseg.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["SCHEDULER_RE", "dask_client"]

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
    from distributed import Client, LocalCluster

    if scheduler is None:
        dlog = logging.getLogger("distributed")
        level = dlog.level
        if quiet:
            dlog.setLevel(max(level, logging.WARNING))
        with (
            _restore_level(dlog, level),
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
