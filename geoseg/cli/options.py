"""Options shared by geoseg commands, with their validation.

Validation lives in ``click.ParamType`` subclasses and callbacks that call ``fail()`` so
that a bad value is a one-line usage error (exit 2) naming the option.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import click

__all__ = [
    "CreationOption",
    "Fraction",
    "Number",
    "PositiveInt",
    "bands_opt",
    "batch_size_opt",
    "check_overlap",
    "check_schema",
    "co_opt",
    "default_workers",
    "device_opt",
    "min_valid_opt",
    "overlap_opt",
    "overwrite_opt",
    "precision_opt",
    "scene_inputs",
    "split_csv",
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


def check_overlap(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Callback: the overlap must be smaller than the tile size (``--size``/``--tile-size``)."""
    size = ctx.params.get("tile_size") or ctx.params.get("size")
    if value is not None and size is not None and value >= size:
        raise click.BadParameter(f"{value} must be smaller than the tile size ({size})")
    return value


def default_workers() -> int:
    """Default worker count: the CPU count, at most 8."""
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
    callback=check_overlap,
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
    default=default_workers,
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


def split_csv(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """Callback: a comma-separated list to a tuple of non-empty names."""
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise click.BadParameter("give at least one comma-separated name")
    return items


_SCENE_PARAMS = (
    "inputs",
    "ids",
    "image",
    "dsm",
    "ndsm",
    "labels",
    "band_names",
    "potsdam_labels",
    "schema",
)


def scene_inputs(f: Any) -> Any:
    """Arguments and options that name scenes; the command receives ``scenes``.

    The values are resolved with :func:`geoseg.scene.resolve_scenes` into a list of
    :class:`~geoseg.scene.SceneSpec`, passed to the command as its ``scenes`` argument.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from geoseg.scene import resolve_scenes

        v = {k: kwargs.pop(k) for k in _SCENE_PARAMS}
        kwargs["scenes"] = resolve_scenes(
            v["inputs"],
            ids=v["ids"],
            image=v["image"],
            dsm=v["dsm"],
            ndsm=v["ndsm"],
            labels=v["labels"],
            band_names=v["band_names"],
            potsdam_labels=None if v["potsdam_labels"] == "none" else v["potsdam_labels"],
            schema=v["schema"],
        )
        return f(*args, **kwargs)

    decorators = [
        click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=str)),
        click.option(
            "--ids",
            callback=split_csv,
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
            callback=split_csv,
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
        wrapper = d(wrapper)
    return wrapper


batch_size_opt = click.option(
    "--batch-size",
    type=PositiveInt(1),
    default=None,
    show_default="32 on cuda, 4 on cpu",
    help="Tiles per model call.",
)
precision_opt = click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default="auto",
    show_default=True,
    help="Model precision; auto is bf16 on cuda, fp32 on cpu.",
)
bands_opt = click.option(
    "--bands",
    callback=split_csv,
    help="Bands to use, in order (default: every scene band but the absolute dsm).",
)
