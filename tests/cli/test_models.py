from __future__ import annotations

import json

from click.testing import CliRunner

from geoseg.cli.main import COMMANDS, cli
from geoseg.models import MODELS, build_model, count_parameters


def test_registered_and_help() -> None:
    assert COMMANDS["models"] == "geoseg.cli.models:models"
    result = CliRunner().invoke(cli, ["models", "--help"])
    assert result.exit_code == 0, result.output
    assert "$ geoseg models" in result.output


def test_table_lists_every_model_with_its_size() -> None:
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "parameters for 5 input bands and 6 classes"
    assert lines[1].split() == ["name", "family", "parameters", "description"]
    rows = {line.split()[0]: line.split() for line in lines[3:]}
    assert list(rows) == list(MODELS)
    for name, info in MODELS.items():
        assert rows[name][1] == info.family
        assert info.description in lines[3 + list(MODELS).index(name)]
    expected = count_parameters(build_model("fcn_resnet18", in_channels=5, num_classes=6))
    assert rows["fcn_resnet18"][2] == f"{expected:,}"


def test_json_with_names_and_sizes() -> None:
    result = CliRunner().invoke(
        cli, ["models", "segnet", "unet", "--in-channels", "4", "--num-classes", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["name"] for d in data] == ["segnet", "unet"]
    assert data[1]["defaults"] == {"encoder": "resnet34"}
    for d in data:
        model = build_model(d["name"], in_channels=4, num_classes=3)
        assert d["parameters"] == count_parameters(model)


def test_unknown_name_is_a_one_line_error() -> None:
    result = CliRunner().invoke(cli, ["models", "fcn"])
    assert result.exit_code == 1
    assert "unknown model 'fcn'; known models: fcn_resnet18" in result.output
    assert "Traceback" not in result.output


def test_bad_option_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["models", "--num-classes", "0"])
    assert result.exit_code == 2
    assert "--num-classes" in result.output
