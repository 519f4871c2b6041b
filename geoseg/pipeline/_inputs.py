"""The ``inputs`` entries of a job file and the scenes they resolve to.

Each entry is exactly one of::

    - potsdam: data/potsdam      # a Potsdam-layout folder (all tiles, or ids)
      ids: [2_13, 2_14]
      labels: all                # all | noBoundary | none
    - glob: scenes/*.tif         # image files by pattern (scene id = file stem)
      dsm: dsm/{stem}_dsm.tif    # optional companions, {stem} = image file stem
      labels: labels/{stem}.tif
    - files: [a.tif, b.tif]      # a list of image files (same options as glob)
    - image: c.tif               # one explicit scene
      dsm: c_dsm.tif
      labels: c_labels.tif

:func:`resolve_scenes` turns validated entries into :class:`~geoseg.raster.SceneSpec`
values, reporting missing files, unknown tile ids and scene ids given twice.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    ValidationInfo,
    model_validator,
)

from geoseg.options import PotsdamLabels
from geoseg.pipeline._sections import (
    BandNames,
    ExistingDir,
    ExistingFile,
    RasterFile,
    Section,
    Template,
    Text,
    TileIds,
    checks_files,
    job_error,
    resolve_path,
)
from geoseg.raster import SceneSpec

__all__ = [
    "INPUT_KINDS",
    "FilesInput",
    "ImageInput",
    "InputEntry",
    "JobInput",
    "PotsdamInput",
    "input_kind",
    "resolve_scenes",
]

INPUT_KINDS = ("potsdam", "glob", "files", "image")
"""The key that says what an input entry is; each entry has exactly one."""


class PotsdamInput(Section):
    """Tiles of an ISPRS Potsdam-layout folder.

    Attributes:
        potsdam: Dataset root (``4_Ortho_RGBIR/``, ``1_DSM/``, ``5_Labels_all/``...).
        ids: Tile ids (``2_13``); None means every tile in the folder.
        labels: Label folder for evaluation: ``all``, ``noBoundary`` or ``none``.
        ndsm_files: Use ``1_DSM_normalisation``'s nDSM files instead of deriving the nDSM.
    """

    potsdam: ExistingDir = Field(description="Dataset root of the Potsdam layout.")
    ids: TileIds | None = Field(default=None, description="Tile ids; default: every tile.")
    labels: PotsdamLabels = Field(default="all", description="Label folder for evaluate.")
    ndsm_files: StrictBool = Field(
        default=False, description="Use 1_DSM_normalisation's nDSM instead of deriving it."
    )

    @property
    def root(self) -> Path:
        """The dataset root."""
        return self.potsdam


class FilesInput(Section):
    """Image files, listed or matched by a glob; each is a scene named by its file stem.

    Attributes:
        glob: The pattern, when the files come from one (expanded when files are checked).
        files: The image files.
        band_names: Names of the image bands in file order (default: from the files).
        dsm: DSM path template, ``{stem}`` is the image file stem.
        ndsm: nDSM path template.
        labels: Label path template.
    """

    glob: Text | None = Field(default=None, description="Image files by pattern.")
    files: tuple[ExistingFile, ...] = Field(
        default=(), min_length=1, description="Image files (scene id: the file stem)."
    )
    band_names: BandNames | None = Field(default=None, description="Image band names.")
    dsm: Template | None = Field(default=None, description="DSM path; {stem}: image stem.")
    ndsm: Template | None = Field(default=None, description="nDSM path; {stem}: image stem.")
    labels: Template | None = Field(default=None, description="Labels; {stem}: image stem.")

    @property
    def pattern(self) -> str | None:
        """The glob, when the files came from one."""
        return self.glob

    @model_validator(mode="after")
    def _expand(self, info: ValidationInfo) -> FilesInput:
        if self.glob is None or not checks_files(info):
            return self
        ctx: Any = info.context
        full = str(resolve_path(ctx.get("base"), self.glob))
        files = [Path(p) for p in sorted(glob.glob(full)) if Path(p).is_file()]
        if not files:
            raise job_error(f"{full!r} matches no file; fix the pattern", key="glob")
        return self.model_copy(update={"files": tuple(files)})


def _scene_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
        raise job_error(f"{value!r}: use letters, digits, '_', '.' or '-' only")
    return value


class ImageInput(Section):
    """One scene from explicit files.

    Attributes:
        image: Image GeoTIFF (its grid is the scene grid).
        dsm: DSM file.
        ndsm: nDSM file.
        labels: Label raster.
        id: Scene id; default: the image file stem (``2_13`` for Potsdam names).
        band_names: Names of the image bands in file order.
    """

    image: RasterFile = Field(
        description="Image GeoTIFF, remote COG URL or STAC item; its grid is the scene grid."
    )
    dsm: RasterFile | None = Field(default=None, description="DSM file or URL.")
    ndsm: RasterFile | None = Field(default=None, description="nDSM file or URL.")
    labels: RasterFile | None = Field(default=None, description="Label raster or URL.")
    id: Annotated[Text, AfterValidator(_scene_id)] | None = Field(
        default=None, description="Scene id; default: the image file stem."
    )
    band_names: BandNames | None = Field(default=None, description="Image band names.")


JobInput = PotsdamInput | FilesInput | ImageInput


def input_kind(value: Any) -> str | None:
    """The kind of an input entry (its one key of :data:`INPUT_KINDS`), else None."""
    if isinstance(value, dict):
        kinds = [k for k in INPUT_KINDS if k in value]
        return kinds[0] if len(kinds) == 1 else None
    if isinstance(value, PotsdamInput | ImageInput):
        return "potsdam" if isinstance(value, PotsdamInput) else "image"
    if isinstance(value, FilesInput):
        return "glob" if value.glob is not None else "files"
    return None


InputEntry = Annotated[
    Annotated[PotsdamInput, Tag("potsdam")]
    | Annotated[FilesInput, Tag("glob")]
    | Annotated[FilesInput, Tag("files")]
    | Annotated[ImageInput, Tag("image")],
    Discriminator(
        input_kind,
        custom_error_type="input_kind",
        custom_error_message="give exactly one of potsdam, glob, files, image",
    ),
]
"""One entry of ``inputs``: the key among :data:`INPUT_KINDS` says which model reads it."""


def _potsdam_scenes(
    where: str, inp: PotsdamInput, schema: str, problems: list[str]
) -> list[SceneSpec]:
    from geoseg.errors import InputError
    from geoseg.raster import list_potsdam_ids, potsdam_scene

    try:
        ids = list(inp.ids) if inp.ids else list_potsdam_ids(inp.root)
    except InputError as exc:
        problems.append(f"{where}.potsdam: {exc}")
        return []
    if not ids:
        problems.append(f"{where}.potsdam: {inp.root}: no tiles in 4_Ortho_RGBIR/")
    out = []
    for i, tid in enumerate(ids):
        try:
            spec = potsdam_scene(
                inp.root,
                tid,
                labels=None if inp.labels == "none" else inp.labels,
                use_ndsm_file=inp.ndsm_files,
                schema=schema,
            )
        except InputError as exc:
            problems.append(f"{where}.ids[{i}]: {exc}" if inp.ids else f"{where}.potsdam: {exc}")
            continue
        out.append(spec)
    return out


def _file_scenes(
    where: str, inp: FilesInput, schema: str, base: Path, problems: list[str]
) -> list[SceneSpec]:
    out = []
    for img in inp.files:
        comp: dict[str, Path | None] = {}
        for key in ("dsm", "ndsm", "labels"):
            t = getattr(inp, key)
            comp[key] = None
            if t is not None:
                p = resolve_path(base, t.format(stem=img.stem))
                if not p.is_file():
                    problems.append(f"{where}.{key}: {p} (for {img.name}) does not exist")
                comp[key] = p
        out.append(
            SceneSpec(
                id=img.stem,
                image=img,
                dsm=comp["dsm"],
                ndsm=comp["ndsm"],
                labels=comp["labels"],
                image_bands=inp.band_names,
                schema=schema,
            )
        )
    return out


def resolve_scenes(
    inputs: Sequence[tuple[str, JobInput]], *, schema: str, base: Path
) -> tuple[list[SceneSpec], list[str]]:
    """The scenes of validated input entries, and the problems found resolving them.

    Args:
        inputs: ``(yaml path, entry)`` pairs (``("inputs[0]", PotsdamInput(...))``).
        schema: The class schema the scenes' labels use.
        base: The job file's folder (companion templates resolve against it).

    Returns:
        ``(scenes, problems)``: problems name their YAML path (unknown tile ids, missing
        companion files, a scene id given by two entries).
    """
    from geoseg.raster import resolve_scenes as resolve_image

    problems: list[str] = []
    found: list[tuple[str, SceneSpec]] = []
    for where, inp in inputs:
        if isinstance(inp, PotsdamInput):
            found += [(where, s) for s in _potsdam_scenes(where, inp, schema, problems)]
        elif isinstance(inp, FilesInput):
            found += [(where, s) for s in _file_scenes(where, inp, schema, base, problems)]
        else:
            (spec,) = resolve_image(
                image=inp.image,
                dsm=inp.dsm,
                ndsm=inp.ndsm,
                labels=inp.labels,
                band_names=inp.band_names,
                schema=schema,
            )
            found.append((where, replace(spec, id=inp.id) if inp.id else spec))
    seen: dict[str, str] = {}
    for where, spec in found:
        if spec.id in seen:
            problems.append(
                f"{where}: scene id {spec.id!r} ({spec.image}) is also given by "
                f"{seen[spec.id]}; give each scene once (set id: for explicit images)"
            )
        seen.setdefault(spec.id, where)
    return [s for _, s in found], problems
