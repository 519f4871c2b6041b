"""``geoseg qgis-plugin``: the QGIS Processing provider's option spec, and its installation.

The plugin (``geoseg/qgis_plugin/``) runs in QGIS's own Python, where geoseg cannot be
imported; it builds ``geoseg`` command lines from ``geoseg/qgis_plugin/options.json``, the
options of ``predict``, ``vectorize`` and ``run`` as this CLI declares them (flags, defaults,
choices, minimums, help: all from :mod:`geoseg.options` through ``record_option``).
:func:`plugin_spec` writes that file's content; a test keeps the committed file in step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "qgis_plugin"
"""The plugin folder shipped inside the package."""
SPEC_FILE = PLUGIN_DIR / "options.json"

# The options each algorithm exposes: every option field of the command's record (predict,
# vectorize) and, for run, the flags that change what a run does.
_RUN_OPTIONS = ("force", "workers", "scheduler")
_PLAIN = (str, int, float, bool, list, tuple)


def _option_entry(param: click.Option) -> dict[str, Any]:
    """One CLI option as the plugin needs it: name, flag, kind, default, limits, help."""
    from geoseg.cli.options import Fraction, Number, PositiveInt

    flag = max(param.opts, key=len)
    # a computed default (a callable) or none at all (click's UNSET sentinel) is None
    default = param.default if isinstance(param.default, _PLAIN) else None
    entry: dict[str, Any] = {"name": param.name, "flag": flag, "help": param.help or ""}
    kind = "text"
    ptype = param.type
    if param.is_flag:
        kind, default = "bool", default is True
    elif param.multiple:
        kind, default = "multi", list(default) if isinstance(default, list | tuple) else []
    elif isinstance(ptype, click.Choice):
        kind = "choice"
        entry["choices"] = [str(c) for c in ptype.choices]
    elif isinstance(ptype, PositiveInt):
        kind = "int"
        if ptype.minimum > -(2**63):
            entry["minimum"] = ptype.minimum
    elif isinstance(ptype, Fraction):
        kind, entry["minimum"], entry["maximum"] = "float", 0.0, 1.0
    elif isinstance(ptype, Number):
        kind, entry["minimum"] = "float", ptype.minimum
    elif isinstance(ptype, click.Path):
        kind = "file"
    entry["kind"] = kind
    entry["default"] = default
    return entry


def plugin_spec() -> dict[str, Any]:
    """The options of ``predict``, ``vectorize`` and ``run`` for the QGIS plugin (JSON-able)."""
    from geoseg.cli.predict import predict
    from geoseg.cli.run import run
    from geoseg.cli.vectorize import vectorize
    from geoseg.options import PredictOptions, VectorizeOptions, option_fields

    commands: list[tuple[str, click.Command, tuple[str, ...]]] = [
        ("predict", predict, tuple(f.name for f, s, _ in option_fields(PredictOptions) if s.cli)),
        (
            "vectorize",
            vectorize,
            tuple(f.name for f, s, _ in option_fields(VectorizeOptions) if s.cli),
        ),
        ("run", run, _RUN_OPTIONS),
    ]
    spec: dict[str, Any] = {}
    for name, command, wanted in commands:
        params = {p.name: p for p in command.params if isinstance(p, click.Option)}
        spec[name] = [_option_entry(params[n]) for n in wanted if n in params]
    return spec


def spec_text() -> str:
    """:func:`plugin_spec` as the text of ``options.json``."""
    return json.dumps(plugin_spec(), indent=1, sort_keys=True) + "\n"


@click.command("qgis-plugin", short_help="Install geoseg's QGIS Processing provider.")
@click.option(
    "--install",
    "install_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Copy the plugin into this QGIS plugins folder "
    "(e.g. ~/.local/share/QGIS/QGIS3/profiles/default/python/plugins).",
)
@click.option("--spec", is_flag=True, help="Print the plugin's options.json and exit.")
@click.option("--overwrite", is_flag=True, default=False, help="Replace an installed copy.")
def qgis_plugin(install_dir: Path | None, spec: bool, overwrite: bool) -> None:
    """Install the QGIS Processing provider (predict, vectorize, run in the toolbox).

    Without options, prints where the plugin folder is. QGIS runs the installed `geoseg`
    in a subprocess (Settings > Options > Processing > Providers > geoseg: its path).

    \b
    $ geoseg qgis-plugin --install ~/.local/share/QGIS/QGIS3/profiles/default/python/plugins
    $ geoseg qgis-plugin --spec > geoseg/qgis_plugin/options.json
    """
    if spec:
        click.echo(spec_text(), nl=False)
        return
    if install_dir is None:
        click.echo(str(PLUGIN_DIR))
        return
    target = install_dir / "geoseg"
    if target.exists():
        if not overwrite:
            raise click.ClickException(f"{target} already exists; add --overwrite to replace it")
        shutil.rmtree(target)
    install_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PLUGIN_DIR, target, ignore=shutil.ignore_patterns("__pycache__"))
    click.echo(f"{target}: installed; enable 'geoseg' in QGIS (Plugins > Manage and Install)")
