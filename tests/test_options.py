"""The option records of geoseg.options: one declaration, read by the CLI and job files."""

from __future__ import annotations

from dataclasses import MISSING

import click
import pytest

from geoseg.cli.main import cli
from geoseg.errors import ConfigError
from geoseg.options import (
    EvaluateOptions,
    ExportOptions,
    PredictOptions,
    TileOptions,
    VectorizeOptions,
    check_overlap,
    choices_of,
    default_overlap,
    option_fields,
)

# command -> (record, CLI params that are not options of the record)
COMMANDS = {
    "tile": (
        TileOptions,
        {"output", "workers", "overwrite"},
    ),
    "predict": (PredictOptions, {"model", "outdir", "scheduler", "clip"}),
    "vectorize": (VectorizeOptions, {"classes_tif", "output"}),
    "export": (ExportOptions, {"model", "output"}),
    "bench predict": (PredictOptions, {"size", "model", "cache", "seconds"}),
    "bench vectorize": (VectorizeOptions, {"size", "seed", "cache"}),
    "evaluate": (
        EvaluateOptions,
        {
            "pred",
            "truth",
            "vectors",
            "roads",
            "schema",
            "layer",
            "truth_layer",
            "iou",
            "confidence_column",
            "min_area",
            "min_f1",
            "min_apls",
            "json_path",
            "overwrite",
        },
    ),
}
SCENE_PARAMS = {
    "inputs",
    "ids",
    "image",
    "dsm",
    "ndsm",
    "labels",
    "band_names",
    "potsdam_labels",
    "schema",
    "mosaic",  # which inputs form one scene: scene selection, like the inputs themselves
}


def _default(f):
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def _cli_default(p: click.Parameter):
    d = p.default() if callable(p.default) else p.default
    if isinstance(d, str) and p.callback is not None and "," in d:
        return tuple(d.split(","))
    if isinstance(d, list):
        return tuple(d)
    return d


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_cli_options_are_the_records(name):
    record, others = COMMANDS[name]
    cmd: click.Command | None = cli
    for part in name.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(click.Context(cmd), part)
    assert cmd is not None
    params = {p.name: p for p in cmd.params if p.name != "help"}
    specs = {f.name: (f, spec, tp) for f, spec, tp in option_fields(record)}
    for pname in params:
        if pname in others or pname in SCENE_PARAMS:
            continue
        assert pname in specs, f"{name}: --{pname} is not declared in {record.__name__}"
    for fname, (f, spec, tp) in specs.items():
        if not spec.cli:
            continue
        if fname not in params:
            # a command has every option of its record, but benchmarks only those they vary
            assert name.startswith("bench") or fname in {"overwrite", "workers"}, (
                f"{name}: {fname} missing on the CLI"
            )
            continue
        p = params[fname]
        assert isinstance(p, click.Option)
        flags = spec.flags or ("--" + fname.replace("_", "-"),)
        # the declared spelling first; a benchmark may drop an alias it uses otherwise
        assert p.opts[0] == flags[0] and set(p.opts) <= set(flags), (name, fname, p.opts)
        if not name.startswith("bench"):
            assert tuple(p.opts) == flags, (name, fname)
        default = _default(f)
        cli_default = _cli_default(p)
        if isinstance(default, tuple) and cli_default is None:
            cli_default = ()
        # bench predict makes its own checkpoint: its tile size is the bench's (512)
        if (name, fname) != ("bench predict", "tile_size"):
            assert cli_default == default, (name, fname, cli_default, default)
        choices = choices_of(tp)
        if choices is not None:
            assert isinstance(p.type, click.Choice)
            assert tuple(p.type.choices) == choices, (name, fname)
        if spec.minimum is not None and hasattr(p.type, "minimum"):
            assert p.type.minimum == spec.minimum, (name, fname)
        assert p.help == spec.help


