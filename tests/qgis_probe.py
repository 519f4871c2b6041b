"""Open geoseg outputs in a real QGIS (PyQGIS, offscreen) and report what a user would see.

Run with the system Python that has ``qgis`` (Debian ``python3-qgis``), not the project's
environment::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_probe.py CLASSES.tif [--gpkg X.gpkg]
        [--probabilities P.tif] [--png OUT.png]

Prints one JSON document: the QGIS version; for the class raster its CRS, renderer type,
palette classes and legend items; for the probabilities the renderer; for each GeoPackage
layer its feature count, stored styles and renderer colour; and, with ``--png``, writes the
raster and the vectors rendered together with the layers' legend beside the map.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qgis.core import (  # type: ignore[import-not-found]
    Qgis,
    QgsApplication,
    QgsLayerTree,
    QgsLayerTreeModel,
    QgsLegendRenderer,
    QgsLegendSettings,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsPalettedRasterRenderer,
    QgsRasterLayer,
    QgsRenderContext,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, QSizeF  # type: ignore[import-not-found]
from qgis.PyQt.QtGui import QColor, QImage, QPainter  # type: ignore[import-not-found]

MAP_PX = 480
LEGEND_PX = 260


def rgba(c: Any) -> list[int]:
    return [c.red(), c.green(), c.blue(), c.alpha()]


def raster_report(layer: Any) -> dict[str, Any]:
    renderer = layer.renderer()
    out: dict[str, Any] = {
        "valid": layer.isValid(),
        "crs": layer.crs().authid(),
        "renderer": renderer.type() if renderer else None,
        "legend": [[label, rgba(c)] for label, c in renderer.legendSymbologyItems()],
    }
    if isinstance(renderer, QgsPalettedRasterRenderer):
        out["classes"] = [[c.value, c.label, rgba(c.color)] for c in renderer.classes()]
    return out


def vector_layers(gpkg: str) -> list[Any]:
    probe = QgsVectorLayer(gpkg, "probe", "ogr")
    names = [s.split("!!::!!")[1] for s in probe.dataProvider().subLayers()]
    return [QgsVectorLayer(f"{gpkg}|layername={n}", n, "ogr") for n in names]


def vector_report(layer: Any) -> dict[str, Any]:
    count, _ids, names, _descs, _err = layer.listStylesInDatabase()
    renderer = layer.renderer()
    symbol = renderer.symbol() if renderer and renderer.type() == "singleSymbol" else None
    return {
        "valid": layer.isValid(),
        "crs": layer.crs().authid(),
        "features": layer.featureCount(),
        "styles_in_database": list(names)[:count] if count >= 0 else [],
        "renderer": renderer.type() if renderer else None,
        "colour": rgba(symbol.color()) if symbol else None,
    }


def render_png(path: str, raster: Any, vectors: list[Any]) -> None:
    """The map (vectors over the raster) with the layers' QGIS legend on its right."""
    settings = QgsMapSettings()
    settings.setLayers([*vectors, raster])
    settings.setDestinationCrs(raster.crs())
    settings.setExtent(raster.extent())
    settings.setOutputSize(QSize(MAP_PX, MAP_PX))
    settings.setBackgroundColor(QColor(255, 255, 255))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    map_img = job.renderedImage()

    tree = QgsLayerTree()
    for layer in [raster, *vectors]:
        tree.addLayer(layer)
    model = QgsLayerTreeModel(tree)
    legend = QgsLegendSettings()
    legend.setTitle("")
    image = QImage(MAP_PX + LEGEND_PX, MAP_PX, QImage.Format_ARGB32)
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    painter.drawImage(0, 0, map_img)
    zoom = 2  # the legend drawn at twice the screen size: readable in a README
    dots_per_mm = image.dotsPerMeterX() / 1000
    painter.translate(MAP_PX + 8, 8)
    painter.scale(zoom, zoom)
    context = QgsRenderContext.fromQPainter(painter)
    context.setScaleFactor(dots_per_mm)
    renderer = QgsLegendRenderer(model, legend)
    size_mm = [(px - 16) / zoom / dots_per_mm for px in (LEGEND_PX, MAP_PX)]
    renderer.setLegendSize(QSizeF(*size_mm))
    renderer.drawLegend(context)
    painter.end()
    image.save(path, "PNG")
    del renderer, model, tree  # the legend model before its layers (else a crash at exit)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("classes")
    parser.add_argument("--probabilities")
    parser.add_argument("--gpkg")
    parser.add_argument("--png")
    args = parser.parse_args()

    app = QgsApplication([], False)
    app.initQgis()
    try:
        report: dict[str, Any] = {"qgis": Qgis.QGIS_VERSION}
        raster = QgsRasterLayer(args.classes, "classes")
        report["classes"] = raster_report(raster)
        if args.probabilities:
            report["probabilities"] = raster_report(QgsRasterLayer(args.probabilities, "probs"))
        vectors = vector_layers(args.gpkg) if args.gpkg else []
        report["vectors"] = {v.name(): vector_report(v) for v in vectors}
        if args.png:
            render_png(args.png, raster, vectors)
        json.dump(report, sys.stdout)
        sys.stdout.flush()
        del raster, vectors  # layers go before QGIS does
    finally:
        app.exitQgis()
    return 0


if __name__ == "__main__":
    sys.exit(main())
