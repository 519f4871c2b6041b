"""Helpers of the hostile-input suite: run a command, check it failed cleanly, nothing left."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from geoseg.cli.main import cli

__all__ = ["Failure", "fails_cleanly", "run", "snapshot", "tiny_checkpoint"]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` (relative path -> sha256); folders as ``path/``."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.exists():
            continue
        if root.is_file():
            out[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for p in sorted(root.rglob("*")):
            key = str(p)
            if p.is_symlink():
                out[key] = f"-> {p.readlink()}"
            elif p.is_dir():
                out[key + "/"] = ""
            else:
                out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Failure:
    """What a failed command printed."""

    code: int
    message: str
    output: str


def run(*args: object) -> tuple[int, str, BaseException | None]:
    """Run ``geoseg ARGS`` in-process; (exit code, output, unexpected exception or None)."""
    result = CliRunner().invoke(cli, [str(a) for a in args])
    exc = result.exception
    if isinstance(exc, SystemExit):
        exc = None
    return result.exit_code, result.output, exc


_NOISE = re.compile(r"^(Usage:|Try '|\s*$)")


def fails_cleanly(
    *args: object,
    watch: Path,
    code: int | tuple[int, ...] = (1, 2),
    names: str | tuple[str, ...] = (),
) -> Failure:
    """Run ``geoseg ARGS``; assert a clean failure that changed nothing under ``watch``.

    Clean: the exit code is ``code`` (one of), no exception escaped, no traceback was printed,
    the error is ONE line (besides click's usage lines), it names every string in ``names``,
    and the files under ``watch`` (every path and its sha256) are the same as before.
    """
    before = snapshot(watch)
    rc, output, exc = run(*args)
    after = snapshot(watch)
    codes = (code,) if isinstance(code, int) else code
    assert exc is None, f"unexpected exception {exc!r}; output:\n{output}"
    assert rc in codes, f"exit {rc}, expected {codes}; output:\n{output}"
    assert "Traceback" not in output, output
    lines = [ln for ln in output.splitlines() if not _NOISE.match(ln)]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1, f"expected one error line, got:\n{output}"
    message = errors[0]
    assert len(message) < 400, message
    for n in (names,) if isinstance(names, str) else names:
        assert n in message, f"{n!r} not named in: {message}"
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert (added, removed, changed) == ([], [], []), (added, removed, changed)
    return Failure(rc, message, output)


def tiny_checkpoint(path: Path) -> Path:
    """A valid tiny checkpoint: SegNet of width 4, RGB, the 6 Potsdam classes, 32 px tiles."""
    import torch

    from geoseg.checkpoint import Checkpoint, save_checkpoint
    from geoseg.schema import POTSDAM

    torch.manual_seed(0)
    c = Checkpoint.untrained(
        "segnet",
        bands=("red", "green", "blue"),
        mean=(120.0, 110.0, 100.0),
        std=(60.0, 50.0, 40.0),
        schema=POTSDAM,
        tile_size=32,
        gsd=0.05,
        base_width=4,
    )
    return save_checkpoint(c, path)
