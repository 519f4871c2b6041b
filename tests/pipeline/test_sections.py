"""Step sections are generated from geoseg.options: a job step is its command's record."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from geoseg.options import EvaluateOptions, PredictOptions, VectorizeOptions
from geoseg.pipeline._problems import problems_of
from geoseg.pipeline._sections import EvaluateSection, PredictSection, Section, VectorizeSection


def _problems(section: type[Section], data: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        section.model_validate(data)
    return problems_of(info.value, section)


def test_empty_sections_are_the_records_defaults() -> None:
    predict = PredictSection.model_validate({}).record(PredictOptions, workers=1, overwrite=True)
    assert predict == PredictOptions(workers=1, overwrite=True)
    assert predict.overlap is None  # a quarter of the tile size, as on the command line
    assert VectorizeSection.model_validate(None).record(VectorizeOptions) == VectorizeOptions()
    assert EvaluateSection.model_validate({}).record(EvaluateOptions) == EvaluateOptions()


def test_dashes_and_aliases_name_the_same_key_and_both_is_a_problem() -> None:
    assert PredictSection.model_validate({"size": 256}).tile_size == 256
    assert PredictSection.model_validate({"tile-size": 256}).tile_size == 256
    assert PredictSection.model_validate({"block-size": 512}).block_size == 512
    problems = _problems(PredictSection, {"tile_size": 256, "size": 512})
    assert problems == ["size: given together with tile_size; keep one"]
    problems = _problems(PredictSection, {"tile-size": 256, "tile_size": 512})
    assert problems == ["tile-size: given together with tile_size; keep one"]


@pytest.mark.parametrize(
    ("section", "data", "expected"),
    [
        (PredictSection, {"probabilities": "yes"}, "expected true or false, got text 'yes'"),
        (PredictSection, {"batch_size": 1.5}, "expected an integer, got float 1.5"),
        (PredictSection, {"tile_size": "512"}, "expected an integer, got text '512'"),
        (PredictSection, {"block_size": 8}, "8 must be >= 16"),
        (
            PredictSection,
            {"tta": "flips"},
            "text 'flips' is not one of none, flip, d4; did you mean 'flip'?",
        ),
        (VectorizeSection, {"min_area": True}, "expected a number, got a boolean (true)"),
        (VectorizeSection, {"simplify": float("inf")}, "inf must be a finite number"),
        (VectorizeSection, {"classes": []}, "give at least one name"),
        (VectorizeSection, {"classes": "a,b,a"}, "a given more than once"),
        (EvaluateSection, {"min_miou": -0.5}, "-0.5 must be between 0 and 1"),
        (EvaluateSection, {"eroded": None}, "expected an integer, got an empty value"),
    ],
)
def test_values_are_strict_and_refusals_say_what_is_allowed(
    section: type[Section], data: dict[str, Any], expected: str
) -> None:
    (problem,) = _problems(section, data)
    key = next(iter(data))
    assert problem == f"{key.replace('-', '_')}: {expected}"


def test_numbers_take_integers_and_names_take_comma_separated_text() -> None:
    v = VectorizeSection.model_validate({"min_area": 2, "classes": "building, road"})
    assert v.min_area == 2.0 and isinstance(v.min_area, float)
    assert v.classes == ("building", "road")


def test_creation_options_are_a_mapping_or_key_value_texts() -> None:
    p = PredictSection.model_validate({"co": {"compress": "DEFLATE", "BIGTIFF": True}})
    assert p.record(PredictOptions).creation_options == (
        ("COMPRESS", "DEFLATE"),
        ("BIGTIFF", "YES"),
    )
    assert PredictSection.model_validate({"co": ["ZLEVEL=9"]}).co == (("ZLEVEL", "9"),)
    (problem,) = _problems(PredictSection, {"co": ["ZLEVEL"]})
    assert problem.startswith("co: 'ZLEVEL' is not of the form KEY=VAL")
