"""The geoseg Processing provider: its algorithms and the geoseg executable setting."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsProcessingProvider

from .algorithms import ALGORITHMS
from .command import SETTING

PROVIDER_ID = "geoseg"


def executable_setting() -> str:
    """The geoseg executable set in Settings > Options > Processing (empty: the default)."""
    from processing.core.ProcessingConfig import ProcessingConfig

    value = ProcessingConfig.getSetting(SETTING)
    return str(value) if value else ""


class GeosegProvider(QgsProcessingProvider):
    """geoseg's predict, vectorize and run in the Processing toolbox."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:
        return "geoseg: aerial imagery to land-cover maps and GIS vectors"

    def load(self) -> bool:
        from processing.core.ProcessingConfig import ProcessingConfig, Setting

        ProcessingConfig.settingIcons[self.name()] = self.icon()
        ProcessingConfig.addSetting(
            Setting(
                self.name(),
                SETTING,
                "geoseg executable (empty: $GEOSEG_EXECUTABLE, else geoseg on the PATH)",
                "",
                valuetype=Setting.FILE,
            )
        )
        ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        from processing.core.ProcessingConfig import ProcessingConfig

        ProcessingConfig.removeSetting(SETTING)

    def loadAlgorithms(self) -> None:
        setting = executable_setting()
        for cls in ALGORITHMS:
            algorithm: Any = cls()
            algorithm.executable_setting = setting
            self.addAlgorithm(algorithm)
