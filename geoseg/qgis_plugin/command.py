"""geoseg command lines for the QGIS provider: build them, run them, report progress.

Plain Python (no ``qgis``, no geoseg): the plugin runs in QGIS's own interpreter and drives
the installed ``geoseg`` in a subprocess, so geoseg's dependencies never enter QGIS.
The options come from ``options.json`` beside this file, which ``geoseg qgis-plugin
--spec`` writes from geoseg's own option records (a test keeps it in step).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SPEC_FILE = Path(__file__).with_name("options.json")
SETTING = "GEOSEG_EXECUTABLE"
"""The provider setting, and the environment variable, that name the geoseg executable."""

# tqdm's meter: "blocks:  40%|####      | 2/5 [00:01<00:02, ...]" (or without the bar)
_PROGRESS = re.compile(r"(\d+)/(\d+) \[")


class CanceledError(Exception):
    """The user canceled the run; the subprocess was ended."""


def load_spec(path: Path = SPEC_FILE) -> dict[str, list[dict[str, Any]]]:
    """The options of each command (``predict``, ``vectorize``, ``run``) from ``options.json``."""
    spec: dict[str, list[dict[str, Any]]] = json.loads(path.read_text(encoding="utf-8"))
    return spec


def executable(setting: str | None = None) -> list[str]:
    """The geoseg command to run: the setting, else ``$GEOSEG_EXECUTABLE``, else ``geoseg``.

    A value that is an existing file is taken whole (a path with spaces); any other value is
    split like a shell line (``/venv/bin/python -m geoseg.cli``).

    Raises:
        FileNotFoundError: Nothing is set and no ``geoseg`` is on the PATH.
    """
    for value in (setting, os.environ.get(SETTING)):
        if value and value.strip():
            return [value] if Path(value).is_file() else shlex.split(value)
    found = shutil.which("geoseg")
    if found is None:
        raise FileNotFoundError(
            "geoseg executable not found: install geoseg, then set its path in Settings > "
            f"Options > Processing > Providers > geoseg (or the {SETTING} environment variable)"
        )
    return [found]


def option_args(entries: Sequence[dict[str, Any]], values: dict[str, Any]) -> list[str]:
    """CLI arguments for the options whose value differs from the CLI's default.

    Args:
        entries: The command's options from :func:`load_spec`.
        values: Option name -> value; None (or missing) leaves the CLI's default.
    """
    args: list[str] = []
    for e in entries:
        value = values.get(e["name"])
        if value is None or value == e["default"]:
            continue
        kind, flag = e["kind"], e["flag"]
        if kind == "bool":
            if value:  # the CLI has no --no-flag: a flag is only ever switched on
                args.append(flag)
        elif kind == "multi":
            for item in value:
                args += [flag, str(item)]
        elif kind == "int":
            args += [flag, str(int(value))]
        elif kind == "float":
            args += [flag, repr(float(value))]
        elif str(value) != "":
            args += [flag, str(value)]
    return args


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one line to paste into a shell."""
    if os.name == "nt":
        return subprocess.list2cmdline(list(argv))
    return shlex.join(argv)


def _pump(read: Callable[[], bytes], on_text: Callable[[str], None]) -> None:
    """Read chunks until end of file (or the pty's EIO) and hand each on as text."""
    while True:
        try:
            chunk = read()
        except OSError:
            return
        if not chunk:
            return
        on_text(chunk.decode("utf-8", errors="replace"))


def run_command(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    on_progress: Callable[[float], None],
    is_canceled: Callable[[], bool],
    poll: float = 0.1,
) -> int:
    """Run ``argv``; its output lines to ``on_line``, tqdm's meter as percent to ``on_progress``.

    On POSIX the error stream is a pseudo-terminal, so that geoseg's progress bars (shown
    only on a terminal) report; elsewhere progress stays unknown.

    Returns:
        The exit code.

    Raises:
        CanceledError: ``is_canceled()`` became true; the process (and its group) was ended.
    """
    pending = {"out": "", "err": ""}
    chunks: queue.Queue[tuple[str, str]] = queue.Queue()

    def feed(stream: str) -> Callable[[str], None]:
        return lambda text: chunks.put((stream, text))

    def emit(line: str) -> None:
        m = _PROGRESS.search(line)
        if m is not None and int(m[2]) > 0:
            on_progress(100.0 * int(m[1]) / int(m[2]))
        elif line.strip():
            on_line(line.rstrip())

    def drain(wait: float) -> None:
        """Hand on what the readers got, here, in the caller's thread (QGIS's feedback)."""
        try:
            stream, text = chunks.get(timeout=wait)
            while True:
                *parts, pending[stream] = re.split(r"[\r\n]", pending[stream] + text)
                for part in parts:
                    emit(part)
                stream, text = chunks.get_nowait()
        except queue.Empty:
            return

    posix = os.name == "posix"
    master = slave = -1
    if posix:
        import pty

        master, slave = pty.openpty()
        _set_size(slave, rows=24, columns=100)  # a 0 x 0 terminal gets no progress meter
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "100"}
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave if posix else subprocess.STDOUT,
        env=env,
        start_new_session=posix,
    )
    readers = []
    stdout = proc.stdout
    if stdout is not None:
        readers.append(
            threading.Thread(
                target=_pump, args=(lambda: os.read(stdout.fileno(), 4096), feed("out"))
            )
        )
    if posix:
        os.close(slave)
        readers.append(
            threading.Thread(target=_pump, args=(lambda: os.read(master, 4096), feed("err")))
        )
    for t in readers:
        t.daemon = True
        t.start()
    try:
        while proc.poll() is None:
            if is_canceled():
                _end(proc, posix)
                raise CanceledError(f"canceled: {command_line(argv)}")
            drain(poll)
        deadline = time.monotonic() + 5
        while any(t.is_alive() for t in readers) and time.monotonic() < deadline:
            drain(poll)
        drain(0)
    finally:
        if stdout is not None:
            stdout.close()
        if posix:
            os.close(master)
    for rest in pending.values():
        emit(rest)
    return proc.returncode


def _set_size(fd: int, *, rows: int, columns: int) -> None:
    """Give a pseudo-terminal a window size."""
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _end(proc: subprocess.Popen[bytes], posix: bool) -> None:
    """End a process (its whole session on POSIX: Dask workers too), killing if need be."""
    if posix:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
    else:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        if posix:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            proc.kill()
        proc.wait()
