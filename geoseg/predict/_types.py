"""What a prediction is asked to do and what it reports: options, report, output paths.

Plain values, no work: :class:`PredictOptions` (declared in :mod:`geoseg.options`),
:class:`PredictReport` (one per scene) and :func:`output_paths` (the files of a scene).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from geoseg.options import PredictOptions

__all__ = ["PredictOptions", "PredictReport", "extra_output_path", "output_paths"]


@dataclass(frozen=True)
class PredictReport:
    """What :func:`predict_scenes` did for one scene.

    Attributes:
        scene: Scene id.
        classes: The class COG.
        probabilities: The probability COG, if requested.
        sidecar: The JSON sidecar (options, model hash, timings, tiles, blocks).
        blocks: Output blocks of the scene.
        blocks_resumed: Blocks taken from an interrupted earlier run.
        tiles: Tiles in the plan (each computed at most once).
        tiles_computed: Tiles run through the model in this run.
        tiles_skipped_nodata: Tiles without a valid pixel (not run).
        seconds: Wall time for the scene (from the start of the run to its outputs).
        megapixels: Scene size in megapixels.
        warnings: Warnings raised for the scene (e.g. a GSD mismatch).
        extras: The raster of each of the model's extra outputs, by name
            (``{"contact": OUTDIR/{scene}_contact.tif}`` for a model with a contact output).
    """

    scene: str
    classes: Path
    probabilities: Path | None
    sidecar: Path
    blocks: int
    blocks_resumed: int
    tiles: int
    tiles_computed: int
    tiles_skipped_nodata: int
    seconds: float
    megapixels: float
    warnings: tuple[str, ...] = ()
    extras: dict[str, Path] = field(default_factory=dict)

    @property
    def contact(self) -> Path | None:
        """The building-contact probability raster, when the model has that output."""
        return self.extras.get("contact")


def extra_output_path(outdir: str | os.PathLike[str], scene_id: str, name: str) -> Path:
    """The raster of a model's extra output ``name``: ``OUTDIR/{scene}_{name}.tif``."""
    return Path(outdir) / f"{scene_id}_{name}.tif"


def output_paths(outdir: str | os.PathLike[str], scene_id: str) -> dict[str, Path]:
    """The files :func:`predict_scenes` writes for a scene: classes, probs, sidecar, work.

    And ``contact``: the building-contact probabilities of a model with that output.
    """
    d = Path(outdir)
    return {
        "classes": d / f"{scene_id}_classes.tif",
        "probs": d / f"{scene_id}_probs.tif",
        "contact": extra_output_path(d, scene_id, "contact"),
        "sidecar": d / f"{scene_id}.json",
        "work": d / f".{scene_id}.partial",
    }
