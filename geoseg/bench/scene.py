"""The synthetic scene, the tiny model and the untrained checkpoints of the predict benches.

The scene is a fast procedural generator (blocks of "buildings", roads, noisy vegetation,
a DSM), written strip by strip in bounded memory, not :mod:`geoseg.synth`, whose
full-resolution polygon rendering is too slow at these sizes (the training benchmarks, on
small scenes, use :mod:`geoseg.synth`). ``tiny`` is a 1x1-convolution model for I/O and
memory measurements.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg._io import atomic_path
from geoseg.errors import InputError
from geoseg.predict import PredictModel
from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM

__all__ = [
    "BENCH_BANDS",
    "BENCH_GSD",
    "IMAGE_BANDS",
    "bench_checkpoint",
    "bench_scene",
    "rule_model",
    "tiny_model",
]

logger = logging.getLogger(__name__)

BENCH_GSD = 0.05
"""Ground sample distance of the bench scenes (m)."""
BENCH_BANDS = ("red", "green", "blue", "nir", "ndsm")
"""Bands of the untrained bench checkpoints (the nDSM is derived from the scene's DSM)."""
IMAGE_BANDS = ("red", "green", "blue", "nir")
"""Bands of the bench scene's image (and of :func:`tiny_model`)."""
_STRIP = 512
_BENCH_MEAN = (100.0, 100.0, 100.0, 120.0, 3.0)  # normalisation of the bench models' bands
_BENCH_STD = (50.0, 50.0, 50.0, 50.0, 5.0)


# -- synthetic scene -------------------------------------------------------------------------


def _hash01(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A cheap deterministic hash of integer grids to [0, 1)."""
    x = (a.astype(np.uint64) * np.uint64(0x9E3779B1)) ^ (
        b.astype(np.uint64) * np.uint64(0x85EBCA77)
    )
    x ^= np.uint64(seed * 0x27D4EB2F + 1)
    x = (x ^ (x >> np.uint64(15))) * np.uint64(0x2C1B3C6D)
    x = (x ^ (x >> np.uint64(12))) * np.uint64(0x297A2D39)
    x ^= x >> np.uint64(15)
    return (x & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(1 << 24)


def _synth_strip(r0: int, h: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(r0, r0 + h)[:, None]
    cols = np.arange(size)[None, :]
    cell = 240  # 12 m blocks at 5 cm
    cr, cc = rows // cell, cols // cell
    kind = _hash01(cr, cc, seed)
    inner = (
        ((rows % cell) > 30)
        & ((rows % cell) < cell - 30)
        & ((cols % cell) > 30)
        & ((cols % cell) < cell - 30)
    )
    road = ((rows % (cell * 4)) < 60) | ((cols % (cell * 4)) < 60)
    building = inner & (kind < 0.35) & ~road
    tree = inner & (kind >= 0.35) & (kind < 0.6) & ~road
    noise = _hash01(rows + np.zeros_like(cols), cols + np.zeros_like(rows), seed + 7)
    img = np.empty((4, h, size), dtype=np.uint8)
    base = np.where(road, 120, np.where(building, 170, np.where(tree, 60, 95))).astype(np.float32)
    red = base + 30 * noise + np.where(building, 40, 0)
    green = base + 30 * noise + np.where(tree, 50, np.where(road | building, 0, 35))
    blue = base + 20 * noise
    nir = np.where(tree, 200, np.where(road | building, 70, 160)) + 40 * noise
    for i, band in enumerate((red, green, blue, nir)):
        img[i] = np.clip(band, 0, 255).astype(np.uint8)
    ground = 35.0 + 2.0 * np.sin(rows / 3000.0) + 2.0 * np.cos(cols / 3500.0)
    dsm = ground + np.where(building, 12.0 + 6 * kind, 0.0) + np.where(tree, 8.0 * noise, 0.0)
    return img, dsm.astype(np.float32)


def bench_scene(
    cache: str | os.PathLike[str], size: int, *, seed: int = 0, dsm: bool = True
) -> SceneSpec:
    """A synthetic ``size`` x ``size`` scene at 5 cm, cached under ``cache``.

    Written strip by strip (bounded memory): an RGBIR image (uint8, tiled 512, PackBits
    like Potsdam) and, with ``dsm``, a float32 DSM. Reused when already complete.

    Args:
        cache: Folder for cached scenes.
        size: Scene edge in pixels (>= 64).
        seed: Pattern seed.
        dsm: Also write a DSM (the default bench model reads the derived nDSM).

    Raises:
        InputError: ``size`` below 64.
    """
    if size < 64:
        raise InputError(f"--size {size}: a bench scene needs at least 64 px")
    folder = Path(cache) / f"scene_{size}_s{seed}{'_dsm' if dsm else ''}"
    image, dsm_path, done = folder / "image.tif", folder / "dsm.tif", folder / "done.json"
    spec = SceneSpec(
        id=f"bench_{size}",
        image=image,
        dsm=dsm_path if dsm else None,
        image_bands=IMAGE_BANDS,
    )
    if done.exists():
        return spec
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tf = Affine(BENCH_GSD, 0, 366000.0, 0, -BENCH_GSD, 5808000.0)
    common = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "crs": "EPSG:32633",
        "transform": tf,
    }
    common |= {"tiled": True, "blockxsize": 512, "blockysize": 512, "bigtiff": "if_safer"}
    with contextlib.ExitStack() as stack:
        tmp_img = stack.enter_context(atomic_path(image, overwrite=True))
        di = stack.enter_context(
            rasterio.open(tmp_img, "w", count=4, dtype="uint8", compress="packbits", **common)
        )
        dd = None
        if dsm:
            tmp_dsm = stack.enter_context(atomic_path(dsm_path, overwrite=True))
            dd = stack.enter_context(
                rasterio.open(
                    tmp_dsm, "w", count=1, dtype="float32", compress="lzw", predictor=3, **common
                )
            )
        for r0 in range(0, size, _STRIP):
            h = min(_STRIP, size - r0)
            img, elev = _synth_strip(r0, h, size, seed)
            di.write(img, window=Window(0, r0, size, h))
            if dd is not None:
                dd.write(elev, 1, window=Window(0, r0, size, h))
    done.write_text(json.dumps({"size": size, "seed": seed, "dsm": dsm}))
    logger.info("synthesised a %d px bench scene in %.1fs", size, time.perf_counter() - t0)
    return spec


# -- models ------------------------------------------------------------------------------


def tiny_model(bands: tuple[str, ...] = IMAGE_BANDS, *, seed: int = 0) -> PredictModel:
    """A 1x1-convolution model (fixed seed) for I/O and memory measurements."""
    import torch

    torch.manual_seed(seed)
    module = torch.nn.Conv2d(len(bands), POTSDAM.num_classes, kernel_size=1)
    return PredictModel(
        module=module,
        bands=bands,
        mean=(128.0,) * len(bands),
        std=(64.0,) * len(bands),
        schema=POTSDAM,
        tile_size=512,
        gsd=BENCH_GSD,
        name="tiny",
    )


def rule_model() -> PredictModel:
    """A 1x1 convolution with hand-set weights over :data:`BENCH_BANDS` (costs no compute).

    Height makes buildings and trees, near-infrared makes vegetation, the rest is
    impervious: on the bench scene it draws a land-cover map with the structure of a
    trained model's (objects, not per-pixel noise), so that what the host spends writing it
    is what a real prediction costs. Random 1x1 weights would draw noise, which compresses
    several times slower than any real map.
    """
    import torch

    # logits = W @ normalised (red, green, blue, nir, ndsm) + b, per class of POTSDAM
    w = torch.tensor(
        [
            [0.0, 0.0, 0.0, -2.0, -1.0],  # impervious surfaces
            [1.0, 0.0, 0.0, -1.0, 3.0],  # building
            [0.0, 0.0, 0.0, 2.0, -2.0],  # low vegetation
            [0.0, 0.5, 0.0, 2.0, 1.0],  # tree
            [0.0, 0.0, 0.0, 0.0, 0.0],  # car
            [0.0, 0.0, 0.0, 0.0, 0.0],  # clutter
        ]
    )
    module = torch.nn.Conv2d(len(BENCH_BANDS), POTSDAM.num_classes, kernel_size=1)
    with torch.no_grad():
        module.weight.copy_(w[:, :, None, None])
        assert module.bias is not None
        module.bias.copy_(torch.tensor([0.0, -1.0, 0.0, -1.0, -6.0, -6.0]))
    return PredictModel(
        module=module,
        bands=BENCH_BANDS,
        mean=_BENCH_MEAN,
        std=_BENCH_STD,
        schema=POTSDAM,
        tile_size=512,
        gsd=BENCH_GSD,
        name="rules",
    )


def bench_checkpoint(cache: Path, name: str, tile_size: int) -> Path:
    """An untrained checkpoint of architecture ``name`` with :data:`BENCH_BANDS` (cached)."""
    from geoseg.checkpoint import Checkpoint, save_checkpoint

    path = cache / f"untrained_{name}_{len(BENCH_BANDS)}b_{tile_size}.pt"
    if path.exists():
        return path
    ckpt = Checkpoint.untrained(
        name,
        bands=BENCH_BANDS,
        mean=_BENCH_MEAN,
        std=_BENCH_STD,
        schema=POTSDAM,
        tile_size=tile_size,
        gsd=BENCH_GSD,
        config={"note": "untrained, for benchmarks"},
    )
    save_checkpoint(ckpt, path, overwrite=True)
    return path
