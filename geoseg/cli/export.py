"""``geoseg export``: a checkpoint to ONNX for QGIS Deepness and other runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import check_overlap, overwrite_opt, record_option, record_values
from geoseg.options import ExportOptions


@click.command(short_help="Export a checkpoint to ONNX (QGIS Deepness).")
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX model to write (.onnx); its JSON card is written beside it (.json).",
)
@record_option(ExportOptions, "tile_size", is_eager=True)
@record_option(ExportOptions, "overlap", callback=check_overlap)
@record_option(ExportOptions, "input_scale", metavar="S")
@record_option(ExportOptions, "extra_outputs")
@overwrite_opt
def export(model: Path, output: Path, **params: Any) -> None:
    """Export the checkpoint MODEL to an ONNX model with its normalisation inside.

    The graph takes x = band value / S (S = --input-scale: 255, what QGIS Deepness feeds
    for uint8 imagery; 1 for raw band values) and returns class probabilities. It carries
    Deepness's metadata (model type, class names, resolution, tile size, overlap); a JSON
    card beside it lists the bands in order, their range, the GSD and the classes.

    \b
    $ geoseg export model.pt -o model.onnx
    $ geoseg export model.pt -o model_raw.onnx --input-scale 1
    $ geoseg export model.pt -o model.onnx --tile-size 256 --overlap 32 --overwrite
    """
    from geoseg.export import export_onnx

    options = ExportOptions(**record_values(ExportOptions, params))
    report = export_onnx(model, output, options=options)
    click.echo(
        f"{report.onnx}: {', '.join(report.outputs)}; tile {report.tile_size} px, overlap "
        f"{report.tiles_overlap}%; onnxruntime vs torch max abs diff {report.max_abs_diff:.2g}; "
        f"card {report.card} ({report.seconds:.1f} s)"
    )
