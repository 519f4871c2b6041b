"""``geoseg demo``: the whole pipeline on a built-in synthetic scene."""

from __future__ import annotations

import click

from geoseg.cli.options import overwrite_opt


@click.command(short_help="Run the whole pipeline on synthetic scenes.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default="geoseg-demo",
    show_default=True,
    help="Folder for every demo output.",
)
@overwrite_opt
def demo(output: str, overwrite: bool) -> None:
    """Synthesise scenes and run the pipeline on them, on the CPU, in a few minutes.

    Prints where each output is and how to open it in QGIS.

    \b
    $ geoseg demo
    $ geoseg demo -o /tmp/geoseg-demo --overwrite
    """
    from geoseg.demo import run_demo

    report = run_demo(output, overwrite=overwrite, step=lambda s: click.echo(f"-> {s}"))
    click.echo("")
    click.echo(f"Demo finished in {sum(report.seconds.values()):.0f}s. Outputs:")
    for name, path in report.outputs.items():
        click.echo(f"  {name:<22} {path}")
    for name, value in report.figures.items():
        click.echo(f"  {name:<22} {value:.3f}")
