"""I/O at the edge: scenes in, rasters out.

* :mod:`.scene`: :class:`SceneSpec` (picklable paths) and :class:`Scene` (image, elevation
  and label sources aligned onto the image grid, read window by window);
* :mod:`.ground`: the ground estimate behind a derived nDSM (pure numpy);
* :mod:`.potsdam`: Potsdam folder layout and command-line inputs to scene specs;
* :mod:`.remote`: remote rasters (``/vsicurl/`` URLs, ``/vsis3/``) and the GDAL options
  they are opened under;
* :mod:`.stac`: STAC items as scenes (band assets picked by name, stacked into a VRT);
* :mod:`.mosaic`: many files as one scene (a VRT mosaic on their common grid), and the
  mosaic's map cut back into one map per file;
* :mod:`.vrt`: the one home for writing VRT files (XML, content-named cache folder);
* :mod:`.overviews`: mode overviews of class rasters (made here, copied by the COG driver);
* :mod:`.writers`: Cloud-Optimized GeoTIFF writers for class and probability rasters (colour
  table, class names in the ``.aux.xml`` sidecar for QGIS);
* :mod:`.qml`: the QGIS styles written beside them (``{stem}.qml``: the exact legend);
* :mod:`.tags`: the ``GEOSEG_*`` raster tags, written and read only there.
"""

from __future__ import annotations

from geoseg.raster.potsdam import list_potsdam_ids, potsdam_scene, resolve_scenes
from geoseg.raster.scene import DEFAULT_MODEL_BANDS, RawBlock, Scene, SceneBlock, SceneSpec
from geoseg.raster.tags import SCHEMA_TAG, ChipTags, provenance_tags, schema_from_tags
from geoseg.raster.writers import COG_BLOCKSIZE, class_pam_xml, write_classes, write_probabilities

__all__ = [
    "COG_BLOCKSIZE",
    "DEFAULT_MODEL_BANDS",
    "SCHEMA_TAG",
    "ChipTags",
    "RawBlock",
    "Scene",
    "SceneBlock",
    "SceneSpec",
    "class_pam_xml",
    "list_potsdam_ids",
    "potsdam_scene",
    "provenance_tags",
    "resolve_scenes",
    "schema_from_tags",
    "write_classes",
    "write_probabilities",
]
