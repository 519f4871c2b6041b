"""The ``store`` of the training tests: the shared toy labelled store (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def store(train_store: Path) -> Path:
    return train_store
