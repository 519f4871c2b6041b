"""Options shared by geoseg commands, with their validation.

Validation lives in ``click.ParamType`` subclasses and callbacks that call ``fail()`` so
that a bad value is a one-line usage error (exit 2) naming the option.
"""

from __future__ import annotations

import os
from typing import Any

import click

__all__ = [
    "CreationOption",
    "Number",
    "PositiveInt",
    "check_schema",
    "co_opt",
    "device_opt",
    "overlap_opt",
    "overwrite_opt",
    "tile_size_opt",
    "workers_opt",
]


class PositiveInt(click.ParamType):
    """An integer >= ``minimum``."""

    name = "integer"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            v = value
        else:
            try:
                v = int(str(value))
            except ValueError:
                self.fail(f"{value!r} is not an integer", param, ctx)
        if v < self.minimum:
            self.fail(f"{v} must be >= {self.minimum}", param, ctx)
        return v


class Fraction(click.ParamType):
    """A float in [0, 1]."""

    name = "fraction"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not 0.0 <= v <= 1.0:
            self.fail(f"{v} must be between 0 and 1", param, ctx)
        return v


class Number(click.ParamType):
    """A finite float >= ``minimum`` (or > it when ``exclusive``)."""

    name = "number"

    def __init__(self, minimum: float = 0.0, *, exclusive: bool = False) -> None:
        self.minimum = minimum
        self.exclusive = exclusive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        ok = v > self.minimum if self.exclusive else v >= self.minimum
        if not ok or v == float("inf"):
            op = ">" if self.exclusive else ">="
            self.fail(f"{v} must be a finite number {op} {self.minimum:g}", param, ctx)
        return v


def check_schema(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Callback: ``value`` must name a built-in schema or a valid schema file."""
    from geoseg.errors import SchemaError
    from geoseg.schema import load_schema

    try:
        load_schema(value)
    except SchemaError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


class CreationOption(click.ParamType):
    """A GDAL creation option ``KEY=VAL``."""

    name = "KEY=VAL"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        key, sep, val = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r} is not of the form KEY=VAL (e.g. COMPRESS=DEFLATE)", param, ctx)
        return key.strip().upper(), val.strip()


def _check_overlap(ctx: click.Context, param: click.Parameter, value: int) -> int:
    size = ctx.params.get("tile_size") or ctx.params.get("size")
    if size is not None and value >= size:
        raise click.BadParameter(f"{value} must be smaller than the tile size ({size})")
    return value


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


overwrite_opt = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace existing outputs."
)
tile_size_opt = click.option(
    "--size",
    "--tile-size",
    "size",
    type=PositiveInt(16),
    default=512,
    show_default=True,
    is_eager=True,
    help="Tile edge in pixels.",
)
overlap_opt = click.option(
    "--overlap",
    type=PositiveInt(0),
    default=64,
    show_default=True,
    callback=_check_overlap,
    help="Pixels shared by neighbouring tiles.",
)
device_opt = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Compute device; auto picks cuda when available.",
)
workers_opt = click.option(
    "--workers",
    type=PositiveInt(1),
    default=_default_workers,
    show_default="min(8, CPU count)",
    help="Parallel worker processes or threads.",
)
co_opt = click.option(
    "--co",
    "creation_options",
    type=CreationOption(),
    multiple=True,
    help="GDAL creation option KEY=VAL for raster outputs (repeatable).",
)
min_valid_opt = click.option(
    "--min-valid",
    type=Fraction(),
    default=0.5,
    show_default=True,
    help="Skip chips whose valid fraction is below this.",
)


def _split_csv(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise click.BadParameter("give at least one comma-separated name")
    return items


def scene_inputs(f: Any) -> Any:
    """Options and arguments that name scenes (see :func:`geoseg.scene.resolve_scenes`)."""
    decorators = [
        click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=str)),
        click.option(
            "--ids",
            callback=_split_csv,
            help="Potsdam tile ids to take from a Potsdam folder (e.g. 2_10,2_11).",
        ),
        click.option(
            "--image", type=click.Path(exists=True, dir_okay=False), help="Image GeoTIFF."
        ),
        click.option(
            "--dsm", type=click.Path(exists=True, dir_okay=False), help="DSM aligned to --image."
        ),
        click.option(
            "--ndsm", type=click.Path(exists=True, dir_okay=False), help="nDSM file (else derived)."
        ),
        click.option(
            "--labels",
            type=click.Path(exists=True, dir_okay=False),
            help="Label raster for --image (RGB colour codes or class indices).",
        ),
        click.option(
            "--band-names",
            callback=_split_csv,
            help="Names of the image bands in file order (e.g. red,green,blue,nir,dsm).",
        ),
        click.option(
            "--potsdam-labels",
            type=click.Choice(["all", "noBoundary", "none"]),
            default="all",
            show_default=True,
            help="Which Potsdam label folder to read.",
        ),
        click.option(
            "--schema",
            default="potsdam",
            show_default=True,
            help="Class schema: a built-in name or a YAML/JSON file.",
        ),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def resolve_scene_options(
    inputs: tuple[str, ...],
    ids: tuple[str, ...] | None,
    image: str | None,
    dsm: str | None,
    ndsm: str | None,
    labels: str | None,
    band_names: tuple[str, ...] | None,
    potsdam_labels: str,
    schema: str,
) -> list[Any]:
    """Turn :func:`scene_inputs` values into scene specs."""
    from geoseg.scene import resolve_scenes

    return resolve_scenes(
        inputs,
        ids=ids,
        image=image,
        dsm=dsm,
        ndsm=ndsm,
        labels=labels,
        band_names=band_names,
        potsdam_labels=None if potsdam_labels == "none" else potsdam_labels,
        schema=schema,
    )


bands_opt = click.option(
    "--bands",
    callback=_split_csv,
    help="Bands to use, in order (default: every scene band but the absolute dsm).",
)
