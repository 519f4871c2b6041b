"""The tile store: georeferenced training chips and their index.

Layout of a store (``tiles/NAME``)::

    tiles.json               options the store was made with (size, overlap, bands, schema...)
    chips/{scene}/{scene}_r{row}_c{col}.tif
    index.gpkg               layer "chips": one row per chip (footprint, scene, window,
                             valid fraction, class histogram)

A chip is a float32 GeoTIFF with the scene's transform offset by its window. Its bands are
the image/elevation bands (named in the band descriptions) and, when the scene has labels,
a band ``label`` of class indices (255 = ignore). A store cut with building footprints
(``TileOptions.footprints``, :mod:`geoseg.tiles._footprints`) has a last band ``contact``:
1 where a pixel lies within ``contact_width`` metres of two or more different footprints,
else 0; its ``tiles.json`` has a ``contact`` entry and its index a ``contact`` column (the
contact pixels of each chip; -1 for a chip without the band). Invalid pixels (nodata,
outside the scene) are 0 in the image bands, 255 in the label and contact bands, and masked
in the GeoTIFF's per-dataset mask. Chip metadata (scene, window, valid fraction, histogram)
is also stored in its tags (:class:`geoseg.raster.tags.ChipTags`), so the index can be
rebuilt from the chips alone.

Chips are written to a temporary name and renamed, so a chip that exists is complete;
re-running with the same options skips them.
"""

from geoseg.options import TileOptions
from geoseg.tiles._cut import TileReport, tile_scenes
from geoseg.tiles._footprints import Footprints, read_footprints
from geoseg.tiles._store import (
    CHIP_COMPRESSION,
    CONTACT_BAND,
    LABEL_BAND,
    ChipRecord,
    ChipTargets,
    read_chip,
    read_chip_masked,
    read_chip_targets,
    read_store,
    store_contact,
    write_index,
)

__all__ = [
    "CHIP_COMPRESSION",
    "CONTACT_BAND",
    "LABEL_BAND",
    "ChipRecord",
    "ChipTargets",
    "Footprints",
    "TileOptions",
    "TileReport",
    "read_chip",
    "read_chip_masked",
    "read_chip_targets",
    "read_footprints",
    "read_store",
    "store_contact",
    "tile_scenes",
    "write_index",
]
