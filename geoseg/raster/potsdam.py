"""Scene discovery: the ISPRS Potsdam folder layout, and command-line inputs to scene specs.

A Potsdam-layout folder holds ``4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif``,
``1_DSM/dsm_potsdam_{rr}_{cc}.tif`` and optionally ``1_DSM_normalisation/``,
``5_Labels_all/`` and ``5_Labels_all_noBoundary/``. :func:`list_potsdam_ids` lists its tiles,
:func:`potsdam_scene` gives one tile's :class:`~geoseg.raster.SceneSpec` and
:func:`resolve_scenes` turns command-line style inputs (folders, image files, ``--image``
with ``--dsm``...) into specs. Nothing here opens a raster, but for a STAC item
(:mod:`geoseg.raster.stac` reads the headers of its band files) and a mosaic
(:mod:`geoseg.raster.mosaic` reads the headers of its files).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from geoseg.errors import InputError
from geoseg.raster.mosaic import mosaic_scene
from geoseg.raster.remote import RasterPath, is_remote, path_stem, raster_path
from geoseg.raster.scene import SceneSpec
from geoseg.raster.stac import is_stac_item, stac_scene

__all__ = ["list_potsdam_ids", "potsdam_scene", "resolve_scenes"]

# Log lines name the package, the public face (as geoseg.train, geoseg.vectorize do).
logger = logging.getLogger("geoseg.raster")

_POTSDAM_IMG = re.compile(r"^top_potsdam_(\d+)_(\d+)_RGBIR\.tif$", re.IGNORECASE)
_RASTER_FILES = (".tif", ".tiff", ".vrt")


def list_potsdam_ids(root: str | Path) -> list[str]:
    """Tile ids (``2_10``...) of a Potsdam-layout folder, sorted by row then column.

    Raises:
        InputError: ``root`` has no ``4_Ortho_RGBIR`` folder.
    """
    d = Path(root) / "4_Ortho_RGBIR"
    if not d.is_dir():
        raise InputError(
            f"{root}: not a Potsdam-layout folder (no 4_Ortho_RGBIR/ inside); point at the "
            "dataset root"
        )
    ids = []
    for p in d.iterdir():
        m = _POTSDAM_IMG.match(p.name)
        if m:
            ids.append((int(m.group(1)), int(m.group(2))))
    return [f"{r}_{c}" for r, c in sorted(ids)]


def potsdam_scene(
    root: str | Path,
    tile_id: str,
    *,
    labels: str | None = "all",
    use_ndsm_file: bool = False,
    schema: str = "potsdam",
) -> SceneSpec:
    """The scene of Potsdam tile ``tile_id`` (``2_10``) in a Potsdam-layout folder.

    Args:
        root: Dataset root with ``4_Ortho_RGBIR/``, ``1_DSM/`` and optionally ``5_Labels_all/``.
        tile_id: ``{row}_{col}``.
        labels: ``all`` (``5_Labels_all``), ``noBoundary`` (the eroded labels) or None.
        use_ndsm_file: Use ``1_DSM_normalisation``'s 8-bit nDSM instead of deriving one.
        schema: Class schema of the labels.

    Raises:
        InputError: The tile's image or DSM is missing.
    """
    root = Path(root)
    m = re.fullmatch(r"(\d+)_(\d+)", tile_id)
    if not m:
        raise InputError(f"{tile_id!r}: not a Potsdam tile id; use ROW_COL such as 2_10")
    r, c = int(m.group(1)), int(m.group(2))
    image = root / "4_Ortho_RGBIR" / f"top_potsdam_{r}_{c}_RGBIR.tif"
    if not image.exists():
        known = list_potsdam_ids(root)
        raise InputError(
            f"{image}: no image for tile {tile_id}; tiles here: {', '.join(known) or 'none'}"
        )
    dsm = root / "1_DSM" / f"dsm_potsdam_{r:02d}_{c:02d}.tif"
    if not dsm.exists():
        raise InputError(f"{dsm}: DSM of tile {tile_id} not found; the 1_DSM folder is incomplete")
    ndsm = None
    if use_ndsm_file:
        ndsm = root / "1_DSM_normalisation" / f"dsm_potsdam_{r:02d}_{c:02d}_normalized_lastools.jpg"
        if not ndsm.exists():
            raise InputError(f"{ndsm}: nDSM of tile {tile_id} not found")
    lab = None
    if labels == "all":
        lab = root / "5_Labels_all" / f"top_potsdam_{r}_{c}_label.tif"
    elif labels == "noBoundary":
        lab = root / "5_Labels_all_noBoundary" / f"top_potsdam_{r}_{c}_label_noBoundary.tif"
    elif labels is not None:
        raise InputError(f"labels={labels!r}: use 'all', 'noBoundary' or none")
    if lab is not None and not lab.exists():
        logger.info("%s: no labels for tile %s", lab, tile_id)
        lab = None
    return SceneSpec(id=tile_id, image=image, dsm=dsm, ndsm=ndsm, labels=lab, schema=schema)


def resolve_scenes(
    inputs: Sequence[str | Path] = (),
    *,
    ids: Sequence[str] | None = None,
    image: str | Path | None = None,
    dsm: str | Path | None = None,
    ndsm: str | Path | None = None,
    labels: str | Path | None = None,
    band_names: Sequence[str] | None = None,
    potsdam_labels: str | None = "all",
    schema: str = "potsdam",
    mosaic: str | None = None,
) -> list[SceneSpec]:
    """Scene specs from command-line style inputs.

    Each of ``inputs`` is a Potsdam-layout folder (all its tiles, or ``ids``), an image
    GeoTIFF (a multi-band file whose bands are named by ``band_names`` or its band
    descriptions), a remote image (``https://...``, ``/vsicurl/...``, ``/vsis3/...``) or a
    STAC item (``*.json``, a file or URL; ``band_names`` then picks its band assets, see
    :func:`geoseg.raster.stac.stac_scene`). ``image`` (any of these but a folder) with
    ``dsm``/``ndsm``/``labels`` adds one explicit scene; they override the item's assets.

    With ``mosaic`` (a name), all of them form ONE scene of that id, a VRT mosaic on their
    common pixel grid (:func:`geoseg.raster.mosaic.mosaic_scene`); a folder that is not in
    the Potsdam layout then gives its GeoTIFFs and VRTs.

    Raises:
        InputError: No scene given, a path that does not exist, or an unknown tile id; for
            a mosaic, files that are not on one grid (see ``mosaic_scene``).
    """
    specs: list[SceneSpec] = []
    names = tuple(band_names) if band_names else None
    for inp in inputs:
        if is_stac_item(inp):
            specs.append(stac_scene(inp, bands=names, schema=schema))
            continue
        if is_remote(inp):
            rp = raster_path(inp)
            specs.append(SceneSpec(id=stem_id(rp), image=rp, image_bands=names, schema=schema))
            continue
        p = Path(inp)
        if p.is_dir() and mosaic is not None and not (p / "4_Ortho_RGBIR").is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in _RASTER_FILES)
            if not files:
                raise InputError(f"{p}: no GeoTIFF or VRT in this folder to mosaic")
            specs += [
                SceneSpec(id=f.stem, image=f, image_bands=names, schema=schema) for f in files
            ]
        elif p.is_dir():
            tile_ids = list(ids) if ids else list_potsdam_ids(p)
            specs += [potsdam_scene(p, t, labels=potsdam_labels, schema=schema) for t in tile_ids]
        elif p.exists():
            specs.append(SceneSpec(id=p.stem, image=p, image_bands=names, schema=schema))
        else:
            raise InputError(
                f"{p}: no such file or folder; give an image GeoTIFF or a Potsdam folder"
            )
    if image is not None and is_stac_item(image):
        spec = stac_scene(image, bands=names, schema=schema)
        specs.append(
            replace(
                spec,
                dsm=raster_path(dsm) if dsm else spec.dsm,
                ndsm=raster_path(ndsm) if ndsm else spec.ndsm,
                labels=raster_path(labels) if labels else spec.labels,
            )
        )
    elif image is not None:
        ip = raster_path(image)
        specs.append(
            SceneSpec(
                id=stem_id(ip),
                image=ip,
                dsm=raster_path(dsm) if dsm else None,
                ndsm=raster_path(ndsm) if ndsm else None,
                labels=raster_path(labels) if labels else None,
                image_bands=names,
                schema=schema,
            )
        )
    elif dsm or ndsm or labels:
        raise InputError("--dsm, --ndsm and --labels need --image (the grid they align to)")
    if not specs:
        raise InputError("no scene given; pass image files, a Potsdam folder, or --image")
    if mosaic is not None:
        return [mosaic_scene(specs, name=mosaic)]
    seen: set[str] = set()
    for s in specs:
        if s.id in seen:
            raise InputError(f"{s.image}: scene id {s.id!r} given twice; each scene once")
        seen.add(s.id)
    return specs


def stem_id(path: RasterPath) -> str:
    """The scene id of an image file: a Potsdam tile id (``2_10``) or else the file stem."""
    stem = path_stem(path)
    m = re.match(r"^top_potsdam_(\d+_\d+)_RGBIR$", stem, re.IGNORECASE)
    return m.group(1) if m else stem
