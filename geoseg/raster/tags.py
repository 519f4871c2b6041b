"""The ``GEOSEG_*`` raster tags: their names and value formats, written and read only here.

geoseg stores what a raster is in its GDAL metadata (GeoTIFF tags):

* prediction rasters (:func:`provenance_tags`): ``GEOSEG_VERSION``, ``GEOSEG_MODEL_SHA256``,
  ``GEOSEG_MODEL``, ``GEOSEG_BANDS`` (comma-separated), ``GEOSEG_SCENE``, ``GEOSEG_OPTIONS``
  (JSON, sorted keys), ``GEOSEG_SCHEMA`` (``ClassSchema.to_dict()`` as JSON) and
  ``GEOSEG_MODEL_GSD`` (the model's ground sample distance: the map's true detail);
* training chips (:class:`ChipTags`): ``GEOSEG_SCENE``, ``GEOSEG_WINDOW``, ``GEOSEG_BANDS``
  (a JSON list), ``GEOSEG_VALID``, ``GEOSEG_HISTOGRAM``, ``GEOSEG_IGNORED`` and, for a chip
  with a contact target, ``GEOSEG_CONTACT``, so that a store's index can be rebuilt from its
  chips alone.

:func:`schema_from_tags` is the one reader of ``GEOSEG_SCHEMA``: vectorize and the land-cover
summary both use it, so a bad tag fails the same way in each.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import rasterio

from geoseg.errors import SchemaError, first_line
from geoseg.schema import ClassSchema, load_schema

__all__ = [
    "BANDS_TAG",
    "CONTACT_TAG",
    "HISTOGRAM_TAG",
    "IGNORED_TAG",
    "MODEL_GSD_TAG",
    "MODEL_SHA256_TAG",
    "MODEL_TAG",
    "OPTIONS_TAG",
    "SCENE_TAG",
    "SCHEMA_TAG",
    "VALID_TAG",
    "VERSION_TAG",
    "WINDOW_TAG",
    "ChipTags",
    "model_gsd_from_tags",
    "provenance_tags",
    "schema_from_tags",
    "write_tags",
]

VERSION_TAG = "GEOSEG_VERSION"
"""geoseg version that wrote a prediction."""
MODEL_SHA256_TAG = "GEOSEG_MODEL_SHA256"
"""SHA-256 of the checkpoint file a prediction came from."""
MODEL_TAG = "GEOSEG_MODEL"
"""Model name of a prediction."""
MODEL_GSD_TAG = "GEOSEG_MODEL_GSD"
"""The ground sample distance (m) the prediction's model saw: its detail, whatever the grid's."""
BANDS_TAG = "GEOSEG_BANDS"
"""Bands a prediction's model saw (comma-separated), or a chip's bands (a JSON list)."""
SCENE_TAG = "GEOSEG_SCENE"
"""Scene id of a prediction or a chip."""
OPTIONS_TAG = "GEOSEG_OPTIONS"
"""A prediction's options as JSON (sorted keys)."""
SCHEMA_TAG = "GEOSEG_SCHEMA"
"""Raster tag holding ``ClassSchema.to_dict()`` as JSON (written by ``geoseg predict``)."""
WINDOW_TAG = "GEOSEG_WINDOW"
"""A chip's window in its scene: JSON ``[col_off, row_off, width, height]``."""
VALID_TAG = "GEOSEG_VALID"
"""A chip's valid fraction, with 6 decimals."""
HISTOGRAM_TAG = "GEOSEG_HISTOGRAM"
"""A chip's pixels per class, a JSON list (empty without labels)."""
IGNORED_TAG = "GEOSEG_IGNORED"
"""A chip's labelled pixels that are not a class."""
CONTACT_TAG = "GEOSEG_CONTACT"
"""A chip's contact pixels (value 1 of its ``contact`` band), when it has that band."""

_SCHEMA_FIX = (
    "re-run `geoseg predict` to rewrite the file, or remove the tag and pass --schema "
    "(schema: in a job file)"
)


def provenance_tags(
    *,
    version: str,
    model_sha256: str,
    model: str,
    bands: Sequence[str],
    scene: str,
    options: Mapping[str, object],
    schema: ClassSchema,
    model_gsd: float | None = None,
) -> dict[str, str]:
    """The ``GEOSEG_*`` tags of a prediction raster.

    Args:
        version: geoseg version.
        model_sha256: SHA-256 of the checkpoint file.
        model: Model name.
        bands: Bands the model saw, in order.
        scene: Scene id.
        options: Prediction options (JSON-able); stored with sorted keys.
        schema: Class schema (read back by :func:`schema_from_tags`).
        model_gsd: The model's ground sample distance, m (read back by
            :func:`model_gsd_from_tags`).

    Returns:
        Tag name to value (e.g. for ``write_classes(..., tags=...)``).
    """
    gsd = {MODEL_GSD_TAG: f"{model_gsd:.6g}"} if model_gsd is not None and model_gsd > 0 else {}
    return gsd | {
        VERSION_TAG: version,
        MODEL_SHA256_TAG: model_sha256,
        MODEL_TAG: model,
        BANDS_TAG: ",".join(bands),
        SCENE_TAG: scene,
        OPTIONS_TAG: json.dumps(options, sort_keys=True),
        SCHEMA_TAG: json.dumps(schema.to_dict()),
    }


