"""Options shared by geoseg commands, with their validation.

Validation lives in ``click.ParamType`` subclasses and callbacks that call ``fail()`` so
that a bad value is a one-line usage error (exit 2) naming the option.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import click

__all__ = [
    "CreationOption",
    "Fraction",
    "Number",
    "Pattern",
    "PositiveInt",
    "RasterInput",
    "bands_opt",
    "batch_size_opt",
    "check_overlap",
    "check_scheduler",
    "check_schema",
    "co_opt",
    "device_opt",
    "device_type",
    "min_valid_opt",
    "overlap_opt",
    "overwrite_opt",
    "precision_opt",
    "record_option",
    "record_values",
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


class RasterInput(click.ParamType):
    """An existing local file (or folder when ``dir_okay``), or a remote raster/STAC URL.

    ``http(s)://``, ``s3://``, ``gs://`` and GDAL ``/vsi...`` paths are passed through as
    given (GDAL reads them); anything else must exist locally.
    """

    name = "path"

    def __init__(self, *, dir_okay: bool = True) -> None:
        self._local = click.Path(exists=True, dir_okay=dir_okay, path_type=str)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from geoseg.raster.remote import is_remote

        if isinstance(value, str) and is_remote(value):
            return value
        return str(self._local.convert(value, param, ctx))


class Fraction(click.ParamType):
    """A float in [0, 1] (or [0, 1) when ``max_open``); NaN is refused."""

    name = "fraction"

    def __init__(self, *, max_open: bool = False) -> None:
        self.max_open = max_open

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        ok = 0.0 <= v < 1.0 if self.max_open else 0.0 <= v <= 1.0
        if not ok:
            self.fail(
                f"{v} must be between 0 and 1{' (1 excluded)' if self.max_open else ''}", param, ctx
            )
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


class Pattern(click.ParamType):
    """Text that matches a regular expression, such as a device (``cuda:1``).

    ``--help`` shows ``values``, the forms the text takes (``[auto|cpu|cuda|cuda:N]``).
    """

    name = "text"

    def __init__(self, pattern: str, values: tuple[str, ...] = ()) -> None:
        self.pattern = pattern
        self.values = values

    def get_metavar(  # ctx: click >= 8.2 passes it, 8.1 does not
        self, param: click.Parameter, ctx: click.Context | None = None
    ) -> str | None:
        return f"[{'|'.join(self.values)}]" if self.values else None

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str) and re.fullmatch(self.pattern, value):
            return value
        forms = ", ".join(self.values) if self.values else f"text matching {self.pattern}"
        self.fail(f"{value!r} is not one of {forms}", param, ctx)


def device_type() -> Pattern:
    """The type of a ``--device`` option: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    from geoseg.options import DEVICE_PATTERN, DEVICE_VALUES

    return Pattern(DEVICE_PATTERN, DEVICE_VALUES)


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
    """Callback: the one overlap rule of :func:`geoseg.options.check_overlap`.

    The tile size is ``--size``/``--tile-size``, which must be an eager option.
    """
    from geoseg.errors import ConfigError
    from geoseg.options import check_overlap as rule

    size = ctx.params.get("tile_size") or ctx.params.get("size")
    if value is not None and size is not None:
        try:
            rule(size, value)
        except ConfigError:
            raise click.BadParameter(
                f"{value} must be smaller than the tile size ({size})"
            ) from None
    return value


overwrite_opt = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace existing outputs."
)


def _shared(record_name: str, name: str, **overrides: Any) -> Any:
    import geoseg.options as options

    return record_option(getattr(options, record_name), name, **overrides)


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
    "mosaic",
)


def scene_inputs(f: Any) -> Any:
    """Arguments and options that name scenes; the command receives ``scenes``.

    The values are resolved with :func:`geoseg.raster.resolve_scenes` into a list of
    :class:`~geoseg.raster.SceneSpec`, passed to the command as its ``scenes`` argument.
    """

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from geoseg.raster import resolve_scenes

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
            mosaic=v["mosaic"],
        )
        return f(*args, **kwargs)

    decorators = [
        click.argument("inputs", nargs=-1, type=RasterInput()),
        click.option(
            "--ids",
            callback=split_csv,
            help="Potsdam tile ids to take from a Potsdam folder (e.g. 2_10,2_11).",
        ),
        click.option(
            "--image",
            type=RasterInput(dir_okay=False),
            help="Image GeoTIFF, remote COG URL or STAC item (JSON file or URL).",
        ),
        click.option("--dsm", type=RasterInput(dir_okay=False), help="DSM aligned to --image."),
        click.option("--ndsm", type=RasterInput(dir_okay=False), help="nDSM file (else derived)."),
        click.option(
            "--labels",
            type=RasterInput(dir_okay=False),
            help="Label raster for --image (RGB colour codes or class indices).",
        ),
        click.option(
            "--band-names",
            callback=split_csv,
            help="Names of the image bands in file order (e.g. red,green,blue,nir,dsm); for "
            "a STAC item, the band assets to take.",
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
            callback=check_schema,
            help="Class schema: a built-in name or a YAML/JSON file.",
        ),
        click.option(
            "--mosaic",
            metavar="NAME",
            default=None,
            help="Take all inputs (files, folders of GeoTIFFs, Potsdam folders, VRTs) as ONE "
            "scene NAME: a VRT mosaic on their common pixel grid, seamless across file borders.",
        ),
    ]
    for d in reversed(decorators):
        wrapper = d(wrapper)
    return wrapper


