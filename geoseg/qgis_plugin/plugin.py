"""The QGIS plugin object: registers the geoseg provider with Processing."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    """Adds the geoseg provider to the Processing toolbox while the plugin is enabled."""

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        self.provider: GeosegProvider | None = None

    def initProcessing(self) -> None:
        """Register the provider (also called by QGIS for processing-only use)."""
        self.provider = GeosegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """QGIS entry point with a GUI."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
