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
    ("text", "needle"),
    [
        ("classes: 3", "classes"),
        ("classes: [{name: a, colour: [1, 2]}]", "colour"),
        ("classes: [{name: a, colour: [1, 2, 3]}, {name: a, colour: [3, 2, 1]}]", "unique"),
        ("classes: [{name: a, colour: [1, 2, 300]}]", "0..255"),
        ("classes: [", "YAML"),
    ],
)
def test_bad_schema_files(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SchemaError, match=needle):
        load_schema(p)


def test_unknown_schema_name() -> None:
    with pytest.raises(SchemaError, match="built-in name"):
        load_schema("nope")
    with pytest.raises(SchemaError, match="no class 'road'"):
        POTSDAM.index("road")
