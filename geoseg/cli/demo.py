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
    steps = ", ".join(f"{k} {v:.0f}s" for k, v in report.seconds.items())
    click.echo(f"Demo finished in {sum(report.seconds.values()):.0f}s ({steps}). Outputs:")
    for name, path in report.outputs.items():
        click.echo(f"  {name:<26} {path}")
    if report.table:
        click.echo("")
        click.echo("Test scene, pixels (model never saw it):")
        click.echo(report.table)
    click.echo("")
    for name, value in report.figures.items():
        click.echo(f"  {name:<26} {value:.3f}")
    root = report.root
    click.echo("")
    click.echo("Open in QGIS: drag in the class map (keep its .qml beside it: the legend),")
    click.echo("the probabilities, and the GeoPackage (layers buildings, roads open styled);")
    click.echo(f"the chip footprints are in {root / 'tiles' / 'index.gpkg'}.")
    click.echo("Batch job on the same data: geoseg run pipelines/demo.yaml")
