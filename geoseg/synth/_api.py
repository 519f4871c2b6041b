"""The public functions: one scene in memory (:func:`make_scene`), a folder (:func:`synthesize`)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any

import numpy as np
from affine import Affine

from geoseg import __version__
from geoseg._io import atomic_path, check_output
from geoseg.errors import InputError
from geoseg.synth._degrade import check_degrade
from geoseg.synth._degrade import degrade as degrade_image
from geoseg.synth._layout import layout
from geoseg.synth._records import (
    CRS_EPSG,
    PIXEL_SIZE,
    SUN_AZIMUTH_DEG,
    SUN_ELEVATION_DEG,
    SynthResult,
    SynthScene,
    check_size_seed,
    check_transform,
    scene_id,
    scene_paths,
    scene_transform,
)
from geoseg.synth._render import render
from geoseg.synth._style import check_style, restyle
from geoseg.synth._write import write_scene, write_truth

logger = logging.getLogger(__name__)


def make_scene(
    *,
    size: int,
    seed: int,
    transform: Affine,
    index: int = 0,
    row_houses: bool = False,
    style: int = 0,
    degrade: float = 0.0,
) -> SynthScene:
    """Build one synthetic scene in memory (no I/O).

    The content is determined by ``(seed, index)``; ``make_scene(size=s, seed=k,
    transform=scene_transform(i, s), index=i)`` is scene ``i`` of ``synthesize(seed=k)``.

    Args:
        size: Scene edge in pixels (``MIN_SIZE``..``MAX_SIZE``).
        seed: Random seed (>= 0).
        transform: North-up transform with square pixels; its pixel size sets the metric
            scale (objects have real-world sizes in metres).
        index: Scene index, a second part of the seed.
        row_houses: Also build terraces of attached houses of different heights, one
            building (and one true polygon) per house.
        style: Appearance family (``geoseg.synth._style.STYLES``): 0 the Potsdam-like
            palette, 1 and 2 other roof, grass, tree and paving colours. The geometry,
            labels, DSM and truth do not depend on it.
        degrade: Strength (0..2) of a fixed, seeded degradation of the image only (blur,
            haze, colour shift, noise; ``geoseg.synth._degrade.degrade``); 0 = none.

    Returns:
        The scene's arrays and true polygons.

    Raises:
        InputError: A bad size, seed, index, transform, style or degradation.
    """
    check_size_seed(size, seed)
    check_style(style)
    check_degrade(degrade)
    if index < 0:
        raise InputError(f"index={index}: a scene index must be >= 0")
    res = check_transform(transform)
    rng = np.random.default_rng((seed, index))
    t0 = time.perf_counter()
    lay = layout(rng, size * res, row_houses=row_houses)
    restyle(lay, style)  # colours only, no random draw
    t1 = time.perf_counter()
    scene = render(lay, rng, size=size, res=res, transform=transform, seed=seed)
    if degrade:
        image = degrade_image(scene.image, strength=degrade, seed=seed, index=index)
        scene = dataclasses.replace(scene, image=image)
    logger.debug(
        "scene %d (%d px): layout %.2f s, render %.2f s, %d objects",
        index,
        size,
        t1 - t0,
        time.perf_counter() - t1,
        len(lay.ordered()),
    )
    return scene


def synthesize(
    out_dir: str | os.PathLike[str],
    *,
    scenes: int,
    size: int,
    seed: int,
    row_houses: bool = False,
    style: int = 0,
    degrade: float = 0.0,
    overwrite: bool = False,
) -> SynthResult:
    """Write synthetic scenes in the ISPRS Potsdam folder layout.

    The whole folder is built under a temporary name beside ``out_dir`` and renamed into
    place at the end, so an interrupted run leaves nothing at ``out_dir``.

    Args:
        out_dir: The folder to create.
        scenes: Number of scenes (>= 1); scene ``i`` gets tile id ``{2 + i // 10}_{10 + i % 10}``.
        size: Scene edge in pixels (``MIN_SIZE``..``MAX_SIZE``; Potsdam tiles are 6000).
        seed: Random seed (>= 0); the same seed gives the same files.
        row_houses: Also build terraces of attached houses (see :func:`make_scene`).
        style: Appearance family (see :func:`make_scene`); 0 = Potsdam-like.
        degrade: Degradation strength of the images (see :func:`make_scene`); the labels,
            DSMs and truth equal those of the clean scenes of the same seed.
        overwrite: Replace an existing ``out_dir``.

    Returns:
        The written folder, its scene ids and file paths.

    Raises:
        OutputError: ``out_dir`` cannot be created (a parent is a file, a file is there).
        OutputExistsError: ``out_dir`` exists and ``overwrite`` is false.
        InputError: A bad number of scenes, size, seed, style or degradation.
    """
    if scenes < 1:
        raise InputError(f"scenes={scenes}: the number of scenes must be >= 1")
    check_size_seed(size, seed)
    check_style(style)
    check_degrade(degrade)
    final = check_output(out_dir, overwrite=overwrite, kind="dir")
    ids = tuple(scene_id(i) for i in range(scenes))
    buildings: list[dict[str, Any]] = []
    roads: list[dict[str, Any]] = []
    with atomic_path(final, overwrite=overwrite, kind="dir") as tmp:
        tmp.mkdir()
        for i, sid in enumerate(ids):
            t0 = time.perf_counter()
            scene = make_scene(
                size=size,
                seed=seed,
                transform=scene_transform(i, size),
                index=i,
                row_houses=row_houses,
                style=style,
                degrade=degrade,
            )
            write_scene(tmp, sid, scene)
            buildings += [
                {"scene": sid, "height_m": b.height_m, "roof": b.roof, "geometry": b.polygon}
                for b in scene.buildings
            ]
            roads += [
                {"scene": sid, "width_m": r.width_m, "geometry": r.polygon} for r in scene.roads
            ]
            logger.info(
                "scene %s (%d x %d px): %d buildings, %d roads, %.1f s",
                sid,
                size,
                size,
                len(scene.buildings),
                len(scene.roads),
                time.perf_counter() - t0,
            )
            del scene
        write_truth(tmp / "truth.gpkg", buildings, roads)
        manifest = {
            "generator": "geoseg.synth",
            "geoseg_version": __version__,
            "seed": seed,
            "scenes": scenes,
            "row_houses": row_houses,
            "style": style,
            "degrade": degrade,
            "size": size,
            "scene_ids": list(ids),
            "pixel_size": PIXEL_SIZE,
            "crs": f"EPSG:{CRS_EPSG}",
            "sun_azimuth_deg": SUN_AZIMUTH_DEG,
            "sun_elevation_deg": SUN_ELEVATION_DEG,
        }
        (tmp / "synth.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return SynthResult(
        root=final,
        scene_ids=ids,
        paths={sid: scene_paths(final, sid) for sid in ids},
        truth=final / "truth.gpkg",
        manifest=final / "synth.json",
    )
