"""Prediction options are validated on construction."""

from __future__ import annotations

import pytest

from geoseg.errors import ConfigError
from geoseg.predict import PredictOptions


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="blend"):
        PredictOptions(blend="gauss")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="overlap"):
        PredictOptions(tile_size=64, overlap=64)
