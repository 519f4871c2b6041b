"""``geoseg synth``: write synthetic Potsdam-like scenes."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import PositiveInt, overwrite_opt

# Mirrors geoseg.synth.MIN_SIZE / MAX_SIZE without importing the library at start-up.
_MIN_SIZE = 64
_MAX_SIZE = 12000


@click.command(short_help="Write synthetic Potsdam-like scenes.")
@click.argument("out", type=click.Path(file_okay=False, dir_okay=True, path_type=Path))
@click.option(
    "--scenes",
    type=PositiveInt(1),
    default=3,
    show_default=True,
    help="Number of scenes (tile ids 2_10, 2_11, ...).",
)
@click.option(
    "--size",
    type=click.IntRange(_MIN_SIZE, _MAX_SIZE),
    default=2000,
    show_default=True,
    help="Scene edge in pixels at 5 cm (Potsdam tiles are 6000).",
)
@click.option(
    "--seed",
    type=PositiveInt(0),
    default=0,
    show_default=True,
    help="Random seed; the same seed writes the same scenes.",
)
@click.option(
    "--row-houses",
    is_flag=True,
    help="Also build terraces of attached houses of different heights (one truth polygon each).",
)
@overwrite_opt
def synth(out: Path, scenes: int, size: int, seed: int, row_houses: bool, overwrite: bool) -> None:
    """Write synthetic scenes in the ISPRS Potsdam layout to the folder OUT.

    Each scene has a 4-band RGB+IR orthophoto, a DSM, colour-coded labels (also with
    eroded boundaries) and, in OUT/truth.gpkg, its true building and road polygons.

    \b
    $ geoseg synth data/synth
    $ geoseg synth data/synth --scenes 6 --size 6000 --seed 1 --overwrite
    $ geoseg synth data/rows --scenes 2 --row-houses
    """
    from geoseg.synth import synthesize

    result = synthesize(
        out, scenes=scenes, size=size, seed=seed, row_houses=row_houses, overwrite=overwrite
    )
    click.echo(
        f"wrote {len(result.scene_ids)} scene(s) {', '.join(result.scene_ids)} "
        f"({size} x {size} px) to {result.root}"
    )
