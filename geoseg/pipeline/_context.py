"""What every step of a run shares: the job, the manifest, the Dask client, the layout.

:class:`RunContext` is handed to every step; :class:`SharedClient` starts the run's one
Dask client (:func:`geoseg._dask.dask_client`) when a step first needs it and closes it at
the end of the run. :func:`known_errors` are the errors that fail a scene rather than the
run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg._dask import dask_client
from geoseg.errors import GeosegError, InputError
from geoseg.pipeline._config import Job
from geoseg.pipeline._manifest import Manifest
from geoseg.pipeline._results import RunEvent

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "LANDCOVER_CSV",
    "MAPS_DIR",
    "METRICS_DIR",
    "VECTORS_DIR",
    "RunContext",
    "SharedClient",
    "classes_path",
    "contact_path",
    "known_errors",
    "one_line",
    "probs_path",
    "vector_output",
]

LANDCOVER_CSV = "landcover.csv"
MAPS_DIR = "maps"
VECTORS_DIR = "vectors"
METRICS_DIR = "metrics"


class SharedClient:
    """The run's Dask client: in-process threads, or a scheduler; started on first use.

    The client comes from :func:`geoseg._dask.dask_client`, a context manager that must be
    left in the thread that entered it; the scenes that use the client run in other
    threads, and the first of them starts it. So one thread of its own holds the context
    from the first :meth:`client` call until :meth:`close`.

    Args:
        scheduler: Scheduler address, or None for an in-process cluster.
        threads: Threads of the in-process cluster.
    """

    def __init__(self, scheduler: str | None, threads: int) -> None:
        self.scheduler = scheduler
        self.threads = threads
        self._client: Client | None = None
        self._error: BaseException | None = None
        self._holder: threading.Thread | None = None
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._lock = threading.Lock()

    @property
    def remote(self) -> bool:
        """Whether the client talks to a scheduler (its workers then run every step)."""
        return self.scheduler is not None

    def client(self) -> Client:
        """The client, started by the first call.

        Raises:
            InputError: The scheduler cannot be reached.
        """
        with self._lock:
            if self._holder is None:
                self._holder = threading.Thread(
                    target=self._hold, name="geoseg-dask-client", daemon=True
                )
                self._holder.start()
                self._ready.wait()
            if self._client is None:
                raise self._error or InputError("the Dask client could not be started")
            return self._client

    def _hold(self) -> None:
        try:
            with dask_client(self.scheduler, workers=self.threads) as client:
                self._client = client
                self._ready.set()
                self._closing.wait()
        except BaseException as exc:  # handed to the thread that asked for the client
            self._error = exc
        finally:
            self._ready.set()

    def close(self) -> None:
        """Close the client (and the in-process cluster)."""
        with self._lock:
            if self._holder is None:
                return
            self._closing.set()
            self._holder.join()
            failed_on_exit = self._client is not None and self._error is not None
            error = self._error
            self._holder, self._client, self._error = None, None, None
            self._ready.clear()
            self._closing.clear()
        if failed_on_exit and error is not None:
            raise error


@dataclass
class RunContext:
    """What the steps of a run share.

    Attributes:
        job: The job.
        manifest: The run manifest.
        force: Run every step again.
        model_sha: SHA-256 of the checkpoint.
        emit: Called whenever a step changes state.
        cluster: The Dask client (None when planning).
        stop: Set to stop scenes after their current step.
        csv_lock: Serialises writes of the land-cover CSV.
    """

    job: Job
    manifest: Manifest
    force: bool
    model_sha: str
    emit: Callable[[RunEvent], None]
    cluster: SharedClient | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    csv_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> Path:
        """The output root."""
        return self.job.output

    def rel(self, p: Path) -> str:
        """``p`` relative to the output root."""
        return os.path.relpath(p, self.root)


def classes_path(ctx: RunContext, scene: str) -> Path:
    """The class raster that predict writes for ``scene``."""
    from geoseg.predict import output_paths

    return output_paths(ctx.root / MAPS_DIR, scene)["classes"]


def probs_path(ctx: RunContext, scene: str) -> Path:
    """The probability raster that predict writes for ``scene``."""
    from geoseg.predict import output_paths

    return output_paths(ctx.root / MAPS_DIR, scene)["probs"]


def contact_path(ctx: RunContext, scene: str) -> Path:
    """The building-contact raster that predict writes for ``scene`` (a model with one)."""
    from geoseg.predict import output_paths

    return output_paths(ctx.root / MAPS_DIR, scene)["contact"]


def vector_output(ctx: RunContext, scene: str, layer: str) -> tuple[str, Path]:
    """The vectorize step's output that holds ``layer``: its manifest name and its path.

    A GeoPackage holds every layer; GeoParquet is a folder with one file per layer.
    """
    v = ctx.job.vectorize
    if v is None or v.format == "gpkg":
        return "vectors", ctx.root / VECTORS_DIR / f"{scene}.gpkg"
    return f"vectors/{layer}.parquet", ctx.root / VECTORS_DIR / scene / f"{layer}.parquet"


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors that fail a scene (recorded) rather than the run."""
    from concurrent.futures import CancelledError

    from rasterio.errors import RasterioError

    errors: list[type[BaseException]] = [GeosegError, OSError, RasterioError, CancelledError]
    with contextlib.suppress(ImportError):
        from distributed import KilledWorker

        errors.append(KilledWorker)
    return tuple(errors)


def one_line(exc: BaseException) -> str:
    """An error as one line for the manifest (its type named unless a GeosegError)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, GeosegError):
        text = f"{type(exc).__name__}: {text}"
    return text[:1000]
