"""Output helpers: check an output before any work, never clobber, write to a temporary name.

:func:`check_output_path` and :func:`check_output` are the one check every command makes on
every output before anything is created (the parent chain, the kind of path, permissions,
existence); :func:`atomic_path` writes under a temporary name and renames into place.
:func:`check_memory` refuses, up front, a buffer that cannot sensibly be held in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from geoseg.errors import ConfigError, OutputError, OutputExistsError

__all__ = [
    "MEMORY_FRACTION",
    "TEMP_NAME",
    "OutputKind",
    "atomic_path",
    "available_memory",
    "check_memory",
    "check_output",
    "check_output_path",
    "format_bytes",
    "ignoring",
    "make_parents",
    "remove_empty",
    "remove_stale_temporaries",
    "temp_sibling",
]

OutputKind = Literal["file", "dir", "any"]
"""What an output path is to hold: a file, a folder, or either (a temporary's rename)."""

_TEMP_EXTRA = 20
"""Bytes :func:`temp_sibling` (and a folder moved aside) add to an output's name."""


def check_output_path(path: str | os.PathLike[str], *, kind: OutputKind = "any") -> Path:
    """Check that ``path`` can be created as a ``kind`` (whether or not it exists).

    Made before any work, so that a run never fails after hours on a path it cannot write.

    Args:
        path: The output file or folder.
        kind: ``file`` (a folder there is refused, even with ``--overwrite``), ``dir`` (a
            file there is refused; an existing folder must be writable) or ``any``.

    Returns:
        ``path`` as a Path.

    Raises:
        OutputError: A parent of ``path`` is a file (or a broken link), the nearest existing
            parent is not a writable folder, the name is too long, or ``path`` is of the
            other kind.
    """
    p = Path(path)
    parent = p.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        what = "a broken link" if parent.is_symlink() and not parent.exists() else "a file"
        raise OutputError(f"{p}: cannot create it: {parent} is {what}; choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{p}: cannot create it: {parent} is not writable; choose another output path "
            "or fix the folder's permissions"
        )
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # pragma: no cover - no such limit on this platform
        name_max = 255
    # The name gets a temporary prefix and suffix while written; folders still to be
    # created keep theirs.
    too_long = [
        q.name
        for q, extra in ((p, _TEMP_EXTRA), *((q, 0) for q in p.parents if not q.exists()))
        if q.name and len(os.fsencode(q.name)) + extra > name_max
    ]
    if too_long:
        what = "name" if too_long[0] == p.name else f"folder name {too_long[0][:24]!r}..."
        raise OutputError(
            f"{p}: the {what} is too long for the file system (with the suffix of its "
            "temporary name); choose a shorter output name"
        )
    if kind == "file" and p.is_dir():
        raise OutputError(
            f"{p}: is a folder, but a file is to be written there (--overwrite never replaces "
            "a folder by a file); choose a file name"
        )
    if kind == "dir" and (p.exists() or p.is_symlink()) and not p.is_dir():
        what = "a file" if p.exists() else "a broken link"
        raise OutputError(
            f"{p}: is {what}, but a folder is to be written there (--overwrite never replaces "
            "a file by a folder); choose another output path"
        )
    if kind == "dir" and p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(
            f"{p}: the folder is not writable; choose another output path or fix its permissions"
        )
    return p


def check_output(
    path: str | os.PathLike[str], *, overwrite: bool, kind: OutputKind = "any"
) -> Path:
    """Return ``path`` as a Path, raising if it cannot be written or exists.

    Args:
        path: The output file or directory.
        overwrite: Whether an existing output may be replaced.
        kind: What the output is: ``file``, ``dir`` or ``any`` (see
            :func:`check_output_path`).

    Raises:
        OutputError: ``path`` cannot be created (see :func:`check_output_path`).
        OutputExistsError: When the output exists and ``overwrite`` is false.
    """
    p = check_output_path(path, kind=kind)
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"{p}: output already exists; pass --overwrite to replace it or choose another path"
        )
    return p


