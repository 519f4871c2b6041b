"""QGIS styles (QML) of the rasters: exactly the schema's classes, written beside the COGs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.grid import GeoBox
from geoseg.raster.qml import PROBABILITY_RAMP, class_qml, probability_qml, qml_path
from geoseg.raster.writers import write_classes, write_probabilities, write_probability_band
from geoseg.schema import IGNORE, POTSDAM, ClassSchema
from tests.conftest import POTSDAM_TF

GRID = GeoBox(64, 48, POTSDAM_TF, rasterio.crs.CRS.from_epsg(32633))

ODD = ClassSchema(
    "odd",
    ('a & b <"roof">', "weg'e", "tree"),
    ((1, 2, 3), (250, 128, 0), (0, 255, 0)),
)


def palette(qml: str) -> list[tuple[int, str, str, int]]:
    root = ET.fromstring(qml)
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None and renderer.get("type") == "paletted"
    assert renderer.get("band") == "1"
    out = []
    for e in renderer.iter("paletteEntry"):
        value, alpha = int(e.get("value", "-1")), int(e.get("alpha", "0"))
        out.append((value, e.get("color", ""), e.get("label", ""), alpha))
    return out


def test_class_style_lists_exactly_the_schema_classes() -> None:
    got = palette(class_qml(POTSDAM))
    assert got == [
        (0, "#ffffff", "impervious_surfaces", 255),
        (1, "#0000ff", "building", 255),
        (2, "#00ffff", "low_vegetation", 255),
        (3, "#00ff00", "tree", 255),
        (4, "#ffff00", "car", 255),
        (5, "#ff0000", "clutter", 255),
    ]
    assert IGNORE not in [v for v, *_ in got]  # nodata is no class in the legend


def test_class_style_escapes_names_and_keeps_custom_colours() -> None:
    got = palette(class_qml(ODD))
    assert [(v, c, n) for v, c, n, _ in got] == [
        (0, "#010203", 'a & b <"roof">'),
        (1, "#fa8000", "weg'e"),
        (2, "#00ff00", "tree"),
    ]


def test_class_style_makes_nodata_transparent() -> None:
    root = ET.fromstring(class_qml(POTSDAM))
    entries = root.findall("pipe/rasterrenderer/rasterTransparency/singleValuePixelList/*")
    assert [(e.get("min"), e.get("max"), e.get("percentTransparent")) for e in entries] == [
        ("255", "255", "100")
    ]


def test_probability_style_ramps_over_0_to_255() -> None:
    root = ET.fromstring(probability_qml(band=3))
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "3"
    shader = renderer.find("rastershader/colorrampshader")
    assert shader is not None
    assert (shader.get("minimumValue"), shader.get("maximumValue")) == ("0", "255")
    items = shader.findall("item")
    assert [int(i.get("value", "-1")) for i in items] == [v for v, _ in PROBABILITY_RAMP]
    assert [i.get("label") for i in items][::2] == ["0.00", "0.50", "1.00"]


def test_qml_path_replaces_the_extension() -> None:
    assert qml_path("maps/2_13_classes.tif") == Path("maps/2_13_classes.qml")
    assert qml_path(Path("a.b.tif")) == Path("a.b.qml")


def test_writers_put_the_style_beside_each_raster(tmp_path: Path) -> None:
    cls = np.zeros((GRID.height, GRID.width), dtype=np.uint8)
    whole = Window(0, 0, GRID.width, GRID.height)
    out = write_classes(tmp_path / "s_classes.tif", [(whole, cls)], geobox=GRID, schema=ODD)
    assert qml_path(out).read_text(encoding="utf-8") == class_qml(ODD)
    # replaced with the output: another schema, another legend
    write_classes(out, [(whole, cls)], geobox=GRID, schema=POTSDAM, overwrite=True)
    assert qml_path(out).read_text(encoding="utf-8") == class_qml(POTSDAM)

    probs = np.zeros((len(POTSDAM), GRID.height, GRID.width), dtype=np.uint8)
    valid = np.ones((GRID.height, GRID.width), dtype=bool)
    p = write_probabilities(
        tmp_path / "s_probs.tif", [(whole, probs, valid)], geobox=GRID, schema=POTSDAM
    )
    c = write_probability_band(
        tmp_path / "s_contact.tif", [(whole, probs[0], valid)], geobox=GRID, name="contact"
    )
    for raster in (p, c):
        assert qml_path(raster).read_text(encoding="utf-8") == probability_qml()
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "s_classes.qml",
        "s_classes.tif",
        "s_classes.tif.aux.xml",
        "s_contact.qml",
        "s_contact.tif",
        "s_probs.qml",
        "s_probs.tif",
    ]
