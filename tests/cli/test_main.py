from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import geoseg.cli
from geoseg.cli.main import COMMANDS, cli


def test_every_command_module_is_registered() -> None:
    modules = {
        m.name
        for m in pkgutil.iter_modules(geoseg.cli.__path__)
        if m.name not in {"main", "options", "__main__"} and not m.name.startswith("_")
    }
    registered = {target.split(":")[0].rsplit(".", 1)[1] for target in COMMANDS.values()}
    assert modules == registered


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_works(name: str) -> None:
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "$ geoseg" in res.output, "command help carries an example"
    assert isinstance(cli.get_command(click.Context(cli), name), click.Command)


def test_group_help_lists_commands_and_is_light() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from geoseg.cli.main import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(r.output)\n"
        "heavy = [m for m in ('torch', 'dask', 'distributed', 'geopandas') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    for name in COMMANDS:
        assert name in out
    assert "HEAVY []" in out


def test_unknown_command_exits_2() -> None:
    res = CliRunner().invoke(cli, ["nope"])
    assert res.exit_code == 2 and "No such command" in res.output


def test_version() -> None:
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and importlib.import_module("geoseg").__version__ in res.output
