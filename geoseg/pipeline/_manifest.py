"""The run manifest (what ran, when, on what, producing what) and the run lock.

``OUTPUT/manifest.json`` is rewritten atomically (temporary file, fsync, rename) after
every change of a step's state, so a run killed at any moment leaves a readable manifest
whose finished steps are exact. Its layout::

    {
      "format": "geoseg-run-manifest", "format_version": 1,
      "job": {"path": ..., "name": ..., "sha256": ...},
      "model": {"path": ..., "sha256": ...},
      "versions": {"geoseg": ..., "torch": ..., "rasterio": ..., "gdal": ..., ...},
      "runs": [{"started", "finished", "pid", "host", "force", "status", "counts"}, ...],
      "scenes": {
        "<scene>": {
          "status": "done" | "failed" | "running" | "pending",
          "inputs": {"image": ..., "dsm": ..., "ndsm": ..., "labels": ...},
          "steps": {
            "<step>": {"status", "started", "finished", "seconds", "fingerprint",
                       "inputs": {name: {"path", "sha256"}}, "options": {...},
                       "outputs": [{"name", "path", "sha256", "size"}], "error", ...}
          }
        }
      },
      "files": {"<absolute input path>": {"size", "mtime_ns", "sha256"}}
    }

Output paths are relative to the output root. ``files`` caches input checksums by size
and modification time, so that large unchanged inputs are not read again on every run.

``OUTPUT/run.lock`` is created with ``O_CREAT | O_EXCL`` and holds the owner's pid, host,
process start time and boot time. A second run on the same output root stops with
:class:`RunLockedError`. A lock left by a run that died (its pid is gone, or now belongs
to another process, or the machine rebooted) on this host is stale and is taken over;
a lock of another host is never broken automatically.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from geoseg._io import atomic_path
from geoseg.checkpoint import file_sha256 as sha256_file
from geoseg.errors import GeosegError, InputError

__all__ = [
    "LOCK_NAME",
    "MANIFEST_NAME",
    "Manifest",
    "RunLock",
    "RunLockedError",
    "StepStatus",
    "sha256_file",
    "utc_now",
    "versions",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = "run.lock"
FORMAT = "geoseg-run-manifest"
FORMAT_VERSION = 1
MAX_RUNS_KEPT = 50
STALE_EMPTY_LOCK_S = 30.0
"""A lock file without readable content (its writer died mid-write) older than this is stale."""

StepStatus = Literal["pending", "running", "done", "failed", "skipped"]


class RunLockedError(GeosegError):
    """Another run holds the output root's lock."""


def utc_now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def versions() -> dict[str, str]:
    """Versions of geoseg and the libraries that shape its outputs."""
    import platform

    import numpy
    import rasterio
    import torch

    from geoseg import __version__

    out = {
        "geoseg": __version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
    }
    with contextlib.suppress(ImportError):
        import shapely

        out["shapely"] = shapely.__version__
    with contextlib.suppress(ImportError):
        import distributed

        out["distributed"] = distributed.__version__
    return out


# -- the lock -----------------------------------------------------------------------------------


def _this_process() -> dict[str, Any]:
    import psutil

    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": utc_now(),
        "create_time": psutil.Process().create_time(),
        "boot_time": psutil.boot_time(),
        "token": uuid.uuid4().hex,
    }


def _is_stale(info: Mapping[str, Any]) -> bool:
    """Whether a lock's owner is certainly gone (only decidable on the owner's host)."""
    import psutil

    if info.get("host") != socket.gethostname():
        return False
    boot = info.get("boot_time")
    if isinstance(boot, int | float) and abs(boot - psutil.boot_time()) > 1.0:
        return True  # the machine rebooted since
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not psutil.pid_exists(pid):
        return True
    created = info.get("create_time")
    if isinstance(created, int | float):
        try:
            return abs(psutil.Process(pid).create_time() - created) > 0.01  # pid reused
        except psutil.NoSuchProcess:
            return True
    return False


