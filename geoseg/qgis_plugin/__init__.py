"""geoseg's QGIS Processing provider, as a QGIS plugin (runs in QGIS's own Python).

Nothing here imports geoseg or its dependencies: the algorithms run the installed
``geoseg`` command in a subprocess. geoseg itself never imports this package; install it
by copying (or linking) this folder as ``geoseg`` into a QGIS profile's ``python/plugins``
(``geoseg qgis-plugin --install DIR`` does it).
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """QGIS's entry point: the plugin object."""
    from .plugin import GeosegPlugin

    return GeosegPlugin(iface)
