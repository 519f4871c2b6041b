"""``geoseg predict``: whole-scene land-cover maps as Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from geoseg.cli.options import (
    PositiveInt,
    batch_size_opt,
    check_overlap,
    co_opt,
    device_opt,
    overwrite_opt,
    precision_opt,
    scene_inputs,
    workers_opt,
)

if TYPE_CHECKING:
    from geoseg.scene import SceneSpec


@click.command(short_help="Predict land-cover maps for whole scenes.")
@scene_inputs
@click.option(
    "-m",
    "--model",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Checkpoint (.pt) written by `geoseg train`.",
)
@click.option(
    "-o",
    "--output",
    "outdir",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder: {scene}_classes.tif (+ .aux.xml), {scene}_probs.tif, {scene}.json.",
)
@click.option(
    "--tile-size",
    "--size",
    "size",
    type=PositiveInt(16),
    default=None,
    is_eager=True,
    show_default="the checkpoint's",
    help="Tile edge in pixels.",
)
@click.option(
    "--overlap",
    type=PositiveInt(0),
    default=None,
    show_default="a quarter of the tile size (128 for 512)",
    callback=check_overlap,
    help="Pixels shared by neighbouring tiles (blended).",
)
@batch_size_opt
@device_opt
@precision_opt
@click.option(
    "--tta",
    type=click.Choice(["none", "flip", "d4"]),
    default="none",
    show_default=True,
    help="Test-time augmentation: 4 flips or 8 dihedral transforms, averaged.",
)
@click.option("--probabilities", is_flag=True, help="Also write per-class probabilities (uint8).")
@click.option(
    "--blend",
    type=click.Choice(["hann", "spline", "mean"]),
    default="hann",
    show_default=True,
    help="Weight window for blending overlapping tiles.",
)
@click.option(
    "--block-size",
    type=PositiveInt(64),
    default=2048,
    show_default=True,
    help="Output block edge; bounds memory, never changes the result.",
)
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    help="Dask scheduler address (tcp://host:port); default: local threads.",
)
@workers_opt
@co_opt
@overwrite_opt
def predict(
    scenes: list[SceneSpec],
    model: str,
    outdir: str,
    size: int | None,
    overlap: int | None,
    batch_size: int | None,
    device: str,
    precision: str,
    tta: str,
    probabilities: bool,
    blend: str,
    block_size: int,
    scheduler: str | None,
    workers: int,
    creation_options: tuple[tuple[str, str], ...],
    overwrite: bool,
) -> None:
    """Predict class maps for whole scenes, seamlessly blended, as COGs.

    INPUTS are Potsdam-layout folders (all tiles, or --ids) or image GeoTIFFs; --image with
    --dsm adds one scene from explicit files. Bands are mapped by name onto the bands the
    checkpoint was trained on. Each scene gives OUTDIR/{scene}_classes.tif (uint8, nodata
    255, colour table, class names in the .aux.xml sidecar, overviews), optionally
    {scene}_probs.tif, and {scene}.json (options, model hash, timings). An interrupted run
    resumes where it stopped when run again with the same options.

    \b
    $ geoseg predict data/potsdam --ids 2_13,2_14 -m runs/unet/best.pt -o maps/
    $ geoseg predict --image top.tif --dsm dsm.tif -m best.pt -o maps/ --probabilities
    $ geoseg predict scenes/*.tif -m best.pt -o maps/ --scheduler tcp://10.0.0.5:8786
    """
    from tqdm import tqdm

    from geoseg.predict import PredictOptions, predict_scenes

    opts = PredictOptions(
        tile_size=size,
        overlap=overlap,
        batch_size=batch_size,
        device=device,  # type: ignore[arg-type]
        precision=precision,  # type: ignore[arg-type]
        tta=tta,  # type: ignore[arg-type]
        probabilities=probabilities,
        blend=blend,  # type: ignore[arg-type]
        block_size=block_size,
        workers=workers,
        overwrite=overwrite,
        creation_options=tuple(creation_options),
    )
    with tqdm(desc="blocks", unit="block", disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        reports = predict_scenes(
            scenes, model, outdir, options=opts, client=scheduler, progress=progress
        )
    for r in reports:
        resumed = f", {r.blocks_resumed} resumed" if r.blocks_resumed else ""
        click.echo(
            f"{r.classes}: {r.megapixels:.1f} Mpx, {r.blocks} block(s){resumed}, "
            f"{r.tiles_computed}/{r.tiles} tiles run, {r.seconds:.1f}s"
        )
