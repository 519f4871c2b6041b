"""Output helpers: never clobber, write to a temporary name, rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

from geoseg.errors import OutputExistsError

__all__ = ["atomic_path", "check_output", "temp_sibling"]


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return ``path`` as a Path, raising if it exists and ``overwrite`` is false.

    Args:
        path: The output file or directory.
        overwrite: Whether an existing output may be replaced.

    Raises:
        OutputExistsError: When the output exists and ``overwrite`` is false.
    """
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(
            f"{p}: output already exists; pass --overwrite to replace it or choose another path"
        )
    return p


def temp_sibling(path: Path) -> Path:
    """A unique temporary name in the same directory (same filesystem, so rename is atomic).

    The suffix is kept so that drivers chosen by extension (GeoPackage, GeoTIFF) still work.
    """
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary file (or directory) is removed and nothing appears at
    ``path``.

    Args:
        path: The final output path.
        overwrite: Whether an existing output may be replaced.

    Raises:
        OutputExistsError: When the output exists and ``overwrite`` is false.
    """
    final = check_output(path, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
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
        raise
    if aside is not None:
        _remove(aside)
    _remove(Path(str(tmp) + ".aux.xml"))


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


_WARNINGS_LOCK = threading.RLock()


@contextlib.contextmanager
def ignoring(*categories: type[Warning]) -> Iterator[None]:
    """Ignore warnings of ``categories`` inside the block, safely across threads.

    :class:`warnings.catch_warnings` swaps the process-wide filter list and is not
    thread-safe: a thread leaving it can remove the filter another thread relies on. Every
    such block of geoseg holds this one (re-entrant) lock, so they never interleave.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        for c in categories:
            warnings.simplefilter("ignore", c)
        yield