# -- options built from the records of geoseg.options ---------------------------------------


def _csv_names(
    ctx: click.Context, param: click.Parameter, value: str | tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """Callback: a comma-separated list to a tuple of distinct non-empty names."""
    if value is None or isinstance(value, tuple):
        return value
    items = split_csv(ctx, param, value)
    if items is not None and len(set(items)) != len(items):
        raise click.BadParameter(f"{value!r} repeats a name")
    return items


def record_option(record: type, name: str, **overrides: Any) -> Any:
    """A ``click.option`` for the option field ``name`` of a :mod:`geoseg.options` record.

    The flag spellings, default, choices (or pattern), minimum and help come from the
    record's declaration; ``overrides`` are passed to ``click.option`` (e.g. ``callback``,
    ``is_eager``); ``flags`` may drop an alias that the command uses otherwise.
    """
    import typing
    from dataclasses import MISSING

    from geoseg.options import choices_of, option_fields, strip_optional

    found = [(f, s, t) for f, s, t in option_fields(record) if f.name == name]
    if not found:
        raise KeyError(f"{record.__name__} has no option {name!r}")
    f, spec, tp = found[0]
    flags = overrides.pop("flags", None) or spec.flags or ("--" + name.replace("_", "-"),)
    kw: dict[str, Any] = {"help": spec.help}
    default: Any = f.default_factory if f.default_factory is not MISSING else f.default
    choices = choices_of(tp)
    inner = strip_optional(tp)[0]
    base = typing.get_origin(inner) or inner
    if base is bool:
        kw.update(is_flag=True, default=bool(default))
    elif spec.pattern is not None:
        kw.update(type=Pattern(spec.pattern, spec.values), default=default, show_default=True)
    elif choices is not None:
        kw.update(type=click.Choice(choices), default=default, show_default=True)
    elif base is int:
        minimum = int(spec.minimum) if spec.minimum is not None else -(2**63)
        kw.update(type=PositiveInt(minimum), default=default, show_default=True)
    elif base is float:
        if spec.minimum == 0.0 and spec.maximum == 1.0:
            kw.update(type=Fraction(), default=default, show_default=True)
        else:
            kw.update(type=Number(spec.minimum or 0.0), default=default, show_default=True)
    elif name == "creation_options":
        kw.update(type=CreationOption(), multiple=True, default=default)
    elif spec.repeat:
        kw.update(multiple=True, default=default, metavar="NAME")
    elif base is tuple:
        kw.update(
            default=",".join(default) if default else None,
            show_default=bool(default),
            callback=_csv_names,
        )
    else:
        kw.update(default=default, show_default=default is not None)
    if spec.show_default is not None:
        kw["show_default"] = spec.show_default
    if default is None and "show_default" in kw and spec.show_default is None:
        kw["show_default"] = False
    kw.update(overrides)
    return click.option(*flags, name, **kw)


def record_values(record: type, params: dict[str, Any]) -> dict[str, Any]:
    """Pop the option fields of ``record`` out of a command's ``params``."""
    from geoseg.options import option_fields

    return {f.name: params.pop(f.name) for f, _, _ in option_fields(record) if f.name in params}


# The options several commands share, built from their one declaration in geoseg.options.
tile_size_opt = _shared("TileOptions", "size", is_eager=True)
overlap_opt = _shared("TileOptions", "overlap", callback=check_overlap)
min_valid_opt = _shared("TileOptions", "min_valid")
bands_opt = _shared("TileOptions", "bands")
device_opt = _shared("PredictOptions", "device")
workers_opt = _shared("PredictOptions", "workers")
co_opt = _shared("PredictOptions", "creation_options")
batch_size_opt = _shared("PredictOptions", "batch_size")
precision_opt = _shared("PredictOptions", "precision")


def check_scheduler(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Callback: a Dask scheduler address ``tcp://HOST:PORT`` (checked before any work)."""
    from geoseg._dask import SCHEDULER_RE

    if value is not None and not SCHEDULER_RE.match(value):
        raise click.BadParameter(
            f"{value!r} is not a scheduler address; use tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786)"
        )
    return value
