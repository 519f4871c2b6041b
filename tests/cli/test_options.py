from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from geoseg.cli.options import (
    CreationOption,
    Fraction,
    PositiveInt,
    co_opt,
    overlap_opt,
    tile_size_opt,
)


@pytest.mark.parametrize(
    ("ptype", "good", "expected"),
    [
        (PositiveInt(1), "3", 3),
        (PositiveInt(0), 0, 0),
        (Fraction(), "0.25", 0.25),
        (CreationOption(), "compress=deflate", ("COMPRESS", "deflate")),
    ],
)
def test_param_types_accept(ptype: click.ParamType, good: object, expected: object) -> None:
    assert ptype.convert(good, None, None) == expected


@pytest.mark.parametrize(
    ("ptype", "bad", "needle"),
    [
        (PositiveInt(1), "0", ">= 1"),
        (PositiveInt(1), "x", "not an integer"),
        (Fraction(), "2", "between 0 and 1"),
        (Fraction(), "a", "not a number"),
        (CreationOption(), "COMPRESS", "KEY=VAL"),
    ],
)
def test_param_types_reject(ptype: click.ParamType, bad: object, needle: str) -> None:
    with pytest.raises(click.BadParameter, match=needle):
        ptype.convert(bad, None, None)


def test_overlap_must_be_smaller_than_tile() -> None:
    @click.command()
    @tile_size_opt
    @overlap_opt
    @co_opt
    def cmd(size: int, overlap: int, creation_options: tuple) -> None:
        click.echo(f"{size} {overlap} {dict(creation_options)}")

    r = CliRunner().invoke(cmd, ["--size", "64", "--overlap", "8", "--co", "BLOCKSIZE=256"])
    assert r.exit_code == 0 and r.output.strip() == "64 8 {'BLOCKSIZE': '256'}"
    r = CliRunner().invoke(cmd, ["--size", "64", "--overlap", "64"])
    assert r.exit_code == 2 and "smaller than the tile size" in r.output


def test_number_and_schema_checks(tmp_path: object) -> None:
    from geoseg.cli.options import Number, check_schema

    assert Number(0.0).convert("0", None, None) == 0.0
    with pytest.raises(click.BadParameter, match="> 0"):
        Number(0.0, exclusive=True).convert("0", None, None)
    with pytest.raises(click.BadParameter, match="finite"):
        Number(0.0).convert("inf", None, None)
    with pytest.raises(click.BadParameter, match="not a number"):
        Number(0.0).convert("x", None, None)
    ctx = click.Context(click.Command("x"))
    assert check_schema(ctx, click.Option(["--schema"]), "potsdam") == "potsdam"
    with pytest.raises(click.BadParameter, match="built-in name"):
        check_schema(ctx, click.Option(["--schema"]), "nope")
