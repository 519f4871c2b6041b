"""Run geoseg's Processing algorithms in a real QGIS (PyQGIS, offscreen); report as JSON.

Run with the system Python that has ``qgis``, with ``GEOSEG_EXECUTABLE`` naming geoseg::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/qgis_provider_probe.py PLUGIN_PARENT \
        ALGORITHM PARAMETERS.json [ALGORITHM PARAMETERS.json ...]

Registers the provider from ``PLUGIN_PARENT/qgis_plugin`` (the package folder), runs each
algorithm with ``processing.run`` and prints its results, the progress it reported and the
command lines it logged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsProcessingFeedback  # type: ignore[import-not-found]


class Recorder(QgsProcessingFeedback):  # type: ignore[misc]
    """Keeps what an algorithm reports."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[str] = []
        self.progress: list[float] = []
        self.progressChanged.connect(self.progress.append)

    def pushCommandInfo(self, info: str) -> None:
        self.commands.append(info)
        super().pushCommandInfo(info)


def main(argv: list[str]) -> dict[str, Any]:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    import processing  # type: ignore[import-not-found]
    from processing.core.Processing import Processing  # type: ignore[import-not-found]

    Processing.initialize()
    sys.path.insert(0, argv[0])
    from qgis_plugin.provider import GeosegProvider  # type: ignore[import-not-found]

    provider = GeosegProvider()
    assert QgsApplication.processingRegistry().addProvider(provider)
    report: dict[str, Any] = {
        "algorithms": sorted(a.id() for a in provider.algorithms()),
        "runs": [],
    }
    for name, params in zip(argv[1::2], argv[2::2], strict=True):
        feedback = Recorder()
        result = processing.run(name, json.loads(Path(params).read_text()), feedback=feedback)
        report["runs"].append(
            {
                "result": {k: v for k, v in result.items() if isinstance(v, str | None)},
                "commands": feedback.commands,
                "progress": feedback.progress,
            }
        )
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
