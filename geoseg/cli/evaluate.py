"""``geoseg evaluate``: pixel metrics, building metrics of polygons, road metrics of lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from geoseg.cli.options import Fraction, Number, overwrite_opt, record_option
from geoseg.options import EvaluateOptions

# Options that belong to some modes only: name -> (flag, modes).
_PIXELS, _VECTORS, _ROADS = "pixels", "vectors", "roads"
_MODE_ONLY = {
    "schema": ("--schema", {_PIXELS}),
    "eroded": ("--eroded", {_PIXELS}),
    "ignore_class": ("--ignore-class", {_PIXELS}),
    "block_size": ("--block-size", {_PIXELS}),
    "min_miou": ("--min-miou", {_PIXELS}),
    "layer": ("--layer", {_VECTORS, _ROADS}),
    "truth_layer": ("--truth-layer", {_VECTORS, _ROADS}),
    "iou": ("--iou", {_VECTORS}),
    "confidence_column": ("--confidence-column", {_VECTORS}),
    "min_area": ("--min-area", {_VECTORS}),
    "min_f1": ("--min-f1", {_VECTORS}),
    "road_buffer": ("--buffer", {_ROADS}),
    "road_snap": ("--snap", {_ROADS}),
    "road_spacing": ("--control-spacing", {_ROADS}),
    "road_max_pairs": ("--max-pairs", {_ROADS}),
    "min_apls": ("--min-apls", {_ROADS}),
}
_MODE_NAMES = {
    _PIXELS: "raster mode (without --vectors or --roads)",
    _VECTORS: "--vectors mode",
    _ROADS: "--roads mode",
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


def _check_mode(ctx: click.Context, vectors: bool, roads: bool) -> str:
    """The mode of the command; a UsageError for an option of another mode."""
    if vectors and roads:
        raise click.UsageError("--vectors and --roads are different modes: pass one", ctx=ctx)
    mode = _ROADS if roads else _VECTORS if vectors else _PIXELS
    for name, (flag, modes) in _MODE_ONLY.items():
        if mode in modes:
            continue
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            where = " or ".join(_MODE_NAMES[m] for m in sorted(modes))
            raise click.UsageError(f"{flag} applies to {where} only", ctx=ctx)
    return mode


@click.command(short_help="Score a prediction against the truth.")
@click.argument("pred", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--vectors",
    is_flag=True,
    help="Compare polygon layers (building F1) instead of class rasters.",
)
@click.option(
    "--roads",
    is_flag=True,
    help="Compare road centre-lines (APLS, length precision/recall) instead of class rasters.",
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
    "--layer",
    default=None,
    help="Prediction layer [default: buildings / road_centerlines or the only one].",
)
@click.option(
    "--truth-layer",
    default=None,
    help="Truth layer [default: buildings / road_centerlines or the only one].",
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
@record_option(EvaluateOptions, "road_buffer", metavar="M")
@record_option(EvaluateOptions, "road_snap", metavar="M")
@record_option(EvaluateOptions, "road_spacing", metavar="M")
@record_option(EvaluateOptions, "road_max_pairs", metavar="N")
@click.option(
    "--min-apls",
    type=Fraction(),
    default=None,
    metavar="X",
    help="Exit 1 when APLS is below X.",
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
    roads: bool,
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
    road_buffer: float,
    road_snap: float,
    road_spacing: float,
    road_max_pairs: int,
    min_apls: float | None,
    json_path: Path | None,
    overwrite: bool,
) -> None:
    """Score PRED against TRUTH and print the metrics.

    Raster mode: PRED is a class raster, TRUTH class indices or a colour-coded label image
    on the same grid; prints per-class precision, recall, F1 and IoU, OA, mean F1, mIoU.
    With --vectors: PRED and TRUTH are polygon files; prints building precision, recall,
    F1 (SpaceNet rule: greedy matching at IoU > --iou).
    With --roads: PRED and TRUTH are centre-line files (e.g. the road_centerlines layer of
    geoseg vectorize --centerlines); prints APLS (SpaceNet: control points every
    --control-spacing m snapped within --snap m, both directions) and the length precision,
    recall and F1 of the lines within --buffer m of each other.

    \b
    $ geoseg evaluate pred.tif top_potsdam_2_13_label.tif --eroded 3 --ignore-class clutter
    $ geoseg evaluate pred.tif truth.tif --json metrics.json --min-miou 0.7
    $ geoseg evaluate --vectors pred.gpkg truth.geojson --iou 0.5 --min-f1 0.6
    $ geoseg evaluate --roads city.gpkg roads_truth.geojson --json roads.json --min-apls 0.6
    """
    from geoseg._io import check_output
    from geoseg.evaluate import (
        below_minimum,
        evaluate_rasters,
        evaluate_roads,
        evaluate_vectors,
        write_report,
    )

    mode = _check_mode(ctx, vectors, roads)
    if json_path is not None:
        check_output(json_path, overwrite=overwrite, kind="file")
    metrics: Any
    if mode == _ROADS:
        metrics = evaluate_roads(
            pred,
            truth,
            layer=layer,
            truth_layer=truth_layer,
            buffer=road_buffer,
            snap=road_snap,
            spacing=road_spacing,
            max_pairs=road_max_pairs,
        )
        params: dict[str, Any] = {}
        gate: tuple[str, float, float | None] = ("APLS", metrics.apls, min_apls)
    elif mode == _VECTORS:
        metrics = evaluate_vectors(
            pred,
            truth,
            layer=layer,
            truth_layer=truth_layer,
            iou_threshold=iou,
            confidence_column=confidence_column,
            min_area=min_area,
        )
        params = {"iou_threshold": iou, "min_area": min_area}
        gate = ("building F1", metrics.f1, min_f1)
    else:
        metrics = evaluate_rasters(
            pred,
            truth,
            schema=schema,
            eroded=eroded,
            ignore_classes=ignore_class,
            block_size=block_size,
        )
        params = {"schema": schema.name, "eroded": eroded}
        gate = ("mIoU", metrics.miou, min_miou)
    click.echo(metrics.format_table())
    report = {"mode": mode, "prediction": str(pred), "truth": str(truth), **params}
    report |= metrics.to_dict()
    failure = below_minimum(*gate)
    if json_path is not None:
        write_report(report, json_path, overwrite=overwrite)
    if failure is not None:
        raise click.ClickException(failure)