def remove_stale_temporaries(path: Path, *, stages: bool = False) -> list[Path]:
    """Remove what a killed write of ``path`` left beside it; return what was removed.

    A process killed (SIGKILL, power loss) while writing ``path`` leaves its temporary
    names: :func:`temp_sibling` files (with SQLite's ``-journal``/``-wal``/``-shm`` and GDAL's
    ``.aux.xml`` companions) and, with ``stages``, the ``.{stem}.*.stage`` folders of the COG
    writer (which calls this before it makes its own). The next write of the same output
    removes them, so a rerun leaves only final files.
    """
    parent = path.parent
    if not parent.is_dir():
        return []
    companions = {path.suffix + c for c in ("", "-journal", "-wal", "-shm", ".aux.xml")}
    stage = re.compile(rf"^\.{re.escape(path.stem)}\.[A-Za-z0-9_]+\.stage$")

    def stale(name: str) -> bool:
        m = TEMP_NAME.match(name)
        if m is not None:
            return m["stem"] == path.stem and (m["suffix"] or "") in companions
        return stages and stage.match(name) is not None

    removed = []
    for p in parent.iterdir():
        if stale(p.name):
            _remove(p)
            removed.append(p)
    return removed


TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[0-9a-f]{8}\.partial(?P<suffix>\..*)?$")
"""The names :func:`temp_sibling` gives: ``.{stem}.{8 hex}.partial{suffix}``."""


def temp_sibling(path: Path) -> Path:
    """A unique temporary name in the same directory (same filesystem, so rename is atomic).

    The suffix is kept so that drivers chosen by extension (GeoPackage, GeoTIFF) still work.
    """
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, overwrite: bool = False, kind: OutputKind = "any"
) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary file (or directory) is removed and nothing appears at
    ``path``.

    Args:
        path: The final output path.
        overwrite: Whether an existing output may be replaced.
        kind: What the output is (see :func:`check_output_path`); ``any`` lets an
            overwrite replace a folder by a file and the reverse.

    Raises:
        OutputError: ``path`` cannot be created (see :func:`check_output_path`).
        OutputExistsError: When the output exists and ``overwrite`` is false.
    """
    final = check_output(path, overwrite=overwrite, kind=kind)
    made = make_parents(final)
    remove_stale_temporaries(final)
    tmp = temp_sibling(final)
    try:
        yield tmp
        aside = None
        if final.is_dir() or (tmp.is_dir() and (final.exists() or final.is_symlink())):
            # os.replace cannot replace a non-empty folder, nor a file by a folder: move
            # whatever is there aside first.
            aside = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(final, aside)
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        remove_empty(made)
        raise
    if aside is not None:
        _remove(aside)
    _remove(Path(str(tmp) + ".aux.xml"))


def make_parents(path: Path) -> list[Path]:
    """Create the missing parent folders of ``path``; return them, deepest first."""
    missing = [q for q in path.parents if not q.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; leave the others."""
    for q in folders:
        with contextlib.suppress(OSError):
            q.rmdir()


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(*categories: type[Warning], message: str = "") -> Iterator[None]:
    """Ignore warnings of ``categories`` inside the block, safely across threads.

    ``message``, a regular expression, limits it to the warnings whose text starts with it.

    :class:`warnings.catch_warnings` swaps the process-wide filter list and is not
    thread-safe: a thread leaving it can remove the filter another thread relies on. Every
    such block of geoseg holds this one (re-entrant) lock, so they never interleave.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        for c in categories:
            warnings.filterwarnings("ignore", message, c)
        yield


# -- memory --------------------------------------------------------------------------------

MEMORY_FRACTION = 0.5
"""The share of the available memory one run's buffers may plan to take."""


def available_memory() -> int:
    """Bytes of memory available to new allocations now (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``512 B``, ``1.5 GiB``, ``10.9 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_memory(nbytes: int, *, what: str, fix: str, cap: int | None = None) -> None:
    """Refuse, before any work, a run whose buffers cannot sensibly be held in memory.

    Args:
        nbytes: The bytes the run would hold at once.
        what: The offending value and what it makes, e.g. ``--size 100000: a chip of 4
            bands x 100000 x 100000 px``; the message continues with the bytes it takes.
        fix: How to fix it, e.g. ``use --size 8192 or less``.
        cap: A hard limit in bytes, checked instead of the available memory.

    Raises:
        ConfigError: ``nbytes`` exceeds ``cap``, or else :data:`MEMORY_FRACTION` of the
            memory available now.
    """
    if cap is not None:
        if nbytes > cap:
            raise ConfigError(
                f"{what} takes {format_bytes(nbytes)} of memory, more than the "
                f"{format_bytes(cap)} allowed; {fix}"
            )
        return
    avail = available_memory()
    if nbytes > avail * MEMORY_FRACTION:
        raise ConfigError(
            f"{what} takes {format_bytes(nbytes)} of memory, more than half of the "
            f"{format_bytes(avail)} available; {fix}"
        )
