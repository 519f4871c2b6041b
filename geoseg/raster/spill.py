"""A decoded copy of a scene's DSM on local disk, so that it is decoded once per process.

Deriving an nDSM needs the ground under the whole scene first (:mod:`geoseg.raster.ground`),
so the DSM is read twice: once by the ground estimate, once by the block reads. A DSM is
often compressed (LZW, DEFLATE), and decoding it was the largest host cost of a prediction
(about 13 CPU-ms per scene Mpx each time for an LZW float32 DSM on a 2-core Xeon). While the
ground estimate streams the DSM, :class:`DsmSpill` writes the decoded strips (float32, NaN
where invalid) as ``.npy`` files in a temporary folder; block reads then copy their windows
out of them (memory-mapped for the copy only: a few ms per Mpx).

The spill takes 4 bytes per scene pixel in the temporary folder (``TMPDIR``). It is skipped,
and the DSM read from its file as before, when less than twice that is free or a write
fails. A process keeps at most :data:`KEEP_SPILLS` spills (the oldest is removed) and
removes its spills when it exits; a spill left by a killed process is removed by the next
one that makes a spill.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Hashable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg.raster.ground import DsmReader

__all__ = ["KEEP_SPILLS", "DsmSpill", "clear_spills", "find_spill", "keep_spill", "spilling"]

logger = logging.getLogger("geoseg.raster")

KEEP_SPILLS = 2
"""Spills a process keeps (one per scene being predicted)."""

_PREFIX = "geoseg-dsm-"

_SPILLS: dict[Hashable, DsmSpill] = {}
_LOCK = threading.Lock()


class DsmSpill:
    """A scene's DSM on the scene grid, written in row strips, read back by window.

    Args:
        width: Scene width (pixels).
        height: Scene height.
        folder: Where the strips go (a new, empty folder that the spill owns).
    """

    def __init__(self, width: int, height: int, folder: Path) -> None:
        self.width = width
        self.height = height
        self.folder = folder
        self._strips: list[tuple[int, int, Path]] = []  # (first row, stop row, file)
        self._finalizer = weakref.finalize(self, shutil.rmtree, folder, True)

    @classmethod
    def create(cls, width: int, height: int) -> DsmSpill | None:
        """A new spill in the temporary folder, or None when it lacks room (2 x the spill)."""
        tmp = Path(tempfile.gettempdir())
        _remove_orphans(tmp)
        try:
            if shutil.disk_usage(tmp).free < 2 * 4 * width * height:
                logger.debug("%s: too little free space for a DSM spill; reading the DSM", tmp)
                return None
            folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=tmp))
        except OSError:
            return None
        return cls(width, height, folder)

    def add(self, window: Window, dsm: npt.NDArray[np.float32], ok: npt.NDArray[np.bool_]) -> None:
        """Write the rows of a full-width strip read at ``window`` (invalid pixels as NaN).

        Strips must come in order, top to bottom, each starting where the last stopped.
        The invalid pixels of ``dsm`` are set to NaN in place (no copy of the strip).

        Raises:
            OSError: The write failed (the caller drops the spill).
        """
        r0 = int(window.row_off)
        rows = min(dsm.shape[0], self.height - r0)
        start = self._strips[-1][1] if self._strips else 0
        if int(window.col_off) != 0 or r0 != start or rows <= 0:
            raise ValueError(f"DSM spill: strip at row {r0} is not the next one ({start})")
        np.copyto(dsm, np.float32(np.nan), where=~ok)
        path = self.folder / f"rows_{r0}.npy"
        np.save(path, dsm[:rows, : self.width], allow_pickle=False)
        self._strips.append((r0, r0 + rows, path))

    @property
    def complete(self) -> bool:
        """Whether every row is written."""
        return bool(self._strips) and self._strips[-1][1] == self.height

    def read(self, window: Window) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """The DSM over ``window`` (boundless) and where it is valid, as the file reads it."""
        h, w = int(window.height), int(window.width)
        r0, c0 = int(window.row_off), int(window.col_off)
        out = np.full((h, w), np.nan, dtype=np.float32)
        cc0, cc1 = max(c0, 0), min(c0 + w, self.width)
        if cc1 > cc0:
            for s0, s1, path in self._strips:
                rr0, rr1 = max(r0, s0), min(r0 + h, s1)
                if rr1 <= rr0:
                    continue
                strip = np.load(path, mmap_mode="r", allow_pickle=False)
                out[rr0 - r0 : rr1 - r0, cc0 - c0 : cc1 - c0] = strip[rr0 - s0 : rr1 - s0, cc0:cc1]
                del strip  # unmapped: the pages stay in the page cache, not in this process
        return out, np.isfinite(out)

    def remove(self) -> None:
        """Delete the strips (the spill is no longer readable)."""
        self._finalizer()


@contextlib.contextmanager
def spilling(key: Hashable, width: int, height: int, read: DsmReader) -> Iterator[DsmReader]:
    """``read``, also writing what it reads into a new spill, kept under ``key`` once complete.

    For one pass over the whole DSM, strip by strip (the ground estimate's). Without room for
    a spill, or after a failed write, ``read`` alone; a spill left incomplete (the pass
    failed or stopped early) is removed.
    """
    spill = DsmSpill.create(width, height)

    def reader(window: Window) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        nonlocal spill
        dsm, ok = read(window)
        if spill is not None:
            try:
                spill.add(window, dsm, ok)
            except OSError as exc:  # a full disk: the block reads decode the DSM again
                logger.debug("DSM spill dropped (%s)", exc)
                spill.remove()
                spill = None
        return dsm, ok

    try:
        yield reader
        if spill is not None and spill.complete:
            keep_spill(key, spill)
            spill = None
    finally:
        if spill is not None:
            spill.remove()


def keep_spill(key: Hashable, spill: DsmSpill) -> None:
    """Keep a complete spill under ``key`` (the oldest beyond :data:`KEEP_SPILLS` is removed)."""
    with _LOCK:
        old = _SPILLS.pop(key, None)
        if old is not None:
            old.remove()
        while len(_SPILLS) >= KEEP_SPILLS:
            _SPILLS.pop(next(iter(_SPILLS))).remove()
        _SPILLS[key] = spill


def find_spill(key: Hashable) -> DsmSpill | None:
    """The spill kept under ``key``, if any."""
    with _LOCK:
        return _SPILLS.get(key)


def clear_spills() -> None:
    """Remove every spill of this process."""
    with _LOCK:
        spills = list(_SPILLS.values())
        _SPILLS.clear()
    for s in spills:
        s.remove()


def _remove_orphans(tmp: Path) -> None:
    """Remove spills whose process is gone (killed before it could remove them)."""
    with contextlib.suppress(OSError):
        for p in tmp.glob(f"{_PREFIX}*"):
            pid = p.name[len(_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
