"""Tiny scenes of touching houses with their footprints, for the contact tests (fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from geoseg.raster import SceneSpec
from geoseg.schema import POTSDAM
from tests.conftest import POTSDAM_TF, write_raster

# class colours (R, G, B, IR): impervious, building, low vegetation
COLOURS = {0: (200, 200, 200, 90), 1: (60, 60, 200, 60), 2: (90, 200, 90, 200)}
WALL = (20, 20, 20, 20)  # a dark line where two houses meet: what a model can learn


def _box(tf: Affine, r0: int, r1: int, c0: int, c1: int) -> shapely.Geometry:
    x0, y0 = tf @ (c0, r1)
    x1, y1 = tf @ (c1, r0)
    return shapely.box(x0, y0, x1, y1)


def make_contact_scenes(
    root: Path, *, n: int = 3, size: int = 96, seed: int = 0
) -> tuple[list[SceneSpec], Path]:
    """``n`` scenes ``s0..`` side by side, each with two rows of touching houses.

    Returns the scenes and a GeoPackage of the houses (layer ``buildings``, one polygon each).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    specs, houses = [], []
    for i in range(n):
        tf = POTSDAM_TF @ Affine.translation(i * size, 0)
        lab = np.full((size, size), 2, np.uint8)
        lab[size // 2 - 4 : size // 2 + 4] = 0  # a road
        img = np.zeros((4, size, size), np.float32)
        walls = np.zeros((size, size), bool)
        for r0 in (8, size // 2 + 10):
            r1 = r0 + int(rng.integers(18, 26))
            c = int(rng.integers(4, 12))
            while c < size - 20:
                w = int(rng.integers(12, 22))
                c1 = min(c + w, size - 4)
                lab[r0:r1, c:c1] = 1
                houses.append(_box(tf, r0, r1, c, c1))
                if c1 < size - 20:
                    walls[r0:r1, c1 - 1 : c1 + 1] = True  # the next house starts at c1
                c = c1
        for k, colour in COLOURS.items():
            img[:, lab == k] = np.array(colour, np.float32)[:, None]
        img[:, walls] = np.array(WALL, np.float32)[:, None]
        img = np.clip(img + rng.normal(0, 12, img.shape), 1, 255).astype(np.uint8)
        ip = write_raster(root / f"s{i}_img.tif", img, transform=tf, nodata=0)
        lp = write_raster(root / f"s{i}_lab.tif", POTSDAM.encode(lab), transform=tf)
        specs.append(SceneSpec(f"s{i}", ip, labels=lp))
    fp = root / "houses.gpkg"
    gpd.GeoDataFrame({"id": range(len(houses))}, geometry=houses, crs="EPSG:32633").to_file(
        fp, layer="buildings", engine="pyogrio"
    )
    return specs, fp
