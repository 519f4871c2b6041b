"""``geoseg evaluate``: pixel metrics of a class raster, or building metrics of polygons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import Fraction, Number, overwrite_opt, record_option
from geoseg.options import EvaluateOptions

# Options that belong to one mode only: name -> (mode, flag).
_RASTER_ONLY = {
    "schema": "--schema",
    "eroded": "--eroded",
    "ignore_class": "--ignore-class",
    "block_size": "--block-size",
    "min_miou": "--min-miou",
}
_VECTOR_ONLY = {
    "layer": "--layer",
    "truth_layer": "--truth-layer",
    "iou": "--iou",
    "confidence_column": "--confidence-column",
    "min_area": "--min-area",
    "min_f1": "--min-f1",
}


def _schema_cb(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    from geoseg.errors import SchemaError
    from geoseg.schema import load_schema

    try:
        return load_schema(value)
    except SchemaError as exc:
        raise click.BadParameter(str(exc)) from None


def _ignore_cb(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> Any:
    schema = ctx.params.get("schema")
    if schema is not None:
        for name in value:
            if name not in schema.classes:
                raise click.BadParameter(
                    f"{name!r} is not a class of schema {schema.name!r}; "
                    f"known: {', '.join(schema.classes)}"
                )
    return value


def _check_mode(ctx: click.Context, vectors: bool) -> None:
    wrong = _RASTER_ONLY if vectors else _VECTOR_ONLY
    for name, flag in wrong.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            mode = "raster mode (without --vectors)" if vectors else "--vectors mode"
            raise click.UsageError(f"{flag} applies to {mode} only", ctx=ctx)


@click.command(short_help="Score a prediction against the truth.")
@click.argument("pred", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--vectors",
    is_flag=True,
    help="Compare polygon layers (building F1) instead of class rasters.",
)
@click.option(
    "--schema",
    default="potsdam",
    show_default=True,
    is_eager=True,
    callback=_schema_cb,
    help="Class schema: a built-in name or a YAML/JSON file.",
)
@record_option(EvaluateOptions, "eroded", metavar="PX")
@record_option(EvaluateOptions, "ignore_class", callback=_ignore_cb)
@record_option(EvaluateOptions, "block_size")
@record_option(EvaluateOptions, "min_miou", metavar="X")
@click.option(
    "--layer", default=None, help="Prediction layer [default: buildings or the only one]."
)
@click.option(
    "--truth-layer", default=None, help="Truth layer [default: buildings or the only one]."
)
@click.option(
    "--iou",
    type=Fraction(max_open=True),
    default=0.5,
    show_default=True,
    help="A building matches when IoU is greater than this.",
)
@click.option(
    "--confidence-column",
    default=None,
    metavar="NAME",
    help="Match predictions in descending order of this column.",
)
@click.option(
    "--min-area",
    type=Number(0.0),
    default=0.0,
    show_default=True,
    metavar="M2",
    help="Drop truth with area < M2 and predictions with area <= M2 (CRS units²).",
)
@click.option(
    "--min-f1",
    type=Fraction(),
    default=None,
    metavar="X",
    help="Exit 1 when building F1 is below X.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the metrics as JSON here.",
)
@overwrite_opt
@click.pass_context
def evaluate(
    ctx: click.Context,
    pred: Path,
    truth: Path,
    *,
    vectors: bool,
    schema: Any,
    eroded: int,
    ignore_class: tuple[str, ...],
    block_size: int,
    min_miou: float | None,
    layer: str | None,
    truth_layer: str | None,
    iou: float,
    confidence_column: str | None,
    min_area: float,
    min_f1: float | None,
    json_path: Path | None,
    overwrite: bool,
) -> None:
    """Score PRED against TRUTH and print the metrics.

    Raster mode: PRED is a class raster, TRUTH class indices or a colour-coded label image
    on the same grid; prints per-class precision, recall, F1 and IoU, OA, mean F1, mIoU.
    With --vectors: PRED and TRUTH are polygon files; prints building precision, recall,
    F1 (SpaceNet rule: greedy matching at IoU > --iou).

    \b
    $ geoseg evaluate pred.tif top_potsdam_2_13_label.tif --eroded 3 --ignore-class clutter
    $ geoseg evaluate pred.tif truth.tif --json metrics.json --min-miou 0.7
    $ geoseg evaluate --vectors pred.gpkg truth.geojson --iou 0.5 --min-f1 0.6
    """
    from geoseg._io import check_output
    from geoseg.evaluate import (
        below_minimum,
        evaluate_rasters,
        evaluate_vectors,
        write_report,
    )

    _check_mode(ctx, vectors)
    if json_path is not None:
        check_output(json_path, overwrite=overwrite, kind="file")
    inputs = {"prediction": str(pred), "truth": str(truth)}
    if vectors:
        obj = evaluate_vectors(
            pred,
            truth,
            layer=layer,
            truth_layer=truth_layer,
            iou_threshold=iou,
            confidence_column=confidence_column,
            min_area=min_area,
        )
        click.echo(obj.format_table())
        report = {"mode": "vectors", **inputs, "iou_threshold": iou, "min_area": min_area}
        report |= obj.to_dict()
        failure = below_minimum("building F1", obj.f1, min_f1)
    else:
        px = evaluate_rasters(
            pred,
            truth,
            schema=schema,
            eroded=eroded,
            ignore_classes=ignore_class,
            block_size=block_size,
        )
        click.echo(px.format_table())
        report = {"mode": "pixels", **inputs, "schema": schema.name, "eroded": eroded}
        report |= px.to_dict()
        failure = below_minimum("mIoU", px.miou, min_miou)
    if json_path is not None:
        write_report(report, json_path, overwrite=overwrite)
    if failure is not None:
        raise click.ClickException(failure)
