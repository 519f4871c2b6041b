"""QGIS styles stored inside a GeoPackage (the ``layer_styles`` table QGIS reads).

QGIS looks for a table ``layer_styles`` in a GeoPackage and applies the row whose
``f_table_name`` is the layer and ``useAsDefault`` is true when the layer is opened. The
table layout below is the one QGIS itself creates; it is registered in ``gpkg_contents``
as an attributes table so that the file stays a valid GeoPackage.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

__all__ = ["layer_qml", "layer_sld", "write_gpkg_styles"]

_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _outline(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = (int(v * 0.6) for v in rgb)
    return (r, g, b)


def _opts(props: dict[str, str]) -> str:
    new = "".join(
        f'<Option name="{k}" type="QString" value="{escape(v)}"/>' for k, v in props.items()
    )
    old = "".join(f'<prop k="{k}" v="{escape(v)}"/>' for k, v in props.items())
    return f'<Option type="Map">{new}</Option>{old}'


def layer_qml(kind: Literal["fill", "line"], rgb: tuple[int, int, int]) -> str:
    """A QGIS single-symbol style (QML) in a class colour.

    Args:
        kind: ``fill`` for polygons, ``line`` for lines.
        rgb: The class colour.
    """
    colour = "{},{},{},255".format(*rgb)
    if kind == "fill":
        layer = "SimpleFill"
        props = {
            "color": "{},{},{},180".format(*rgb),
            "style": "solid",
            "outline_color": "{},{},{},255".format(*_outline(rgb)),
            "outline_style": "solid",
            "outline_width": "0.26",
            "outline_width_unit": "MM",
        }
        geom_type = 2
    else:
        layer = "SimpleLine"
        props = {
            "line_color": colour,
            "line_style": "solid",
            "line_width": "0.6",
            "line_width_unit": "MM",
            "capstyle": "round",
            "joinstyle": "round",
        }
        geom_type = 1
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        '<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
        f'<symbols><symbol type="{kind}" name="0" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="{layer}" enabled="1" locked="0" pass="0">{_opts(props)}</layer>'
        "</symbol></symbols><rotation/><sizescale/></renderer-v2>"
        f"<layerGeometryType>{geom_type}</layerGeometryType></qgis>\n"
    )


def layer_sld(layer: str, kind: Literal["fill", "line"], rgb: tuple[int, int, int]) -> str:
    """The same style as OGC SLD 1.1 (for other clients)."""
    if kind == "fill":
        sym = (
            "<se:PolygonSymbolizer><se:Fill>"
            f'<se:SvgParameter name="fill">{_hex(rgb)}</se:SvgParameter>'
            '<se:SvgParameter name="fill-opacity">0.7</se:SvgParameter></se:Fill>'
            f'<se:Stroke><se:SvgParameter name="stroke">{_hex(_outline(rgb))}</se:SvgParameter>'
            "</se:Stroke></se:PolygonSymbolizer>"
        )
    else:
        sym = (
            "<se:LineSymbolizer><se:Stroke>"
            f'<se:SvgParameter name="stroke">{_hex(rgb)}</se:SvgParameter>'
            '<se:SvgParameter name="stroke-width">2</se:SvgParameter>'
            "</se:Stroke></se:LineSymbolizer>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld" '
        'xmlns:se="http://www.opengis.net/se">'
        f"<NamedLayer><se:Name>{escape(layer)}</se:Name><UserStyle>"
        f"<se:Name>{escape(layer)}</se:Name><se:FeatureTypeStyle><se:Rule>"
        f"<se:Name>{escape(layer)}</se:Name>{sym}</se:Rule></se:FeatureTypeStyle>"
        "</UserStyle></NamedLayer></StyledLayerDescriptor>"
    )


def write_gpkg_styles(
    path: Path,
    styles: list[tuple[str, Literal["fill", "line"], tuple[int, int, int], str]],
    *,
    geometry_column: str = "geom",
) -> None:
    """Store one default QGIS style per layer in a GeoPackage.

    Args:
        path: The GeoPackage (its layers already written).
        styles: ``(layer, kind, rgb, description)`` per layer.
        geometry_column: The layers' geometry column.
    """
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    con = sqlite3.connect(path)
    try:
        with con:
            con.execute(_DDL)
            con.execute(
                "INSERT OR REPLACE INTO gpkg_contents "
                "(table_name, data_type, identifier, description, last_change) "
                "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS styles', ?)",
                (now,),
            )
            for layer, kind, rgb, description in styles:
                con.execute(
                    "DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?",
                    (layer, layer),
                )
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, "
                    "description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, 'geoseg', NULL, ?)",
                    (
                        layer,
                        geometry_column,
                        layer,
                        layer_qml(kind, rgb),
                        layer_sld(layer, kind, rgb),
                        description,
                        now,
                    ),
                )
    finally:
        con.close()
