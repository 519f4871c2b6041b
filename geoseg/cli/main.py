"""The ``geoseg`` command group.

Commands are registered here, by module path, and imported only when invoked, so that
``geoseg --help`` starts without importing torch or dask. Library errors
(:class:`geoseg.errors.GeosegError`) are mapped to one-line messages and exit code 1 here,
at the boundary, and nowhere else.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
from pathlib import Path
from typing import Any

import click

from geoseg import __version__

# OpenMP threads that spin while waiting steal the CPU from each other and from other processes
# on small machines (a 5-6x slowdown of training measured on 2 cores); let them sleep. This must
# happen before torch is imported, which commands do lazily. A value the user sets wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# name -> "module:attribute"; the single place where commands are registered.
COMMANDS: dict[str, str] = {
    "synth": "geoseg.cli.synth:synth",
    "tile": "geoseg.cli.tile:tile",
    "demo": "geoseg.cli.demo:demo",
    "evaluate": "geoseg.cli.evaluate:evaluate",
    "export": "geoseg.cli.export:export",
    "models": "geoseg.cli.models:models",
    "train": "geoseg.cli.train:train",
    "vectorize": "geoseg.cli.vectorize:vectorize",
    "predict": "geoseg.cli.predict:predict",
    "bench": "geoseg.cli.bench:bench",
    "run": "geoseg.cli.run:run",
    "qgis-plugin": "geoseg.cli.qgis_plugin:qgis_plugin",
}


class _GeosegGroup(click.Group):
    """A group that imports command modules lazily and maps library errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        cmd = getattr(importlib.import_module(module), attr)
        if not isinstance(cmd, click.Command):
            raise TypeError(f"{target} is not a click command")
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        from geoseg.errors import GeosegError

        try:
            return super().invoke(ctx)
        except GeosegError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            message = device_full_message(exc)
            if message is None:
                raise  # any other OSError is a bug: its traceback helps
            raise click.ClickException(message) from None


# errno values of a write that failed for want of room (or of a failing device)
_DEVICE_FULL = {errno.ENOSPC: "no space left on device", errno.EIO: "an I/O error on the device"}
if hasattr(errno, "EDQUOT"):
    _DEVICE_FULL[errno.EDQUOT] = "the disk quota is exceeded"


def device_full_message(exc: OSError) -> str | None:
    """One line for a write that failed because the device is full; None for other errors.

    The file is named by its final name (not its temporary one); what was finished stays,
    since every output is renamed into place only when complete.
    """
    what = _DEVICE_FULL.get(exc.errno or 0)
    if what is None:
        return None
    fix = "free space and run again (finished work is kept)"
    name = exc.filename if isinstance(exc.filename, str | bytes | os.PathLike) else None
    if name is None:
        return f"{what} while writing the outputs; {fix}"
    path = Path(os.fsdecode(name))
    from geoseg._io import TEMP_NAME

    m = TEMP_NAME.match(path.name)
    if m is not None:
        path = path.with_name(m["stem"] + (m["suffix"] or ""))
    return f"{path}: {what} while writing it; {fix}"


@click.group(cls=_GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output (repeatable).")
def cli(verbose: int, quiet: int) -> None:
    """Turn large aerial and satellite scenes into GIS-ready land-cover maps.

    \b
    $ geoseg demo
    $ geoseg synth data/synth --scenes 3 --size 2000
    $ geoseg tile --potsdam data/synth --ids 1_1,1_2 -o tiles/synth
    """
    level = logging.WARNING - 10 * verbose + 10 * quiet
    level = max(logging.DEBUG, min(logging.CRITICAL, level))
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # Dask's own chatter (worker start/stop, INFO) only at -vv. distributed sets its loggers'
    # levels from its config when imported (later, by a command): configure that too.
    if verbose < 2:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(level if verbose >= 2 else max(level, logging.WARNING))
    # GDAL's own diagnostics (rasterio._env: "TIFFReadEncodedTile() failed" ...) repeat what
    # geoseg's one-line error says: only at -vv.
    logging.getLogger("rasterio").setLevel(level if verbose >= 2 else max(level, logging.ERROR))