def test_bad_values_name_the_option():
    with pytest.raises(ConfigError, match="device='gpu': use one of auto, cpu, cuda"):
        PredictOptions(device="gpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="block_size=8: must be >= 16"):
        PredictOptions(block_size=8)
    with pytest.raises(ConfigError, match="min_valid=1.5: must be <= 1"):
        TileOptions(min_valid=1.5)
    with pytest.raises(ConfigError, match="vectorize: min_area=nan"):
        VectorizeOptions(min_area=float("nan"))
    with pytest.raises(ConfigError, match="min_miou=2"):
        EvaluateOptions(min_miou=2.0)


def test_one_overlap_rule():
    assert default_overlap(512) == 128
    assert TileOptions(size=256).chip_overlap == 64
    assert TileOptions(size=256, overlap=0).chip_overlap == 0
    check_overlap(64, 63)
    for tile, overlap in ((64, 64), (64, 100), (64, -1)):
        with pytest.raises(ConfigError):
            check_overlap(tile, overlap)
    with pytest.raises(ConfigError, match="smaller than the tile size"):
        TileOptions(size=64, overlap=64)
    with pytest.raises(ConfigError, match="smaller than the tile size"):
        PredictOptions(tile_size=64, overlap=64)


def test_cli_overlap_rule(tmp_path):
    from click.testing import CliRunner

    r = CliRunner().invoke(cli, ["tile", str(tmp_path), "--size", "64", "--overlap", "64"])
    assert r.exit_code == 2
    assert "must be smaller than the tile size (64)" in r.output


def test_a_pattern_option_takes_the_texts_its_pattern_matches():
    from dataclasses import dataclass

    from geoseg.options import DEVICE_PATTERN, DEVICE_VALUES, check_device, option, validate_record

    @dataclass(frozen=True)
    class Record:
        device: str = option("auto", "Device.", pattern=DEVICE_PATTERN, values=DEVICE_VALUES)
        code: str = option("ab", "Code.", pattern=r"^[a-z]+$")

    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        validate_record(Record(device=good))
        assert check_device(good) == good
    for bad in ("gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:0\n", ""):
        with pytest.raises(ConfigError, match=r"^device='.*': use one of auto, cpu, cuda, cuda:N$"):
            validate_record(Record(device=bad))
        with pytest.raises(ConfigError, match=r"^gpu: device=.*cuda:N$"):
            check_device(bad, what="gpu: device")
    with pytest.raises(ConfigError, match=r"^device=3: use one of"):
        validate_record(Record(device=3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^code='A1': must match \^\[a-z\]\+\$$"):
        validate_record(Record(code="A1"))


def test_the_device_option_takes_a_gpu_index():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:7"):
        assert PredictOptions(device=device).device == device
    for bad in ("gpu", "cuda:x", "cuda:-1", "cuda:", "tpu:0"):
        with pytest.raises(ConfigError, match=r"device=.*: use one of auto, cpu, cuda, cuda:N$"):
            PredictOptions(device=bad)
    from geoseg.train import TrainConfig  # training takes the same devices

    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(ConfigError, match=r"device='gpu': use one of auto, cpu, cuda, cuda:N$"):
        TrainConfig(device="gpu")


def test_compile_and_mixed_devices_are_off_unless_asked():
    opts = PredictOptions()
    assert opts.compile is False and opts.allow_mixed_devices is False
    assert PredictOptions(compile=True, allow_mixed_devices=True).compile is True


@pytest.mark.parametrize(
    "name", ["predict", "train", "bench predict", "bench train", "bench quality"]
)
def test_every_device_flag_takes_a_gpu_index_and_refuses_others_in_one_line(name):
    from click.testing import CliRunner

    cmd: click.Command | None = cli
    for part in name.split():
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(click.Context(cmd), part)
    assert cmd is not None
    (device,) = [p for p in cmd.params if p.name == "device"]
    ctx = click.Context(cmd)
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert device.type_cast_value(ctx, good) == good
    help_text = CliRunner().invoke(cli, [*name.split(), "--help"], terminal_width=200).output
    assert "--device [auto|cpu|cuda|cuda:N]" in help_text
    for bad in ("cuda:x", "gpu"):
        r = CliRunner().invoke(cli, [*name.split(), "--device", bad])
        assert r.exit_code == 2, r.output
        assert r.output.splitlines()[-1] == (
            f"Error: Invalid value for '--device': '{bad}' is not one of auto, cpu, cuda, cuda:N"
        )


def test_predict_help_and_the_job_schema_show_compile_and_mixed_devices():
    from click.testing import CliRunner

    from geoseg.pipeline import job_json_schema

    r = CliRunner().invoke(cli, ["predict", "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "--compile " in r.output and "torch.compile the model" in r.output
    assert "--allow-mixed-devices" in r.output and "mix CPU and GPU workers" in r.output
    props = job_json_schema()["$defs"]["PredictSection"]["properties"]
    assert props["compile"]["type"] == "boolean" and props["compile"]["default"] is False
    assert props["allow_mixed_devices"]["default"] is False
    assert props["device"]["pattern"] == "^(auto|cpu|cuda(:[0-9]+)?)$"


def test_a_job_step_takes_a_gpu_index_and_names_a_bad_device_in_one_line():
    from pydantic import ValidationError

    from geoseg.pipeline._sections import PredictSection

    section = PredictSection.model_validate({"device": "cuda:1", "compile": True})
    opts = section.record(PredictOptions, workers=1, overwrite=False)
    assert opts.device == "cuda:1" and opts.compile is True
    for bad, said in (("gpu", "text 'gpu'"), (1, "int 1"), (None, "an empty value")):
        with pytest.raises(ValidationError) as err:
            PredictSection.model_validate({"device": bad})
        (problem,) = err.value.errors()
        assert problem["loc"] == ("device",)
        assert problem["msg"] == f"{said} is not one of auto, cpu, cuda, cuda:N"
