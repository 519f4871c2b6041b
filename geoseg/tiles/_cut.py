"""Cutting scenes into chips: checks before anything is written, parallel chip writes, undo.

See :mod:`geoseg.tiles` for the layout of a store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg._io import (
    atomic_path,
    check_memory,
    check_output_path,
    make_parents,
    remove_empty,
)
from geoseg.errors import BandMismatchError, InputError, NoValidDataError, OutputExistsError
from geoseg.grid import tile_windows
from geoseg.options import TileOptions
from geoseg.raster.scene import Scene, SceneSpec
from geoseg.raster.tags import ChipTags, write_tags
from geoseg.schema import IGNORE, ClassSchema
from geoseg.tiles._footprints import SceneFootprints, read_footprints, scene_footprints
from geoseg.tiles._store import (
    CONTACT_BAND,
    LABEL_BAND,
    ChipRecord,
    chip_has_contact,
    chip_name,
    read_meta,
    record_from_chip,
    store_contact,
    store_meta,
    write_index,
)

if TYPE_CHECKING:
    from geoseg.grid import GeoBox

__all__ = ["TileReport", "tile_scenes"]

logger = logging.getLogger("geoseg.tiles")

MAX_CHIP_BYTES = 1 << 30
"""The largest chip buffer (bands x size² x 4 bytes, labels included) a run accepts: 1 GiB."""


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
    contact_missing: int = 0
    """Chips of the index without a contact target in a run with footprints (chips of
    scenes not in this run, of a store cut without footprints)."""


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

    Everything is checked before anything is written: the output path, the scenes and
    their bands, and the memory a chip takes. A run that fails or finds no valid chip
    leaves nothing it created behind (an existing store replaced with ``overwrite`` is put
    back), unless it already wrote complete chips: those are kept, so that running the
    same command again resumes.

    Args:
        scenes: The scenes to tile.
        out: Store folder. An existing store made with the same options is resumed
            (complete chips are skipped); one made with other options needs ``overwrite``.
        options: Chip size, overlap, minimum valid fraction, bands; with
            ``options.footprints``, a ``contact`` target band in every chip (a store cut
            without one gains it: its chips are cut again, and its options file says so
            once every chip has it).
        workers: Threads writing chips.
        overwrite: Replace an existing store.
        progress: Called as ``progress(done, total)`` after each chip.

    Raises:
        OutputError: ``out`` cannot be created (a parent is a file, it is a file...).
        OutputExistsError: ``out`` exists with other options (or is not a store) and
            ``overwrite`` is false.
        BandMismatchError: Scenes lack the requested bands or differ in bands.
        InputError: Unusable footprints (missing, unreadable, without a CRS or a polygon),
            or a scene without a CRS with footprints.
        ConfigError: A chip of ``options.size`` would not fit in memory.
        NoValidDataError: No scene gave a valid chip (all nodata, an all-NaN DSM, or every
            chip below ``options.min_valid``). Scenes without a valid chip among others
            that have some are only logged as a warning.
    """
    import time

    t0 = time.perf_counter()
    root = check_output_path(out, kind="dir")
    # Open every scene once up front: errors in any input surface before anything is written.
    bands, schema, labels, geoboxes, crs = _check_scenes(scenes, options)
    shapes = [g.shape for g in geoboxes]
    contacts = _scene_contacts(scenes, geoboxes, options)
    nbands = len(bands) + labels + (contacts is not None)
    _check_chip_memory(scenes, shapes, nbands, options, workers)
    meta = store_meta(options, bands, schema, labels)
    if contacts is not None:
        meta["contact"]["layer"] = contacts[0].layer  # the layer read
    meta_path = root / "tiles.json"
    aside: Path | None = None
    upgrade = False  # an existing store without a contact target gains one
    if root.exists():
        existing = read_meta(meta_path)
        if existing is not None:
            existing.setdefault("compress", "deflate")  # stores made before the option
        if overwrite:
            # Put back if this run fails before it wrote a chip.
            aside = root.with_name(f".{root.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(root, aside)
        elif existing is None:
            raise OutputExistsError(
                f"{root}: exists and is not a geoseg tile store; pass --overwrite or choose "
                "another output folder"
            )
        else:
            upgrade = _check_same_options(root, existing, meta)
    made = [] if aside is not None or root.exists() else [root, *make_parents(root)]
    root.mkdir(exist_ok=True)
    made_meta = False
    try:
        _remove_chip_temporaries(root)  # of an interrupted run
        if not meta_path.exists():
            with atomic_path(meta_path) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
            made_meta = True
        report = _tile(
            scenes, shapes, root, bands, schema, crs, options, workers, progress, contacts
        )
        if upgrade and report.contact_missing == 0:
            # every chip has its contact target now: the options file says so
            with atomic_path(meta_path, overwrite=True) as tmp:
                tmp.write_text(json.dumps(meta, indent=2))
        elif upgrade:
            logger.warning(
                "%s: %d chip(s) of scenes not tiled in this run have no contact target; the "
                "store gets one once they are tiled with --footprints too",
                root,
                report.contact_missing,
            )
    except BaseException:
        _undo(root, made, made_meta, aside)
        raise
    if aside is not None:
        _discard(aside)
    return replace(report, seconds=time.perf_counter() - t0)


def _check_same_options(root: Path, existing: dict, meta: dict) -> bool:
    """Check that a store may be resumed with ``meta``; whether it gains a contact target.

    The contact target's footprint file is not an option of the chips (another file for new
    scenes is fine); its width is.

    Raises:
        OutputExistsError: The store was made with other options.
    """

    def chip_options(m: dict) -> dict:
        out = {k: v for k, v in m.items() if k not in ("geoseg_version", "contact")}
        if store_contact(m):
            out["contact_width_m"] = m["contact"].get("width_m")
        return out

    had, has = store_contact(existing), store_contact(meta)
    if had and not has:
        raise OutputExistsError(
            f"{root}: the tile store has a contact target (made with --footprints); pass "
            "--footprints again to resume it, or --overwrite to replace it"
        )
    mine = chip_options(meta)
    theirs = chip_options(existing)
    if not had and has:
        mine.pop("contact_width_m")  # a store without a contact target gains one
    if mine != theirs:
        raise OutputExistsError(
            f"{root}: a tile store made with other options exists; pass --overwrite to "
            "replace it or choose another output folder"
        )
    return has and not had


def _scene_contacts(
    scenes: Sequence[SceneSpec], geoboxes: Sequence[GeoBox], options: TileOptions
) -> list[SceneFootprints] | None:
    """The footprints of each scene (None without ``options.footprints``), checked up front.

    Raises:
        InputError: Unusable footprints, or a scene without a CRS.
    """
    if options.footprints is None:
        return None
    fp = read_footprints(options.footprints, layer=options.footprints_layer)
    out = []
    for spec, gb in zip(scenes, geoboxes, strict=True):
        if gb.crs is None:
            raise InputError(
                f"{spec.image}: scene {spec.id!r} has no CRS, so the footprints of "
                f"{fp.path} cannot be placed on it; georeference it or leave out --footprints"
            )
        out.append(scene_footprints(fp, gb, width_m=options.contact_width))
    if not any(len(c.buffered) for c in out):
        logger.warning(
            "%s: no footprint lies in any scene (check its CRS and extent); every contact "
            "target will be 0",
            fp.path,
        )
    return out


def _tile(
    scenes: Sequence[SceneSpec],
    shapes: Sequence[tuple[int, int]],
    root: Path,
    bands: tuple[str, ...],
    schema: ClassSchema,
    crs: str | None,
    options: TileOptions,
    workers: int,
    progress: Callable[[int, int], None] | None,
    contacts: Sequence[SceneFootprints] | None = None,
) -> TileReport:
    """Write the chips of every scene, then the index (the store's folder and options exist)."""
    jobs = [
        (i, spec, w)
        for i, (spec, shape) in enumerate(zip(scenes, shapes, strict=True))
        for w in tile_windows(shape, size=options.size, overlap=options.chip_overlap)
    ]
    local = threading.local()
    opened: list[Scene] = []
    lock = threading.Lock()
    counts = {"written": 0, "existing": 0, "invalid": 0, "unknown": 0, "done": 0}
    chips = dict.fromkeys((s.id for s in scenes), 0)  # chips per scene, written or existing
    best = dict.fromkeys((s.id for s in scenes), 0.0)  # best valid fraction per scene
    written: dict[str, ChipRecord] = {}

    def scene_for(spec: SceneSpec) -> Scene:
        cache: dict[str, Scene] = getattr(local, "scenes", None) or {}
        local.scenes = cache
        if spec.id not in cache:
            cache[spec.id] = spec.open()
            with lock:
                opened.append(cache[spec.id])
        return cache[spec.id]

    def work(job: tuple[int, SceneSpec, Window]) -> None:
        i, spec, window = job
        contact = None if contacts is None else contacts[i]
        status, unknown, record, valid = _write_chip(
            scene_for(spec), window, root, bands, options, contact
        )
        with lock:
            if record is not None:
                written[record.path] = record
            counts[status] += 1
            counts["unknown"] += unknown
            counts["done"] += 1
            done = counts["done"]
            if status != "invalid":
                chips[spec.id] += 1
            best[spec.id] = max(best[spec.id], valid)
        if progress is not None:
            progress(done, len(jobs))

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(work, job) for job in jobs]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                for f in futures:  # a failed chip ends the run: the rest is not started
                    f.cancel()
                raise
    finally:
        for s in opened:
            s.close()
    empty = [
        f"scene {spec.id}: {_why_empty(spec, shape, bands, options, best[spec.id])}"
        for spec, shape in zip(scenes, shapes, strict=True)
        if chips[spec.id] == 0
    ]
    if len(empty) == len(scenes):
        more = f"; and {len(empty) - 2} more scene(s)" if len(empty) > 2 else ""
        raise NoValidDataError(f"no chip was valid: {'; '.join(empty[:2])}{more}")
    for line in empty:
        logger.warning("no chip was valid in %s; the store has none of it", line)
    if counts["unknown"]:
        logger.warning(
            "%d label pixels had colours not in schema %r and were set to 255 (ignore)",
            counts["unknown"],
            schema.name,
        )
    records = [
        written.get(path) or record_from_chip(root, path)
        for path in sorted(
            str(p.relative_to(root))
            for p in (root / "chips").glob("*/*.tif")
            if not p.name.startswith(".")  # an interrupted run's temporary chip
        )
    ]
    write_index(records, root / "index.gpkg", num_classes=len(schema), crs=crs)
    return TileReport(
        root=root,
        written=counts["written"],
        skipped_existing=counts["existing"],
        skipped_invalid=counts["invalid"],
        chips=len(records),
        unknown_label_pixels=counts["unknown"],
        seconds=0.0,
        contact_missing=sum(r.contact < 0 for r in records) if contacts is not None else 0,
    )


