"""QGIS layer styles (QML) for the rasters geoseg writes.

QGIS loads ``{stem}.qml`` beside a raster as the layer's default style when it opens the
file (``QgsMapLayer::loadDefaultStyle``). Without one, a uint8 class raster with a colour
table opens paletted with all 256 slots of the table in its legend (the classes, then
``6`` .. ``255`` in black); the styles here list exactly what the raster holds:

* :func:`class_qml`: a paletted renderer with one entry per class of the schema (value,
  colour, name) and nothing else; nodata (255) is transparent;
* :func:`probability_qml`: a single-band pseudocolour ramp over 0..255 (probability 0..1).

The functions return text; writing is the writers' job (:mod:`geoseg.raster.writers`).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from geoseg.schema import IGNORE, ClassSchema

__all__ = ["PROBABILITY_RAMP", "class_qml", "probability_qml", "qml_path"]

_QGIS_VERSION = "3.22.0"
"""The QGIS version the documents are written for (older QGIS 3 reads them too)."""

PROBABILITY_RAMP: tuple[tuple[int, tuple[int, int, int]], ...] = (
    (0, (68, 1, 84)),
    (64, (59, 82, 139)),
    (128, (33, 145, 140)),
    (191, (94, 201, 98)),
    (255, (253, 231, 37)),
)
"""The probabilities' colour ramp (viridis): ``(value 0..255, RGB)`` stops."""


def qml_path(raster: str | Path) -> Path:
    """Where QGIS looks for the default style of ``raster``: ``{stem}.qml`` beside it."""
    return Path(raster).with_suffix(".qml")


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _document(renderer: str, *, resampling: str) -> str:
    """A raster layer style: ``renderer`` in QGIS's raster pipe."""
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="{_QGIS_VERSION}" styleCategories="AllStyleCategories" \
hasScaleBasedVisibilityFlag="0" minScale="1e+08" maxScale="0">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="{resampling}" \
zoomedOutResamplingMethod="{resampling}" maxOversampling="2"/>
    </provider>
{renderer}
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" \
colorizeGreen="128" colorizeBlue="128" colorizeStrength="100" invertColors="0"/>
    <rasterresampler maxOversampling="2"/>
    <resamplingStage>resamplingFilter</resamplingStage>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""


_MIN_MAX_ORIGIN = """      <minMaxOrigin>
        <limits>None</limits>
        <extent>WholeRaster</extent>
        <statAccuracy>Estimated</statAccuracy>
        <cumulativeCutLower>0.02</cumulativeCutLower>
        <cumulativeCutUpper>0.98</cumulativeCutUpper>
        <stdDevFactor>2</stdDevFactor>
      </minMaxOrigin>"""
"""QGIS's default min/max block (unused by these renderers, which set their values)."""


def class_qml(schema: ClassSchema) -> str:
    """A paletted style with exactly the classes of ``schema`` (value, colour, name).

    Values outside the palette, nodata (255) among them, are not drawn; 255 is also listed
    as fully transparent, so that it stays clear if the file loses its nodata value.
    """
    entries = "\n".join(
        f"        <paletteEntry value={quoteattr(str(i))} color={quoteattr(_hex(rgb))} "
        f'label={quoteattr(name)} alpha="255"/>'
        for i, (name, rgb) in enumerate(zip(schema.classes, schema.colours, strict=True))
    )
    renderer = f"""    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" \
nodataColor="">
      <rasterTransparency>
        <singleValuePixelList>
          <pixelListEntry min="{IGNORE}" max="{IGNORE}" percentTransparent="100"/>
        </singleValuePixelList>
      </rasterTransparency>
{_MIN_MAX_ORIGIN}
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>"""
    # classes are never blended: nearest neighbour at every zoom
    return _document(renderer, resampling="nearestNeighbour")


def probability_qml(band: int = 1) -> str:
    """A single-band pseudocolour style for a probability raster (uint8 0..255 = p 0..1).

    Args:
        band: The band shown (1-based); the others are a click away in QGIS.
    """
    items = "\n".join(
        f'            <item value="{v}" color="{_hex(rgb)}" label="{v / 255:.2f}" alpha="255"/>'
        for v, rgb in PROBABILITY_RAMP
    )
    lo, hi = PROBABILITY_RAMP[0][0], PROBABILITY_RAMP[-1][0]
    renderer = f"""    <rasterrenderer type="singlebandpseudocolor" band="{band}" opacity="1" \
alphaBand="-1" nodataColor="" classificationMin="{lo}" classificationMax="{hi}">
      <rasterTransparency/>
{_MIN_MAX_ORIGIN}
      <rastershader>
        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" \
minimumValue="{lo}" maximumValue="{hi}" labelPrecision="2">
{items}
        </colorrampshader>
      </rastershader>
    </rasterrenderer>"""
    return _document(renderer, resampling="bilinear")
