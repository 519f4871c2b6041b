"""``geoseg synth``: write synthetic Potsdam-like scenes."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import PositiveInt, overwrite_opt

# Mirrors geoseg.synth.MIN_SIZE / MAX_SIZE without importing the library at start-up.
_MIN_SIZE = 64
_MAX_SIZE = 12000
# Mirror geoseg.synth._style.STYLES and geoseg.synth._degrade.MAX_DEGRADE likewise.
_STYLES = 3
_MAX_DEGRADE = 2.0


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
@click.option(
    "--style",
    type=click.IntRange(0, _STYLES - 1),
    default=0,
    show_default=True,
    help="Appearance family: 0 Potsdam-like; 1 ochre/slate roofs, dry grass, dark trees; "
    "2 dark roofs, lush grass, light trees. Labels, DSM and truth do not change.",
)
@click.option(
    "--degrade",
    type=click.FloatRange(0.0, _MAX_DEGRADE),
    default=0.0,
    show_default=True,
    metavar="STRENGTH",
    help="Degrade the images (blur, haze, colour shift, sensor noise), seeded; labels, DSM "
    "and truth stay those of the clean scenes. 0 = off.",
)
@overwrite_opt
def synth(
    out: Path,
    scenes: int,
    size: int,
    seed: int,
    row_houses: bool,
    style: int,
    degrade: float,
    overwrite: bool,
) -> None:
    """Write synthetic scenes in the ISPRS Potsdam layout to the folder OUT.

    Each scene has a 4-band RGB+IR orthophoto, a DSM, colour-coded labels (also with
    eroded boundaries) and, in OUT/truth.gpkg, its true building and road polygons.

    \b
    $ geoseg synth data/synth
    $ geoseg synth data/synth --scenes 6 --size 6000 --seed 1 --overwrite
    $ geoseg synth data/rows --scenes 2 --row-houses
    $ geoseg synth data/hazy --seed 1 --degrade 1      # the scenes of seed 1, degraded
    $ geoseg synth data/other --seed 1 --style 1       # the same scenes, other colours
    """
    from geoseg.synth import synthesize

    result = synthesize(
        out,
        scenes=scenes,
        size=size,
        seed=seed,
        row_houses=row_houses,
        style=style,
        degrade=degrade,
        overwrite=overwrite,
    )
    click.echo(
        f"wrote {len(result.scene_ids)} scene(s) {', '.join(result.scene_ids)} "
        f"({size} x {size} px) to {result.root}"
    )