@dataclass(frozen=True)
class ChipTags:
    """What a training chip records about itself in its ``GEOSEG_*`` tags.

    Attributes:
        scene: Scene id.
        window: ``(col_off, row_off, width, height)`` in the scene.
        bands: Band names of the chip, in order (the label band last, when present).
        valid_fraction: Fraction of valid pixels (stored with 6 decimals).
        histogram: Pixels per class (empty without labels).
        ignored: Labelled pixels that are not a class.
        contact: Contact pixels of its ``contact`` band; None without that band.
    """

    scene: str
    window: tuple[int, int, int, int]
    bands: tuple[str, ...]
    valid_fraction: float
    histogram: tuple[int, ...]
    ignored: int
    contact: int | None = None

    def to_tags(self) -> dict[str, str]:
        """Tag name to value (for :func:`write_tags`)."""
        tags = {
            SCENE_TAG: self.scene,
            WINDOW_TAG: json.dumps(list(self.window)),
            BANDS_TAG: json.dumps(list(self.bands)),
            VALID_TAG: f"{self.valid_fraction:.6f}",
            HISTOGRAM_TAG: json.dumps(list(self.histogram)),
            IGNORED_TAG: str(self.ignored),
        }
        if self.contact is not None:
            tags[CONTACT_TAG] = str(self.contact)
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ChipTags:
        """Inverse of :meth:`to_tags`; the bands, ignored and contact tags may be absent.

        Raises:
            KeyError: ``GEOSEG_SCENE``, ``GEOSEG_WINDOW``, ``GEOSEG_VALID`` or
                ``GEOSEG_HISTOGRAM`` is missing.
        """
        col, row, w, h = json.loads(tags[WINDOW_TAG])
        return cls(
            scene=tags[SCENE_TAG],
            window=(col, row, w, h),
            bands=tuple(json.loads(tags.get(BANDS_TAG, "[]"))),
            valid_fraction=float(tags[VALID_TAG]),
            histogram=tuple(json.loads(tags[HISTOGRAM_TAG])),
            ignored=int(tags.get(IGNORED_TAG, 0)),
            contact=int(tags[CONTACT_TAG]) if tags.get(CONTACT_TAG) else None,
        )


def write_tags(ds: rasterio.io.DatasetWriter, tags: Mapping[str, object]) -> None:
    """Store ``tags`` in an open dataset's GDAL metadata (values as ``str``)."""
    ds.update_tags(**{k: str(v) for k, v in tags.items()})


def model_gsd_from_tags(source: Mapping[str, str] | rasterio.io.DatasetReader) -> float | None:
    """The model GSD (m) a prediction raster records, or None (no tag, or not a number)."""
    tags = source if isinstance(source, Mapping) else source.tags()
    try:
        value = float(tags.get(MODEL_GSD_TAG, ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def schema_from_tags(
    source: Mapping[str, str] | rasterio.io.DatasetReader,
    fallback: ClassSchema | str | os.PathLike[str],
    *,
    path: str | os.PathLike[str] | None = None,
) -> ClassSchema:
    """The class schema a raster carries in its ``GEOSEG_SCHEMA`` tag.

    Args:
        source: An open raster, or its tags.
        fallback: Schema used when there is no tag (a schema, a built-in name or a
            YAML/JSON file).
        path: The raster's file, named in errors (default: the dataset's name).

    Returns:
        The tagged schema, or ``load_schema(fallback)`` when the tag is absent or empty
        (GDAL does not store an empty tag).

    Raises:
        SchemaError: The tag is not valid JSON or not a valid schema (the message names the
            file and says how to fix it), or ``fallback`` is unusable.
    """
    if isinstance(source, Mapping):
        tags = source
        name = str(path) if path is not None else "raster"
    else:
        tags = source.tags()
        name = str(path) if path is not None else str(source.name)
    tag = tags.get(SCHEMA_TAG)
    if not tag:
        return load_schema(fallback)
    try:
        data = json.loads(tag)
    except ValueError as exc:
        raise SchemaError(
            f"{name}:{SCHEMA_TAG}: not valid JSON ({first_line(exc)}); {_SCHEMA_FIX}"
        ) from None
    try:
        return ClassSchema.from_dict(data, source=f"{name}:{SCHEMA_TAG}")
    except SchemaError as exc:
        raise SchemaError(f"{exc}; {_SCHEMA_FIX}") from None
