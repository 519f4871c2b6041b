"""The built-in demo: the whole pipeline on synthetic scenes, small enough for a laptop CPU.

Steps (each a library call, logged as it goes): synthesise training scenes and one held-out
test scene of another seed -> cut training chips -> train a small model -> predict the test
scene -> vectorize buildings and roads -> evaluate pixels and buildings against the truth.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from geoseg._io import check_output

__all__ = ["DemoReport", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoReport:
    """Where the demo's outputs are, and what they scored."""

    root: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    size: int = 1000,
    train_scenes: int = 3,
    step: Callable[[str], None] | None = None,
) -> DemoReport:
    """Run the demo pipeline into ``out``.

    Args:
        out: Output folder (created; must not exist unless ``overwrite``).
        overwrite: Replace an existing demo folder.
        size: Scene edge in pixels (5 cm pixels).
        train_scenes: Number of synthetic training scenes.
        step: Called with a short description as each step starts.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
    """
    from geoseg.scene import resolve_scenes
    from geoseg.synth import synthesize
    from geoseg.tiles import TileOptions, tile_scenes

    root = check_output(out, overwrite=overwrite)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    report = DemoReport(root=root)

    def begin(name: str, text: str) -> float:
        if step is not None:
            step(text)
        logger.info("demo: %s", text)
        return time.perf_counter()

    t = begin("synth", f"synthesising {train_scenes} training scenes and 1 test scene")
    train = synthesize(root / "data" / "train", scenes=train_scenes, size=size, seed=0)
    test = synthesize(root / "data" / "test", scenes=1, size=size, seed=1)
    report.outputs["training scenes"] = train.root
    report.outputs["test scene"] = test.root
    report.seconds["synth"] = time.perf_counter() - t

    t = begin("tile", "cutting training chips")
    store = root / "tiles"
    tile_scenes(
        resolve_scenes([train.root]),
        store,
        options=TileOptions(size=256, overlap=32, min_valid=0.5),
        workers=2,
    )
    report.outputs["tile store"] = store
    report.outputs["chip index"] = store / "index.gpkg"
    report.seconds["tile"] = time.perf_counter() - t
    return report
