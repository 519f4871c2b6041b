"""The JSON Schema of a job file: the records' keys, defaults, choices and bounds."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import pytest

from geoseg.options import (
    EvaluateOptions,
    PredictOptions,
    VectorizeOptions,
    choices_of,
    option_fields,
)
from geoseg.pipeline import JobFile, job_json_schema
from geoseg.pipeline._sections import job_context
from geoseg.pipeline._yaml import read_job_yaml

REPO = Path(__file__).resolve().parents[2]

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": int | float,
    "boolean": bool,
    "null": type(None),
}


def _conforms(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> bool:
    """A small JSON Schema check (the keywords job_json_schema uses)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        return _conforms(
            value, {**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs
        )
    for key in ("anyOf", "oneOf"):
        if key in schema and not any(_conforms(value, s, defs) for s in schema[key]):
            return False
    if "const" in schema and value != schema["const"]:
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        return False
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        is_bool = isinstance(value, bool)
        if not any(isinstance(value, _TYPES[t]) and (t == "boolean" or not is_bool) for t in types):
            return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            return False
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return False
        if "items" in schema and not all(_conforms(v, schema["items"], defs) for v in value):
            return False
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        if any(k not in value for k in schema.get("required", [])):
            return False
        for k, v in value.items():
            if k in props:
                if not _conforms(v, props[k], defs):
                    return False
            elif schema.get("additionalProperties", True) is False:
                return False
    return True


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize(
    ("section", "record", "extra"),
    [
        ("PredictSection", PredictOptions, set()),
        ("VectorizeSection", VectorizeOptions, {"probabilities"}),
        ("EvaluateSection", EvaluateOptions, {"buildings", "roads"}),
    ],
)
def test_the_step_sections_have_the_records_keys_defaults_choices_and_bounds(
    section: str, record: type, extra: set[str]
) -> None:
    schema = job_json_schema()
    props = schema["$defs"][section]["properties"]
    job = [(f, spec, tp) for f, spec, tp in option_fields(record) if spec.job]
    assert set(props) == {spec.key or f.name for f, spec, _ in job} | extra
    for f, spec, tp in job:
        prop = props[spec.key or f.name]
        if f.default is not MISSING:
            assert prop["default"] == _jsonable(f.default), f.name
        text = json.dumps(prop)
        allowed = choices_of(tp)
        if allowed is not None:
            assert prop["enum"] == list(allowed), f.name
        if spec.pattern is not None:
            assert prop["pattern"] == spec.pattern, f.name
        if spec.minimum is not None:
            assert f'"minimum": {spec.minimum}' in text, f.name
        if spec.maximum is not None:
            assert f'"maximum": {spec.maximum}' in text, f.name
        assert prop["description"].startswith(spec.help), f.name


def test_predict_overlap_defaults_to_a_quarter_of_the_tile_like_the_command_line() -> None:
    props = job_json_schema()["$defs"]["PredictSection"]["properties"]
    assert props["overlap"]["default"] is None
    assert "a quarter of the tile size" in props["overlap"]["description"]
    assert props["co"]["anyOf"][0]["type"] == "object"


@pytest.mark.parametrize("name", ["demo.yaml", "potsdam.yaml"])
def test_the_shipped_job_files_validate_against_the_schema(name: str) -> None:
    path = REPO / "pipelines" / name
    data, _, _ = read_job_yaml(path)  # YAML 1.2: the tile ids stay text
    schema = job_json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert _conforms(data, schema, schema["$defs"])
    JobFile.model_validate(data, context=job_context(path.parent, check_files=False))
    bad = {**data, "steps": {**data["steps"], "predict": {"device": "gpu"}}}
    assert not _conforms(bad, schema, schema["$defs"])
    good = {**data, "steps": {**data["steps"], "predict": {"device": "cuda:1"}}}
    assert _conforms(good, schema, schema["$defs"])
    bad = {**data, "steps": {**data["steps"], "evaluate": {"min_miou": 2}}}
    assert not _conforms(bad, schema, schema["$defs"])
    assert not _conforms({**data, "colour": "red"}, schema, schema["$defs"])
