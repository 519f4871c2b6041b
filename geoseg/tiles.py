"""The tile store: georeferenced training chips and their index.

Layout of a store (``tiles/NAME``)::

    tiles.json               options the store was made with (size, overlap, bands, schema...)
    chips/{scene}/{scene}_r{row}_c{col}.tif
    index.gpkg               layer "chips": one row per chip (footprint, scene, window,
                             valid fraction, class histogram)

A chip is a float32 GeoTIFF with the scene's transform offset by its window. Its bands are
the image/elevation bands (named in the band descriptions) and, when the scene has labels,
a last band ``label`` of class indices (255 = ignore). Invalid pixels (nodata, outside the
scene) are 0 in the image bands, 255 in the label band, and masked in the GeoTIFF's
per-dataset mask. Chip metadata (scene, window, valid fraction, histogram) is also stored
in its tags (:class:`geoseg.raster.tags.ChipTags`), so the index can be rebuilt from the
chips alone.

Chips are written to a temporary name and renamed, so a chip that exists is complete;
re-running with the same options skips them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.errors import BandMismatchError, InputError, OutputExistsError
from geoseg.grid import tile_windows
from geoseg.options import ChipCompression, TileOptions
from geoseg.raster.scene import Scene, SceneSpec
from geoseg.raster.tags import ChipTags, write_tags
from geoseg.schema import IGNORE, ClassSchema

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = [
    "CHIP_COMPRESSION",
    "ChipRecord",
    "TileOptions",
    "TileReport",
    "read_chip",
    "read_chip_masked",
    "read_store",
    "tile_scenes",
]

CHIP_COMPRESSION: tuple[str, ...] = get_args(ChipCompression)
"""GeoTIFF compressions a chip store may use."""

logger = logging.getLogger(__name__)

STORE_VERSION = 1
LABEL_BAND = "label"


@dataclass(frozen=True)
class ChipRecord:
    """One row of the index."""

    path: str
    scene: str
    col_off: int
    row_off: int
    width: int
    height: int
    valid_fraction: float
    histogram: tuple[int, ...]
    ignored: int
    footprint: tuple[float, float, float, float]
    crs: str


@dataclass(frozen=True)
class TileReport:
    """What a tiling run did."""

    root: Path
    written: int
    skipped_existing: int
    skipped_invalid: int
    chips: int
    unknown_label_pixels: int
    seconds: float


def _store_meta(opts: TileOptions, bands: Sequence[str], schema: ClassSchema, labels: bool) -> dict:
    from geoseg import __version__

    return {
        "format": "geoseg-tiles",
        "version": STORE_VERSION,
        "size": opts.size,
        "overlap": opts.chip_overlap,
        "min_valid": opts.min_valid,
        "compress": opts.compress,
        "bands": list(bands),
        "labels": labels,
        "schema": schema.to_dict(),
        "geoseg_version": __version__,
    }


def _chip_name(scene: str, window: Window) -> str:
    return f"chips/{scene}/{scene}_r{int(window.row_off)}_c{int(window.col_off)}.tif"


def tile_scenes(
    scenes: Sequence[SceneSpec],
    out: str | os.PathLike[str],
    *,
    options: TileOptions = TileOptions(),
    workers: int = 2,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TileReport:
    """Cut scenes into chips and write the store's index.

    Args:
        scenes: The scenes to tile.
        out: Store folder. An existing store made with the same options is resumed
            (complete chips are skipped); one made with other options needs ``overwrite``.
        options: Chip size, overlap, minimum valid fraction, bands.
        workers: Threads writing chips.
        overwrite: Replace an existing store.
        progress: Called as ``progress(done, total)`` after each chip.

    Raises:
        OutputExistsError: ``out`` exists with other options (or is not a store) and
            ``overwrite`` is false.
        BandMismatchError: Scenes lack the requested bands or differ in bands.
    """
    import time

    t0 = time.perf_counter()
    root = Path(out)
    # Open every scene once up front: errors in any input surface before anything is written.
    bands, schema, labels, shapes = _check_scenes(scenes, options)
    meta = _store_meta(options, bands, schema, labels)
    meta_path = root / "tiles.json"
    if root.exists():
        existing = _read_meta(meta_path)
        if existing is not None:
            existing.setdefault("compress", "deflate")  # stores made before the option
        if overwrite:
            import shutil

            shutil.rmtree(root)
        elif existing is None:
            raise OutputExistsError(
                f"{root}: exists and is not a geoseg tile store; pass --overwrite or choose "
                "another output folder"
            )
        elif {k: v for k, v in existing.items() if k != "geoseg_version"} != {
            k: v for k, v in meta.items() if k != "geoseg_version"
        }:
            raise OutputExistsError(
                f"{root}: a tile store made with other options exists; pass --overwrite to "
                "replace it or choose another output folder"
            )
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob("chips/*/.*.partial.tif"):
        stale.unlink()  # temporaries of an interrupted run
    if not meta_path.exists():
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=2))

    jobs = [
        (spec, w)
        for spec, shape in zip(scenes, shapes, strict=True)
        for w in tile_windows(shape, size=options.size, overlap=options.chip_overlap)
    ]
    local = threading.local()
    opened: list[Scene] = []
    lock = threading.Lock()
    counts = {"written": 0, "existing": 0, "invalid": 0, "unknown": 0, "done": 0}
    written: dict[str, ChipRecord] = {}

    def scene_for(spec: SceneSpec) -> Scene:
        cache: dict[str, Scene] = getattr(local, "scenes", None) or {}
        local.scenes = cache
        if spec.id not in cache:
            cache[spec.id] = spec.open()
            with lock:
                opened.append(cache[spec.id])
        return cache[spec.id]

    def work(job: tuple[SceneSpec, Window]) -> None:
        spec, window = job
        status, unknown, record = _write_chip(scene_for(spec), window, root, bands, options)
        with lock:
            if record is not None:
                written[record.path] = record
            counts[status] += 1
            counts["unknown"] += unknown
            counts["done"] += 1
            done = counts["done"]
        if progress is not None:
            progress(done, len(jobs))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(work, jobs):
                pass
    finally:
        for s in opened:
            s.close()
    if counts["unknown"]:
        logger.warning(
            "%d label pixels had colours not in schema %r and were set to 255 (ignore)",
            counts["unknown"],
            schema.name,
        )
    records = [
        written.get(path) or _record_from_chip(root, path)
        for path in sorted(
            str(p.relative_to(root))
            for p in (root / "chips").glob("*/*.tif")
            if not p.name.startswith(".")  # an interrupted run's temporary chip
        )
    ]
    write_index(records, root / "index.gpkg", num_classes=len(schema))
    return TileReport(
        root=root,
        written=counts["written"],
        skipped_existing=counts["existing"],
        skipped_invalid=counts["invalid"],
        chips=len(records),
        unknown_label_pixels=counts["unknown"],
        seconds=time.perf_counter() - t0,
    )


def _check_scenes(
    scenes: Sequence[SceneSpec], options: TileOptions
) -> tuple[tuple[str, ...], ClassSchema, bool, list[tuple[int, int]]]:
    if not scenes:
        raise InputError("no scene to tile")
    bands: tuple[str, ...] | None = options.bands
    schema: ClassSchema | None = None
    labels: set[bool] = set()
    shapes: list[tuple[int, int]] = []
    for spec in scenes:
        with spec.open() as sc:
            shapes.append(sc.geobox.shape)
            if bands is None:
                bands = tuple(b for b in sc.band_names if b != "dsm")
            sc.check_bands(bands)
            if schema is None:
                schema = sc.schema
            elif sc.schema != schema:
                raise InputError(f"{spec.image}: scenes of one store must share a class schema")
            labels.add(sc.has_labels)
    if len(labels) > 1:
        raise InputError(
            "some scenes have labels and others do not; tile labelled and unlabelled scenes "
            "into separate stores"
        )
    assert bands is not None and schema is not None
    if LABEL_BAND in bands:
        raise BandMismatchError(f"band name {LABEL_BAND!r} is reserved for the label band")
    return bands, schema, labels.pop(), shapes


def _read_meta(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == "geoseg-tiles" else None


def _write_chip(
    scene: Scene, window: Window, root: Path, bands: Sequence[str], options: TileOptions
) -> tuple[str, int, ChipRecord | None]:
    name = _chip_name(scene.id, window)
    final = root / name
    if final.exists():
        return "existing", 0, None
    block = scene.read(window, bands=bands)
    # as stored in the chip's tags, so a record is the same whether kept or read back
    valid_fraction = float(f"{block.valid.mean():.6f}")
    if valid_fraction < options.min_valid or not block.valid.any():
        return "invalid", 0, None
    n = len(scene.schema)
    unknown = 0
    arrays = [block.data]
    if scene.has_labels:
        lab, unknown = scene.read_labels(window)  # a new array: ours to change
        lab[~block.valid] = IGNORE
        hist = np.bincount(lab.ravel(), minlength=256)
        histogram = [int(v) for v in hist[:n]]
        ignored = int(hist[n:].sum())
        arrays.append(lab[None].astype(np.float32))
    else:
        histogram, ignored = [], 0
    data = np.concatenate(arrays, axis=0)
    names = list(bands) + ([LABEL_BAND] if scene.has_labels else [])
    tf = scene.geobox.window_transform(window)
    profile = {
        "driver": "GTiff",
        "width": int(window.width),
        "height": int(window.height),
        "count": data.shape[0],
        "dtype": "float32",
        "crs": scene.geobox.crs,
        "transform": tf,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if options.compress != "none":
        profile.update(compress=options.compress, predictor=3)
    with (
        atomic_path(final) as tmp,
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(tmp, "w", **profile) as dst,
    ):
        dst.write(data)
        dst.write_mask(block.valid.astype(np.uint8) * 255)
        for i, band in enumerate(names, start=1):
            dst.set_band_description(i, band)
        chip = ChipTags(
            scene=scene.id,
            window=(
                int(window.col_off),
                int(window.row_off),
                int(window.width),
                int(window.height),
            ),
            bands=tuple(names),
            valid_fraction=valid_fraction,
            histogram=tuple(histogram),
            ignored=ignored,
        )
        write_tags(dst, chip.to_tags())
    record = ChipRecord(
        path=name,
        scene=scene.id,
        col_off=int(window.col_off),
        row_off=int(window.row_off),
        width=int(window.width),
        height=int(window.height),
        valid_fraction=valid_fraction,
        histogram=tuple(histogram),
        ignored=ignored,
        footprint=scene.geobox.window(window).bounds,
        crs=scene.geobox.crs.to_string() if scene.geobox.crs else "",
    )
    return "written", unknown, record


def _record_from_chip(root: Path, path: str) -> ChipRecord:
    """The index row of a chip written earlier, from its tags."""
    with rasterio.open(root / path) as ds:
        chip = ChipTags.from_tags(ds.tags())
        col, row, w, h = chip.window
        return ChipRecord(
            path=path,
            scene=chip.scene,
            col_off=col,
            row_off=row,
            width=w,
            height=h,
            valid_fraction=chip.valid_fraction,
            histogram=chip.histogram,
            ignored=chip.ignored,
            footprint=tuple(ds.bounds),  # type: ignore[arg-type]
            crs=ds.crs.to_string() if ds.crs else "",
        )


def write_index(records: Sequence[ChipRecord], path: Path, *, num_classes: int) -> None:
    """Write the chip index as a GeoPackage (layer ``chips``), atomically.

    Footprints are stored in the first chip's CRS; each row keeps its own CRS in ``crs``.
    """
    import geopandas as gpd
    import shapely
    from pyproj import CRS, Transformer

    rows = []
    geoms = []
    crs0 = records[0].crs if records else None
    for r in records:
        left, bottom, right, top = r.footprint
        geom = shapely.box(left, bottom, right, top)
        if crs0 and r.crs and r.crs != crs0:
            tr = Transformer.from_crs(CRS(r.crs), CRS(crs0), always_xy=True)
            geom = shapely.transform(geom, lambda xy, tr=tr: np.column_stack(tr.transform(*xy.T)))
        d = asdict(r)
        d.pop("footprint")
        hist = d.pop("histogram")
        for i in range(num_classes):
            d[f"class_{i}"] = int(hist[i]) if i < len(hist) else 0
        rows.append(d)
        geoms.append(geom)
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs0 or None)
    with atomic_path(path, overwrite=True) as tmp:
        gdf.to_file(tmp, layer="chips", driver="GPKG", engine="pyogrio")


def read_store(root: str | os.PathLike[str]) -> tuple[dict, gpd.GeoDataFrame]:
    """The store's options (``tiles.json``) and index.

    Raises:
        InputError: ``root`` is not a geoseg tile store.
    """
    import geopandas as gpd

    root = Path(root)
    meta = _read_meta(root / "tiles.json")
    if meta is None or not (root / "index.gpkg").exists():
        raise InputError(
            f"{root}: not a geoseg tile store (no tiles.json/index.gpkg); make one with "
            "`geoseg tile`"
        )
    return meta, gpd.read_file(root / "index.gpkg", layer="chips", engine="pyogrio")


def read_chip_masked(
    path: str | os.PathLike[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str]]:
    """Read a chip: image bands (float32), validity, labels (uint8, 255 = ignore) or None, names."""
    with rasterio.open(path) as ds:
        names = [d or f"band{i}" for i, d in enumerate(ds.descriptions, start=1)]
        data = ds.read(out_dtype=np.float32)
        valid = ds.dataset_mask() > 0
    if names and names[-1] == LABEL_BAND:
        lab = np.where(valid, data[-1], IGNORE).astype(np.uint8)
        return data[:-1], valid, lab, names[:-1]
    return data, valid, None, names


def read_chip(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Read a chip: image bands (float32), labels (uint8, 255 = ignore) or None, band names."""
    data, _, lab, names = read_chip_masked(path)
    return data, lab, names
