"""``geoseg models``: list the model architectures and their sizes."""

from __future__ import annotations

import json

import click

from geoseg.cli.options import PositiveInt


@click.command(short_help="List model architectures.")
@click.argument("names", nargs=-1)
@click.option(
    "--in-channels",
    type=PositiveInt(1),
    default=5,
    show_default=True,
    help="Input bands to size the first convolution for.",
)
@click.option(
    "--num-classes",
    type=PositiveInt(1),
    default=6,
    show_default=True,
    help="Classes to size the heads for.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(names: tuple[str, ...], in_channels: int, num_classes: int, as_json: bool) -> None:
    """List the model architectures (all, or NAMES) with their parameter counts.

    Each model is built once, untrained, with its default arguments; nothing is downloaded.
    The names are those that geoseg.models.build_model() takes.

    \b
    $ geoseg models
    $ geoseg models unet fcn_resnet18 --in-channels 4 --num-classes 6
    $ geoseg models --json
    """
    from geoseg.models import summarize_models

    rows = summarize_models(
        in_channels=in_channels, num_classes=num_classes, names=list(names) or None
    )
    if as_json:
        data = [
            {
                "name": r.name,
                "family": r.family,
                "parameters": r.parameters,
                "description": r.description,
                "defaults": dict(r.defaults),
            }
            for r in rows
        ]
        click.echo(json.dumps(data, indent=2))
        return
    header = ("name", "family", "parameters", "description")
    table = [header] + [(r.name, r.family, f"{r.parameters:,}", r.description) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    click.echo(f"parameters for {in_channels} input bands and {num_classes} classes")
    for i, (name, family, params, desc) in enumerate(table):
        click.echo(
            f"{name:<{widths[0]}}  {family:<{widths[1]}}  {params:>{widths[2]}}  {desc}".rstrip()
        )
        if i == 0:
            click.echo("  ".join("-" * w for w in widths) + "  " + "-" * len(desc))
