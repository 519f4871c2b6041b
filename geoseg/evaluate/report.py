"""Report builders: the JSON report of an evaluation, and the judge of a required minimum."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from geoseg._io import atomic_path

__all__ = ["below_minimum", "write_report"]


def write_report(
    report: Mapping[str, Any], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a JSON report atomically (temporary name, then rename).

    Args:
        report: JSON-able mapping (NaN must already be None).
        path: Output file.
        overwrite: Replace an existing file.

    Returns:
        The written path.

    Raises:
        OutputError: The file cannot be created (a parent is a file, a folder is there).
        OutputExistsError: When the file exists and ``overwrite`` is false.
    """
    final = Path(path)
    with atomic_path(final, overwrite=overwrite, kind="file") as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return final


def below_minimum(name: str, value: float, minimum: float | None) -> str | None:
    """Judge a score against a required minimum.

    Args:
        name: Score name for the message (``mIoU``).
        value: The score; NaN (nothing to score) always fails a set minimum.
        minimum: The required minimum, or None for no check.

    Returns:
        None when the check passes (or there is none), else a one-line failure message.
    """
    if minimum is None or value >= minimum:
        return None
    shown = "undefined (nothing was scored)" if math.isnan(value) else f"{value:.4f}"
    return f"{name} {shown} is below the required minimum {minimum:g}"