class RunLock:
    """An exclusive lock on an output root (see the module docs).

    Use as a context manager; :meth:`acquire` creates the output root when needed.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / LOCK_NAME
        self._token: str | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one.

        Raises:
            RunLockedError: A live run (or a run on another host) holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            me = _this_process()
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raw = _read_bytes(self.path)
                if raw is None:
                    continue  # released meanwhile: try again
                info = _parse(raw)
                if not self._stale(info):
                    raise RunLockedError(_held_message(self.path, info)) from None
                self._break(raw, info)
                continue
            try:
                os.write(fd, json.dumps(me).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._token = me["token"]
            return
        raise RunLockedError(
            f"{self.path}: could not take the lock (it keeps changing hands); "
            "is another run starting at the same time? Try again"
        )

    def release(self) -> None:
        """Remove the lock if this object holds it."""
        if self._token is None:
            return
        raw = _read_bytes(self.path)
        if raw is not None and _parse(raw).get("token") == self._token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._token = None

    def _stale(self, info: Mapping[str, Any]) -> bool:
        if not info:  # empty or unreadable: its writer died between create and write?
            try:
                age = time.time() - self.path.stat().st_mtime
            except FileNotFoundError:
                return False
            return age > STALE_EMPTY_LOCK_S
        return _is_stale(info)

    def _break(self, seen: bytes, info: Mapping[str, Any]) -> None:
        """Remove the stale lock whose bytes were ``seen``, unless it changed meanwhile.

        A second lock file (``run.lock.break``) makes check-and-remove atomic among
        processes that find the same stale lock at once.
        """
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - breaker.stat().st_mtime > STALE_EMPTY_LOCK_S:
                    breaker.unlink()
            time.sleep(0.05)
            return
        try:
            if _read_bytes(self.path) == seen:
                self.path.unlink()
                logger.warning(
                    "%s: removed the stale lock of pid %s on %s (started %s): that run is gone",
                    self.path,
                    info.get("pid", "?"),
                    info.get("host", "?"),
                    info.get("started", "?"),
                )
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                breaker.unlink()


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        info = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _held_message(path: Path, info: Mapping[str, Any]) -> str:
    if not info:
        return (
            f"{path}: another geoseg run is starting on this output root; wait for it, or "
            "delete the lock file if no run is active"
        )
    where = f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
    if info.get("host") != socket.gethostname():
        return (
            f"{path}: another geoseg run ({where}) holds this output root; it is on another "
            "host, so wait for it to finish, or delete the lock file if that run is gone"
        )
    return (
        f"{path}: another geoseg run ({where}) is still running on this output root; wait "
        "for it to finish or use another output folder"
    )


# -- the manifest -------------------------------------------------------------------------------


class Manifest:
    """The run manifest of an output root; thread-safe, saved atomically on every change.

    Args:
        root: The output root.
        data: The manifest content (see the module docs).
    """

    def __init__(self, root: Path, data: dict[str, Any]) -> None:
        self.root = root
        self.path = root / MANIFEST_NAME
        self._data = data
        self._lock = threading.RLock()

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Manifest:
        """The manifest of ``root``, or a new empty one if there is none.

        Raises:
            InputError: The manifest exists but is not a geoseg run manifest.
        """
        r = Path(root)
        path = r / MANIFEST_NAME
        if not path.exists():
            return cls(r, _empty())
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(
                f"{path}: unreadable run manifest ({exc}); move it aside to start a new run "
                "(every step then runs again)"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a geoseg run manifest; use another output folder")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise InputError(
                f"{path}: manifest format {data.get('format_version')} is newer than this "
                f"geoseg reads ({FORMAT_VERSION}); upgrade geoseg"
            )
        base = _empty()
        base.update(data)
        return cls(r, base)

    @property
    def data(self) -> dict[str, Any]:
        """A deep copy of the content."""
        with self._lock:
            return copy.deepcopy(self._data)

    def save(self) -> None:
        """Write the manifest atomically (temporary file, fsync, rename)."""
        with self._lock:
            self._data["updated"] = utc_now()
            text = json.dumps(self._data, indent=2, sort_keys=False, allow_nan=False) + "\n"
            with (
                atomic_path(self.path, overwrite=True) as tmp,
                open(tmp, "w", encoding="utf-8") as f,
            ):
                f.write(text)
                f.flush()
                os.fsync(f.fileno())

    def set(self, key: str, value: Any) -> None:
        """Set a top-level entry (not saved)."""
        with self._lock:
            self._data[key] = copy.deepcopy(value)

    def start_run(self, info: Mapping[str, Any]) -> int:
        """Append a run to the history (the last ``MAX_RUNS_KEPT`` are kept); its index."""
        with self._lock:
            runs = self._data.setdefault("runs", [])
            runs.append(dict(info))
            del runs[:-MAX_RUNS_KEPT]
            return len(runs) - 1

    def update_run(self, index: int, **fields: Any) -> None:
        """Update a run of the history (not saved)."""
        with self._lock:
            self._data["runs"][index].update(copy.deepcopy(fields))

    def scene(self, scene: str) -> dict[str, Any]:
        """A copy of a scene's entry (empty when unknown)."""
        with self._lock:
            return copy.deepcopy(self._data["scenes"].get(scene, {}))

    def step(self, scene: str, step: str) -> dict[str, Any]:
        """A copy of a step's record (empty when it never ran)."""
        with self._lock:
            s = self._data["scenes"].get(scene, {})
            return copy.deepcopy(s.get("steps", {}).get(step, {}))

    def update_scene(self, scene: str, *, save: bool = True, **fields: Any) -> None:
        """Merge ``fields`` into a scene's entry and save."""
        with self._lock:
            entry = self._data["scenes"].setdefault(scene, {"status": "pending", "steps": {}})
            entry.update(copy.deepcopy(fields))
            if save:
                self.save()

    def update_step(
        self, scene: str, step: str, *, replace: bool = False, save: bool = True, **fields: Any
    ) -> None:
        """Merge ``fields`` into a step's record (or replace it) and save."""
        with self._lock:
            entry = self._data["scenes"].setdefault(scene, {"status": "pending", "steps": {}})
            steps = entry.setdefault("steps", {})
            if replace or step not in steps:
                steps[step] = {}
            steps[step].update(copy.deepcopy(fields))
            if save:
                self.save()

    def input_sha256(self, path: Path) -> str:
        """Checksum of an input file, cached by absolute path, size and modification time.

        Raises:
            InputError: The file does not exist.
        """
        p = path.resolve()
        try:
            st = p.stat()
        except FileNotFoundError:
            raise InputError(f"{path}: input file not found; it was removed or moved") from None
        key = str(p)
        with self._lock:
            hit = self._data["files"].get(key)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            return str(hit["sha256"])
        digest = sha256_file(p)
        with self._lock:
            self._data["files"][key] = {
                "size": st.st_size,
                "mtime_ns": st.st_mtime_ns,
                "sha256": digest,
            }
        return digest

    def scenes(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Copies of every scene entry."""
        with self._lock:
            items = copy.deepcopy(list(self._data["scenes"].items()))
        yield from items


def _empty() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": utc_now(),
        "updated": None,
        "job": {},
        "model": {},
        "versions": {},
        "runs": [],
        "scenes": {},
        "files": {},
    }
