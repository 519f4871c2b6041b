"""``geoseg tile``: cut scenes into georeferenced training chips with an index."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg.cli.options import (
    bands_opt,
    min_valid_opt,
    overlap_opt,
    overwrite_opt,
    record_option,
    scene_inputs,
    tile_size_opt,
    workers_opt,
)
from geoseg.options import TileOptions

if TYPE_CHECKING:
    from geoseg.raster import SceneSpec


@click.command(short_help="Cut scenes into training chips.")
@scene_inputs
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    default="tiles/default",
    show_default=True,
    help="Tile store folder.",
)
@tile_size_opt
@overlap_opt
@min_valid_opt
@bands_opt
@record_option(TileOptions, "compress")
@record_option(TileOptions, "footprints", type=click.Path(dir_okay=False))
@record_option(TileOptions, "footprints_layer")
@record_option(TileOptions, "contact_width")
@workers_opt
@overwrite_opt
def tile(
    scenes: list[SceneSpec],
    output: str,
    size: int,
    overlap: int | None,
    min_valid: float,
    bands: tuple[str, ...] | None,
    compress: Any,
    footprints: str | None,
    footprints_layer: str | None,
    contact_width: float,
    workers: int,
    overwrite: bool,
) -> None:
    """Cut scenes into georeferenced GeoTIFF chips and write an index (index.gpkg).

    INPUTS are Potsdam-layout folders (all tiles, or --ids) or image GeoTIFFs; --image with
    --dsm/--labels adds one scene from explicit files. The last chip of each row and column
    is shifted back inside the scene, so every pixel is covered without padding (a scene
    smaller than --size gives one padded chip, kept when at least --min-valid of it is
    the scene; a chip over 1 GiB is refused). Re-running with the same options resumes:
    complete chips are skipped.

    With --footprints (building polygons: GeoPackage, GeoJSON, GeoParquet; reprojected to
    each scene's CRS) every chip also gets a `contact` target: 1 where a pixel lies within
    --contact-width metres of two or more different buildings (shared walls, narrow gaps),
    which `geoseg train` learns as an extra output.

    Exits 1, leaving nothing behind, when no chip is valid (all nodata, an all-NaN DSM,
    every chip below --min-valid); scenes without a valid chip among others are named in
    a warning.

    \b
    $ geoseg tile data/potsdam --ids 2_10,2_11 -o tiles/potsdam --size 512 --overlap 64
    $ geoseg tile --image top.tif --dsm dsm.tif --labels label.tif -o tiles/mine
    $ geoseg tile RGB.byte.tif --size 256 --overlap 32 --min-valid 0.2 -o tiles/landsat
    $ geoseg tile data/potsdam --ids 2_10 --footprints buildings.gpkg -o tiles/contact
    """
    from tqdm import tqdm

    from geoseg.tiles import tile_scenes

    if footprints is None and footprints_layer is not None:
        raise click.UsageError("--footprints-layer needs --footprints")
    opts = TileOptions(
        size=size,
        overlap=overlap,
        min_valid=min_valid,
        bands=bands,
        compress=compress,
        footprints=None if footprints is None else Path(footprints),
        footprints_layer=footprints_layer,
        contact_width=contact_width,
    )
    with tqdm(desc="chips", unit="chip", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)

        report = tile_scenes(
            scenes, output, options=opts, workers=workers, overwrite=overwrite, progress=progress
        )
    click.echo(
        f"{report.root}: {report.chips} chips in the index ({report.written} written, "
        f"{report.skipped_existing} already complete, {report.skipped_invalid} below "
        f"--min-valid) in {report.seconds:.1f}s; index: {report.root / 'index.gpkg'}"
    )
