from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from geoseg.errors import SchemaError
from geoseg.schema import IGNORE, POTSDAM, ClassSchema, load_schema


def test_potsdam_legend_order_and_colours() -> None:
    assert POTSDAM.classes == (
        "impervious_surfaces",
        "building",
        "low_vegetation",
        "tree",
        "car",
        "clutter",
    )
    assert POTSDAM.colours[1] == (0, 0, 255) and POTSDAM.colours[5] == (255, 0, 0)
    assert POTSDAM.road_class == "impervious_surfaces"
    assert POTSDAM.colormap()[IGNORE] == (0, 0, 0, 0)


def test_encode_decode_roundtrip_and_unknown_colours() -> None:
    idx = np.random.default_rng(0).integers(0, 6, (40, 50)).astype(np.uint8)
    rgb = POTSDAM.encode(idx)
    back, unknown = POTSDAM.decode(rgb)
    np.testing.assert_array_equal(back, idx)
    assert unknown == 0
    rgb[:, 0, :] = (12, 34, 56)[0]  # a grey not in the legend
    rgb[:, 1, :7] = 0  # black boundary pixels
    back, unknown = POTSDAM.decode(rgb)
    assert unknown == 50 + 7 and (back[0] == IGNORE).all() and (back[1, :7] == IGNORE).all()


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_custom_schema_files(tmp_path: Path, suffix: str) -> None:
    data = {
        "name": "roads",
        "classes": [
            {"name": "background", "colour": [0, 0, 0]},
            {"name": "road", "colour": [255, 128, 0]},
        ],
    }
    p = tmp_path / f"s{suffix}"
    p.write_text(json.dumps(data))  # JSON is valid YAML too
    s = load_schema(p)
    assert s.classes == ("background", "road") and s.road_class == "road"
    assert ClassSchema.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.yaml",
            "classes: [\n  {name: a, colour: [1, 2, 3]}\n  {name: b, colour: [3, 2, 1]}\n",
            "bad.yaml: not valid YAML at line 3, column 3: expected ',' or ']', but got '{'; "
            "fix the file",
        ),
        (
            "bad.json",
            '{"classes": [1, 2}',
            "bad.json: not valid JSON at line 1, column 18: Expecting ',' delimiter; fix the file",
        ),
        (
            "dup.yaml",
            "classes: [{name: a, colour: [255, 0, 0]}, {name: b, colour: [255, 0, 0]}]",
            "dup.yaml: classes 'a' and 'b' share the colour (255, 0, 0); give each class its "
            "own colour",
        ),
        (
            "dup.yaml",
            "classes: [{name: a, colour: [1, 2, 3]}, {name: a, colour: [3, 2, 1]}]",
            "dup.yaml: class 'a' is listed twice; give each class a unique name",
        ),
        (
            "one.yaml",
            "classes: [{name: a, colour: [1, 2, 3]}]",
            "one.yaml: only one class ('a'); list at least two classes",
        ),
        (
            "range.yaml",
            "classes: [{name: a, colour: [1, 2, 300]}, {name: b, colour: [0, 0, 0]}]",
            "range.yaml: class 'a' colour (1, 2, 300) is outside 0..255",
        ),
        (
            "range.yaml",
            "classes: [{name: a, colour: [-1, 2, 3]}, {name: b, colour: [0, 0, 0]}]",
            "range.yaml: class 'a' colour (-1, 2, 3) is outside 0..255",
        ),
        ("short.yaml", "classes: [{name: a, colour: [1, 2]}]", "short.yaml: class 'a' colour"),
        ("float.yaml", "classes: [{name: a, colour: [1, 2, 0.5]}]", "is not [r, g, b]"),
        ("empty.yaml", "", "empty.yaml: the schema is empty; list at least two classes"),
        ("empty.json", " \n", "empty.json: the schema is empty"),
        ("nokey.yaml", "name: x", "nokey.yaml: no 'classes' key"),
        ("three.yaml", "classes: 3", "three.yaml: expected a mapping with a 'classes' list"),
        ("list.yaml", "- a\n- b", "list.yaml: expected a mapping with a 'classes' list, got a"),
        ("noname.yaml", "classes: [{colour: [1, 2, 3]}]", "noname.yaml: class #1 has no 'name'"),
        ("nocol.yaml", "classes: [{name: a}]", "nocol.yaml: class 'a' has no 'colour'"),
        ("entry.yaml", "classes: [a, b]", "entry.yaml: class #1 is the text 'a', not a mapping"),
        ("nul.yaml", "classes: \x00", "nul.yaml: not valid YAML at character 10"),
    ],
)
def test_bad_schema_files_one_line_naming_the_file(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(SchemaError) as err:
        load_schema(p)
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    assert msg.startswith(str(tmp_path)), msg
    assert message in msg, msg


def test_schema_folder_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="is a folder, not a schema file"):
        load_schema(tmp_path)
    p = tmp_path / "s.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SchemaError, match="s.yaml: not a text file"):
        load_schema(p)


def test_schema_values_checked_in_the_constructor_too() -> None:
    with pytest.raises(SchemaError, match="schema 'x': only one class"):
        ClassSchema("x", ("a",), ((1, 2, 3),))
    with pytest.raises(SchemaError, match="classes 'a' and 'b' share the colour"):
        ClassSchema("x", ("a", "b"), ((1, 2, 3), (1, 2, 3)))


def test_unknown_schema_name() -> None:
    with pytest.raises(SchemaError, match="built-in name"):
        load_schema("nope")
    with pytest.raises(SchemaError, match="no class 'road'"):
        POTSDAM.index("road")
