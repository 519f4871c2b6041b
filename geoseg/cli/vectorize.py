"""``geoseg vectorize``: a class raster to building and road polygons for GIS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import check_schema, overwrite_opt, record_option, record_values
from geoseg.options import VectorizeOptions


@click.command(short_help="Class raster to building/road polygons (GeoPackage).")
@click.argument("classes_tif", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output GeoPackage (or a directory with --format parquet).",
)
@record_option(VectorizeOptions, "classes")
@record_option(
    VectorizeOptions,
    "probabilities",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@record_option(VectorizeOptions, "min_area")
@record_option(VectorizeOptions, "min_building_area")
@record_option(VectorizeOptions, "hole_area")
@record_option(VectorizeOptions, "simplify")
@record_option(VectorizeOptions, "regularize")
@record_option(
    VectorizeOptions, "dsm", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@record_option(
    VectorizeOptions, "contact", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@record_option(VectorizeOptions, "height_step", metavar="M")
@record_option(VectorizeOptions, "contact_threshold", metavar="P")
@record_option(VectorizeOptions, "centerlines")
@record_option(VectorizeOptions, "spur_length")
@record_option(VectorizeOptions, "format")
@record_option(VectorizeOptions, "block_size")
@record_option(VectorizeOptions, "workers")
@record_option(VectorizeOptions, "schema", callback=check_schema)
@overwrite_opt
def vectorize(
    classes_tif: Path,
    output: Path,
    **params: Any,
) -> None:
    """Vectorize a class raster into GIS layers: buildings, roads, road centre-lines.

    The raster is processed block by block and polygons are joined exactly across block
    borders. The GeoPackage carries QGIS styles in the class colours.

    \b
    $ geoseg vectorize classes.tif -o city.gpkg
    $ geoseg vectorize classes.tif -o city.gpkg --min-area 4 --simplify 0.25 --regularize
    $ geoseg vectorize classes.tif -o city.gpkg --dsm dsm.tif --regularize
    $ geoseg vectorize classes.tif -o city.gpkg --contact city_contact.tif
    $ geoseg vectorize classes.tif -o city.gpkg --classes road --centerlines
    $ geoseg vectorize classes.tif -o city_parquet --format parquet --probabilities probs.tif
    """
    from geoseg.vectorize import vectorize_raster

    options = VectorizeOptions(**record_values(VectorizeOptions, params))
    from tqdm import tqdm

    with tqdm(desc="blocks", unit="block", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        report = vectorize_raster(classes_tif, output, options=options, progress=progress)
    layers = ", ".join(f"{k}: {v}" for k, v in report.layers.items())
    click.echo(f"{report.output}: {layers} ({report.seconds:.1f} s)")