def _undo(root: Path, made: list[Path], made_meta: bool, aside: Path | None) -> None:
    """After a failed run: remove what it created, unless it wrote complete chips.

    Complete chips (and the options file that goes with them) stay, so that the same
    command resumes; otherwise the store is as before the run (a store moved aside by
    ``overwrite`` is put back).
    """
    if any(not p.name.startswith(".") for p in root.glob("chips/*/*.tif")):
        if aside is not None:
            _discard(aside)
        return
    _remove_chip_temporaries(root)
    remove_empty([*sorted(root.glob("chips/*"), reverse=True), root / "chips"])
    if made_meta:
        (root / "tiles.json").unlink(missing_ok=True)
    if aside is not None:
        shutil.rmtree(root, ignore_errors=True)
        os.replace(aside, root)
    remove_empty(made)


def _remove_chip_temporaries(root: Path) -> None:
    for stale in root.glob("chips/*/.*.partial.tif"):
        stale.unlink(missing_ok=True)


def _discard(p: Path) -> None:
    """Remove a store moved aside (a folder, or a link to one: the link only)."""
    if p.is_symlink():
        p.unlink()
    else:
        shutil.rmtree(p, ignore_errors=True)


def _check_chip_memory(
    scenes: Sequence[SceneSpec],
    shapes: Sequence[tuple[int, int]],
    nbands: int,
    options: TileOptions,
    workers: int,
) -> None:
    """Refuse a chip size whose arrays cannot be held in memory (checked for every scene)."""
    size = options.size
    chip = nbands * size * size * 4  # float32 bands (and labels): the chip's buffer
    largest = max(math.isqrt(MAX_CHIP_BYTES // (4 * nbands)), 16)
    for spec, (h, w) in zip(scenes, shapes, strict=True):
        what = (
            f"--size {size}: a chip of {nbands} band(s) x {size} x {size} px of scene "
            f"{spec.id} ({h} x {w} px)"
        )
        check_memory(chip, what=what, fix=f"use --size {largest} or less", cap=MAX_CHIP_BYTES)
        # while written, each worker holds a chip's arrays about twice (read, then stacked)
        threads = max(1, workers)
        check_memory(
            2 * chip * threads,
            what=f"{what}, {threads} at a time (--workers)",
            fix="use a smaller --size or fewer --workers",
        )


def _why_empty(
    spec: SceneSpec,
    shape: tuple[int, int],
    bands: Sequence[str],
    options: TileOptions,
    best: float,
) -> str:
    """Why a scene gave no valid chip, in a few words and a fix."""
    if best > 0:
        bigger = (
            f" (chips of {options.size} px on a scene of {shape[0]} x {shape[1]} px)"
            if options.size > min(shape)
            else ""
        )
        return (
            f"its best chip is {best * 100:.3g}% valid, below --min-valid {options.min_valid:g}"
            f"{bigger}; lower --min-valid or use a smaller --size"
        )
    # No valid pixel at all: find the source(s) to blame on the first chip's window.
    window = next(tile_windows(shape, size=options.size, overlap=options.chip_overlap))
    image = [b for b in bands if b not in ("dsm", "ndsm")]
    blame = []
    with spec.open() as sc:
        if image and not sc.read(window, bands=image).valid.any():
            blame.append(f"the image {spec.image} is all nodata")
        for elev in ("dsm", "ndsm"):
            if elev in bands and not sc.read(window, bands=[elev]).valid.any():
                src = spec.ndsm if elev == "ndsm" and spec.ndsm is not None else spec.dsm
                name = "nDSM" if src == spec.ndsm else "DSM"
                blame.append(f"the {name} {src} is all NaN or nodata")
    if not blame:
        return (
            f"no pixel of {spec.image} is valid in every band ({', '.join(bands)}); "
            "check the sources' nodata values or choose other --bands"
        )
    return " and ".join(blame) + " (check its nodata value, or leave the scene out)"


def _check_scenes(
    scenes: Sequence[SceneSpec], options: TileOptions
) -> tuple[tuple[str, ...], ClassSchema, bool, list[GeoBox], str | None]:
    if not scenes:
        raise InputError("no scene to tile")
    bands: tuple[str, ...] | None = options.bands
    schema: ClassSchema | None = None
    labels: set[bool] = set()
    geoboxes: list[GeoBox] = []
    crs: str | None = None
    for spec in scenes:
        with spec.open() as sc:
            geoboxes.append(sc.geobox)
            if crs is None and sc.geobox.crs is not None:
                crs = sc.geobox.crs.to_string()
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
    for reserved, what in ((LABEL_BAND, "label band"), (CONTACT_BAND, "contact target")):
        if reserved in bands:
            raise BandMismatchError(f"band name {reserved!r} is reserved for the {what}")
    return bands, schema, labels.pop(), geoboxes, crs


def _write_chip(
    scene: Scene,
    window: Window,
    root: Path,
    bands: Sequence[str],
    options: TileOptions,
    contact: SceneFootprints | None = None,
) -> tuple[str, int, ChipRecord | None, float]:
    """Write one chip; (status, unknown label pixels, its record, its valid fraction).

    With ``contact`` a chip is complete only with its contact band (a chip cut without one
    is cut again).
    """
    name = chip_name(scene.id, window)
    final = root / name
    if final.exists() and (contact is None or chip_has_contact(final)):
        return "existing", 0, None, 1.0
    block = scene.read(window, bands=bands)
    # as stored in the chip's tags, so a record is the same whether kept or read back
    valid_fraction = float(f"{block.valid.mean():.6f}")
    if valid_fraction < options.min_valid or not block.valid.any():
        return "invalid", 0, None, valid_fraction
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
    tf = scene.geobox.window_transform(window)
    contact_px: int | None = None
    if contact is not None:
        target = contact.contact(tf, (int(window.height), int(window.width)))
        target[~block.valid] = IGNORE
        contact_px = int(np.count_nonzero(target == 1))
        arrays.append(target[None].astype(np.float32))
    data = np.concatenate(arrays, axis=0)
    names = (
        list(bands)
        + ([LABEL_BAND] if scene.has_labels else [])
        + ([CONTACT_BAND] if contact is not None else [])
    )
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
        atomic_path(final, overwrite=contact is not None) as tmp,  # a chip without contact
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
            contact=contact_px,
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
        contact=-1 if contact_px is None else contact_px,
    )
    return "written", unknown, record, valid_fraction
