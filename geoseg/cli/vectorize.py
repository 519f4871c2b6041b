"""``geoseg vectorize``: a class raster to building and road polygons for GIS."""

from __future__ import annotations

from pathlib import Path

import click

from geoseg.cli.options import (
    Number,
    PositiveInt,
    check_schema,
    overwrite_opt,
    split_csv,
    workers_opt,
)


def _classes_cb(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = split_csv(ctx, param, value) or ()
    if len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r} repeats a class")
    return names


@click.command(short_help="Class raster to building/road polygons (GeoPackage).")
@click.argument("classes_tif", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output GeoPackage (or a directory with --format parquet).",
)
@click.option(
    "--classes",
    default="building,road",
    show_default=True,
    callback=_classes_cb,
    help="Comma-separated: building, road (the schema's road class) or class names.",
)
@click.option(
    "--probabilities",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="uint8 probability raster on the same grid; adds mean_prob.",
)
@click.option(
    "--min-area",
    type=Number(0.0),
    default=0.0,
    show_default=True,
    help="Drop polygons under this many m².",
)
@click.option(
    "--hole-area",
    type=Number(0.0),
    default=0.0,
    show_default=True,
    help="Fill holes under this many m².",
)
@click.option(
    "--simplify",
    type=Number(0.0),
    default=0.0,
    show_default=True,
    help="Simplification tolerance in m; shared borders stay shared.",
)
@click.option("--regularize", is_flag=True, help="Rectilinear building outlines.")
@click.option("--centerlines", is_flag=True, help="Add a road_centerlines layer.")
@click.option(
    "--spur-length",
    type=Number(0.0),
    default=None,
    help="Prune centre-line dead ends shorter than this (m); default 40 pixels.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["gpkg", "parquet"]),
    default="gpkg",
    show_default=True,
    help="GeoPackage, or a directory of GeoParquet files (one per layer).",
)
@click.option(
    "--block-size",
    type=PositiveInt(16),
    default=2048,
    show_default=True,
    help="Block edge in pixels (results do not depend on it).",
)
@workers_opt
@click.option(
    "--schema",
    default="potsdam",
    show_default=True,
    callback=check_schema,
    help="Class schema if the raster has no GEOSEG_SCHEMA tag (name or YAML/JSON file).",
)
@overwrite_opt
def vectorize(
    classes_tif: Path,
    output: Path,
    classes: tuple[str, ...],
    probabilities: Path | None,
    min_area: float,
    hole_area: float,
    simplify: float,
    regularize: bool,
    centerlines: bool,
    spur_length: float | None,
    fmt: str,
    block_size: int,
    workers: int,
    schema: str,
    overwrite: bool,
) -> None:
    """Vectorize a class raster into GIS layers: buildings, roads, road centre-lines.

    The raster is processed block by block and polygons are joined exactly across block
    borders. The GeoPackage carries QGIS styles in the class colours.

    \b
    $ geoseg vectorize classes.tif -o city.gpkg
    $ geoseg vectorize classes.tif -o city.gpkg --min-area 4 --simplify 0.25 --regularize
    $ geoseg vectorize classes.tif -o city.gpkg --classes road --centerlines
    $ geoseg vectorize classes.tif -o city_parquet --format parquet --probabilities probs.tif
    """
    from geoseg.vectorize import VectorizeOptions, vectorize_raster

    options = VectorizeOptions(
        classes=classes,
        probabilities=probabilities,
        min_area=min_area,
        hole_area=hole_area,
        simplify=simplify,
        regularize=regularize,
        centerlines=centerlines,
        spur_length=spur_length,
        format="parquet" if fmt == "parquet" else "gpkg",
        block_size=block_size,
        workers=workers,
        schema=schema,
        overwrite=overwrite,
    )
    from tqdm import tqdm

    with tqdm(desc="blocks", unit="block", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = vectorize_raster(classes_tif, output, options=options, progress=progress)
    layers = ", ".join(f"{k}: {v}" for k, v in report.layers.items())
    click.echo(f"{report.output}: {layers} ({report.seconds:.1f} s)")
