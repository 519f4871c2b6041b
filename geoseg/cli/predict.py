"""``geoseg predict``: whole-scene land-cover maps as Cloud-Optimized GeoTIFFs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from geoseg.cli.options import (
    check_overlap,
    check_scheduler,
    overwrite_opt,
    record_option,
    record_values,
    scene_inputs,
)
from geoseg.options import PredictOptions

if TYPE_CHECKING:
    from geoseg.raster import SceneSpec


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
@record_option(PredictOptions, "tile_size", is_eager=True)
@record_option(PredictOptions, "overlap", callback=check_overlap)
@record_option(PredictOptions, "batch_size")
@record_option(PredictOptions, "device")
@record_option(PredictOptions, "precision")
@record_option(PredictOptions, "compile")
@record_option(PredictOptions, "tta")
@record_option(PredictOptions, "probabilities")
@record_option(PredictOptions, "blend")
@record_option(PredictOptions, "block_size")
@click.option(
    "--scheduler",
    metavar="ADDR",
    default=None,
    callback=check_scheduler,
    help="Dask scheduler address (tcp://host:port); default: local threads.",
)
@record_option(PredictOptions, "workers")
@record_option(PredictOptions, "allow_mixed_devices")
@record_option(PredictOptions, "creation_options")
@click.option(
    "--clip",
    is_flag=True,
    help="With --mosaic (or a VRT of files): also cut the map into one map per file, "
    "OUTDIR/{file}_classes.tif.",
)
@overwrite_opt
def predict(
    scenes: list[SceneSpec],
    model: str,
    outdir: str,
    scheduler: str | None,
    clip: bool,
    **params: Any,
) -> None:
    """Predict class maps for whole scenes, seamlessly blended, as COGs.

    INPUTS are Potsdam-layout folders (all tiles, or --ids) or image GeoTIFFs; --image with
    --dsm adds one scene from explicit files; --mosaic NAME takes them all as one seamless
    scene (a VRT mosaic: no seam at the file borders). Bands are mapped by name onto the
    bands the checkpoint was trained on. Each scene gives OUTDIR/{scene}_classes.tif (uint8,
    nodata 255, colour table, class names in the .aux.xml sidecar, overviews), optionally
    {scene}_probs.tif, and {scene}.json (options, model hash, timings). An interrupted run
    resumes where it stopped when run again with the same options.

    \b
    $ geoseg predict data/potsdam --ids 2_13,2_14 -m runs/unet/best.pt -o maps/
    $ geoseg predict --image top.tif --dsm dsm.tif -m best.pt -o maps/ --probabilities
    $ geoseg predict scenes/*.tif -m best.pt -o maps/ --scheduler tcp://10.0.0.5:8786
    $ geoseg predict data/potsdam --mosaic potsdam -m best.pt -o maps/
    """
    from tqdm import tqdm

    from geoseg.predict import predict_scenes

    opts = PredictOptions(**record_values(PredictOptions, params))
    if clip:
        from geoseg.raster.mosaic import clip_classes, clip_paths

        for spec in scenes:  # before any work: a mosaic of files, clips not in the way
            if not clip_paths(spec.image, outdir, overwrite=opts.overwrite):
                raise click.UsageError(
                    f"--clip: scene {spec.id!r} is not a mosaic of files; use --mosaic NAME"
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
        extras = "".join(f"; {name}: {p}" for name, p in r.extras.items())
        click.echo(
            f"{r.classes}: {r.megapixels:.1f} Mpx, {r.blocks} block(s){resumed}, "
            f"{r.tiles_computed}/{r.tiles} tiles run, {r.seconds:.1f}s{extras}"
        )
    for spec, r in zip(scenes, reports, strict=True) if clip else ():
        clips = clip_classes(r.classes, spec.image, outdir, overwrite=opts.overwrite)
        click.echo(f"{r.classes}: clipped to {len(clips)} file(s) in {outdir}")
