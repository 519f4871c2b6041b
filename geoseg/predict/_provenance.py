"""Provenance of a prediction: the work key, and the outputs with their tags and sidecar.

:func:`work_key` identifies a scene's run (options, model hash, input files) so that a
work folder of another configuration is never resumed. :func:`finish` streams the finished
blocks into Cloud-Optimized GeoTIFFs tagged ``GEOSEG_*`` (version, model hash and name,
bands, scene, options, schema: :func:`geoseg.raster.tags.provenance_tags`): the classes,
the probabilities when asked, and one raster per extra output of the model
(``{scene}_contact.tif``: uint8 ``round(255 * p)``, 0 and masked where the input is
nodata, as the probabilities), each with its QGIS style ``{stem}.qml``, writes the
JSON sidecar (inputs, outputs, model, options, device, grid, tiles, blocks, timings,
warnings) and renames the class raster into place last: its existence marks a finished
scene.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.predict._model import ModelMeta, ModelRef
from geoseg.predict._resume import WORK_VERSION, SceneRun
from geoseg.predict._seams import SeamScore
from geoseg.predict._types import PredictOptions, PredictReport, extra_output_path
from geoseg.raster.qml import qml_path
from geoseg.raster.remote import RasterPath
from geoseg.raster.scene import SceneSpec
from geoseg.raster.tags import provenance_tags
from geoseg.raster.writers import write_classes, write_probabilities, write_probability_band
from geoseg.schema import IGNORE

__all__ = ["finish", "resolved_json", "work_key"]

logger = logging.getLogger(__name__)


def _file_id(p: RasterPath | None) -> list[object] | None:
    if p is None:
        return None
    if not isinstance(p, Path):  # a remote file: its name (taken as unchanged)
        return [p, None, None]
    st = p.stat()
    return [str(p.resolve()), st.st_size, st.st_mtime_ns]


def work_key(
    spec: SceneSpec,
    meta: ModelMeta,
    options: PredictOptions,
    *,
    tile: int,
    device: str,
    shape: tuple[int, int],
) -> str:
    """A key of everything a scene's result depends on: options, model, input files, grid."""
    ident = {
        "version": WORK_VERSION,
        "model": meta.sha256,
        "tile": tile,
        "overlap": options.overlap,
        "blend": options.blend,
        "tta": options.tta,
        "device": device,
        "precision": options.precision,
        "block_size": options.block_size,
        "probabilities": options.probabilities,
        "bands": list(meta.bands),
        "scene": {
            "image": _file_id(spec.image),
            "dsm": _file_id(spec.dsm),
            "ndsm": _file_id(spec.ndsm),
            "image_bands": list(spec.image_bands) if spec.image_bands else None,
            "shape": list(shape),
        },
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _options_json(options: PredictOptions) -> dict[str, object]:
    """The resolved options that shape the result (tile and overlap in the model's pixels).

    ``workers``, ``overwrite`` and ``allow_mixed_devices`` change how a run goes, not what it
    writes: they are left
    out, so that the same prediction made another way gives the same file.
    """
    d = asdict(options)
    del d["workers"], d["overwrite"], d["allow_mixed_devices"]
    d["creation_options"] = [list(kv) for kv in options.creation_options]
    return d


def tiling_json(options: PredictOptions, scale: int) -> dict[str, int | None]:
    """Tile size and overlap in both units, named as such.

    The model sees tiles of ``tile_model_px`` at its own GSD; on a finer scene each model
    pixel averages ``scale`` x ``scale`` scene pixels, so the same tile covers
    ``tile_scene_px`` scene pixels.
    """
    tile, overlap = options.tile_size, options.overlap
    return {
        "scene_pixels_per_model_pixel": scale,
        "tile_model_px": tile,
        "overlap_model_px": overlap,
        "tile_scene_px": None if tile is None else tile * scale,
        "overlap_scene_px": None if overlap is None else overlap * scale,
    }


def resolved_json(run: SceneRun, options: PredictOptions) -> dict[str, object]:
    """What the options resolved to where the blocks ran: devices, precision, batch, compile.

    From the blocks of this run (a resumed run that computed nothing reports none).
    """
    runtimes = run.runtimes
    return {
        "devices": sorted({d for d, _, _, _ in runtimes}),
        "precision": sorted({p for _, p, _, _ in runtimes}),
        "batch_size": sorted({b for _, _, b, _ in runtimes}),
        "compile": options.compile,
        "compile_warmup_s": round(max((w for *_, w in runtimes), default=0.0), 3),
    }


def finish(
    run: SceneRun, options: PredictOptions, ref: ModelRef, t_start: float, device: str
) -> PredictReport:
    """Assemble the finished blocks into the outputs and write the sidecar."""
    from geoseg import __version__

    meta = ref.meta

    t0 = time.perf_counter()
    opts = _options_json(options)
    tags = provenance_tags(
        version=__version__,
        model_sha256=meta.sha256,
        model=meta.name,
        bands=meta.bands,
        scene=run.spec.id,
        options=opts,
        schema=meta.schema,
        model_gsd=meta.gsd,
    )
    paths = run.paths
    # Outputs of an interrupted run may be replaced; anything else was checked up front.
    replace = options.overwrite or run.work.is_dir()
    probs_path: Path | None = None
    if options.probabilities:
        probs_path = write_probabilities(
            paths["probs"],
            ((w, p, c != IGNORE) for w, c, p in run.blocks() if p is not None),
            geobox=run.geobox,
            schema=meta.schema,
            tags=tags,
            overwrite=replace,
            creation_options=options.creation_options,
        )
    t_probs = time.perf_counter() - t0
    extras = _write_extras(run, meta, options, tags, overwrite=replace)
    t_extras = time.perf_counter() - t0 - t_probs
    mpx = run.geobox.width * run.geobox.height / 1e6
    side: dict[str, Any] = {
        "geoseg_version": __version__,
        "scene": run.spec.id,
        "inputs": {
            "image": str(run.spec.image),
            "dsm": str(run.spec.dsm) if run.spec.dsm else None,
            "ndsm": str(run.spec.ndsm) if run.spec.ndsm else None,
        },
        "outputs": {
            "classes": paths["classes"].name,
            "class_names": paths["classes"].name + ".aux.xml",
            # QGIS styles beside the rasters (loaded on open): the exact legend
            "class_style": qml_path(paths["classes"]).name,
            "probabilities": probs_path.name if probs_path else None,
            "probabilities_style": qml_path(probs_path).name if probs_path else None,
            **{name: p.name for name, p in extras.items()},
            **{f"{name}_style": qml_path(p).name for name, p in extras.items()},
        },
        "model": {
            "sha256": meta.sha256,
            "name": meta.name,
            "path": ref.path,
            "bands": list(meta.bands),
            "tile_size": meta.tile_size,
            "gsd": meta.gsd,
            "scene_pixels_per_model_pixel": run.scale,
            "extra_outputs": list(meta.extra_outputs),
        },
        "schema": meta.schema.to_dict(),
        "options": opts,
        "tiling": tiling_json(options, run.scale),
        "device": device,
        "grid": {
            "width": run.geobox.width,
            "height": run.geobox.height,
            "crs": run.geobox.crs.to_string() if run.geobox.crs else None,
            "transform": list(run.geobox.transform)[:6],
        },
        "tiles": {
            "planned": run.plan.n_tiles,
            "computed": run.stats["tiles"],
            "skipped_nodata": run.stats["skipped"],
            "recomputed": 0,
            "max_overlapping": run.plan.max_cover,
        },
        "blocks": {
            "total": len(run.plan.blocks),
            "grid": [run.plan.rows.n_blocks, run.plan.cols.n_blocks],
            "resumed": run.resumed,
            "computed": len(run.plan.blocks) - run.resumed,
        },
        "resolved": resolved_json(run, options),
        "seam_score": None,  # counted while the class raster is written
        "timings": {
            "read_s": round(run.stats["read_s"], 3),
            "model_wait_s": round(run.stats["wait_s"], 3),
            "device_cpu_s": round(run.stats["device_s"], 3),
            "block_tasks_s": round(run.stats["block_s"], 3),
            "driver_persist_s": round(run.stats["persist_s"], 3),
        },
        "megapixels": round(mpx, 3),
        "warnings": run.warnings,
    }
    side["timings"]["write_probs_s"] = round(t_probs, 3)
    if extras:
        side["timings"]["write_extra_s"] = round(t_extras, 3)
    score = SeamScore(run.plan)

    def blocks() -> Iterator[tuple[Window, npt.NDArray[np.uint8]]]:
        for w, c, _ in run.blocks(probs=False):
            score.add(w, c)  # the seam score, in the same pass over the finished blocks
            yield w, c

    def write_sidecar() -> None:
        side["seam_score"] = score.summary()
        side["timings"]["wall_s"] = round(time.perf_counter() - t_start, 3)
        # The sidecar before the class raster: its existence marks a finished scene.
        with atomic_path(paths["sidecar"], overwrite=True) as tmp:  # checked up front
            tmp.write_text(json.dumps(side, indent=2))

    write_classes(
        paths["classes"],
        blocks(),
        geobox=run.geobox,
        schema=meta.schema,
        tags=tags,
        overwrite=replace,
        creation_options=options.creation_options,
        staged=write_sidecar,
    )
    shutil.rmtree(run.work, ignore_errors=True)
    seconds = time.perf_counter() - t_start
    logger.info("%s: %.1f Mpx predicted in %.1fs", run.spec.id, mpx, seconds)
    return PredictReport(
        scene=run.spec.id,
        classes=paths["classes"],
        probabilities=probs_path,
        sidecar=paths["sidecar"],
        blocks=len(run.plan.blocks),
        blocks_resumed=run.resumed,
        tiles=run.plan.n_tiles,
        tiles_computed=int(run.stats["tiles"]),
        tiles_skipped_nodata=int(run.stats["skipped"]),
        seconds=seconds,
        megapixels=mpx,
        warnings=tuple(run.warnings),
        extras=extras,
    )


def _write_extras(
    run: SceneRun,
    meta: ModelMeta,
    options: PredictOptions,
    tags: dict[str, str],
    *,
    overwrite: bool,
) -> dict[str, Path]:
    """Write one probability COG per extra output of the model (``{scene}_{name}.tif``)."""
    out: dict[str, Path] = {}
    outdir = run.paths["classes"].parent
    for k, name in enumerate(meta.extra_outputs):
        out[name] = write_probability_band(
            extra_output_path(outdir, run.spec.id, name),
            ((w, extra[k], valid) for w, extra, valid in run.extra_blocks()),
            geobox=run.geobox,
            name=name,
            tags=tags,
            overwrite=overwrite,
            creation_options=options.creation_options,
        )
    return out
