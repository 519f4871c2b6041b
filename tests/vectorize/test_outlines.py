"""geoseg.vectorize._outlines and the bulk paths built on it give GDAL's and GEOS's answers.

The traced outlines are those of ``rasterio.features.shapes`` vertex for vertex; the
vectorized normalization, collinear-vertex removal and border merge are those of
``shapely.normalize``, ``shapely.simplify(g, 0)`` and ``shapely.union_all``; finishing
pieces in bulk gives the features of finishing them one by one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from geoseg.vectorize._clean import drop_collinear
from geoseg.vectorize._features import FeatureContext, LayerTarget, finish, finish_inner
from geoseg.vectorize._outlines import normalize_rings, trace_outlines, trace_rings
from geoseg.vectorize._polygonize import (
    BlockResult,
    Piece,
    label_block,
    merge_pieces,
    polygonize_block,
)
from tests.conftest import write_raster


def _classes(seed: int, shape: tuple[int, int] = (24, 30)) -> np.ndarray:
    """Blocky classes with speckle: holes, pinches (diagonal touches), T-junctions."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, (shape[0] // 3, shape[1] // 3)).repeat(3, 0).repeat(3, 1)
    a[rng.random(a.shape) < 0.15] = rng.integers(0, 3)
    return a.astype(np.uint8)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000), classes=st.sampled_from([(0, 1, 2), (1, 2), (1,)]))
def test_traced_outlines_are_gdals_vertex_for_vertex(seed: int, classes: tuple[int, ...]) -> None:
    labels, _ = label_block(_classes(seed), classes)
    want = {
        int(v): shapely.geometry.shape(g).wkt
        for g, v in rasterio.features.shapes(
            labels, mask=labels > 0, connectivity=4, transform=Affine.translation(7, 5)
        )
    }
    ids, polys = trace_outlines(labels, col_off=7, row_off=5)
    assert dict(zip(ids.tolist(), [p.wkt for p in polys], strict=True)) == want
    assert all(shapely.is_valid(polys))


def test_a_hole_touching_the_shell_is_a_ring_of_its_own() -> None:
    a = np.array(
        [[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]],
        dtype=np.int32,
    )
    _, polys = trace_outlines(a)
    shell, hole = "(1 1, 1 4, 3 4, 3 3, 4 3, 4 1, 1 1)", "(2 2, 3 2, 3 3, 2 3, 2 2)"
    assert polys[0].wkt == f"POLYGON ({shell}, {hole})"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 100_000))
def test_normalized_rings_are_shapelys(seed: int) -> None:
    labels, _ = label_block(_classes(seed, (36, 36)), (0, 1, 2))
    rings = trace_rings(labels, col_off=3, row_off=11)
    keep = np.random.default_rng(seed).random(len(rings.labels)) < 0.7
    got = normalize_rings(rings.select(keep)).polygons()
    want = shapely.normalize(rings.polygons()[keep])
    assert [g.wkt for g in got] == [w.wkt for w in want]


def _block_pieces(path: Path, shape: tuple[int, int], block: int) -> list[list[Piece]]:
    """The pieces of every block of ``path``, as records (block by block)."""
    out = []
    for r in range(0, shape[0], block):
        for c in range(0, shape[1], block):
            w = Window(c, r, min(block, shape[1] - c), min(block, shape[0] - r))
            res, _ = polygonize_block(str(path), w, row=0, col=0, classes=(1,), ignore=())
            out.append(list(res.pieces.values()))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merging_clean_pieces_is_union_all_without_collinear_vertices(
    tmp_path: Path, seed: int
) -> None:
    a = _classes(seed, (48, 48))
    a[:, 22:26] = 1  # a band across both block borders: its pieces hold holes all around
    a[10:38, 4] = 1  # and a long one
    path = write_raster(tmp_path / "c.tif", a)
    members = [p for ps in _block_pieces(path, a.shape, 24) for p in ps]
    # The pieces of the band's component, from all four blocks.
    band = shapely.box(22, 0, 26, 48)
    group = [p for p in members if p.geom.intersects(band)]
    assert len(group) >= 4
    union = shapely.union_all([p.geom for p in group])
    want = shapely.normalize(shapely.simplify(union, 0.0, preserve_topology=False)).wkt
    merged = merge_pieces(group)
    assert merged.clean and merged.count == sum(p.count for p in group)
    assert shapely.normalize(merged.geom).wkt == want
    assert shapely.normalize(drop_collinear(np.asarray([union]))[0]).wkt == want


def test_finishing_in_bulk_gives_the_features_of_finishing_records(tmp_path: Path) -> None:
    a = _classes(5, (60, 45))
    rng = np.random.default_rng(5)
    tf = Affine(0.5, 0, 360_000.0, 0, -0.5, 5_810_000.0)
    path = write_raster(tmp_path / "c.tif", a, transform=tf)
    probs = write_raster(
        tmp_path / "p.tif", rng.integers(0, 256, (3, *a.shape), dtype=np.uint8), transform=tf
    )
    ctx = FeatureContext(
        transform=tf,
        stride=a.shape[1] + 1,
        geographic=False,
        unit=1.0,
        tol_px=0.0,
        hole_px=2.5,
        min_area={1: 0.5, 2: 0.0},
        has_prob=True,
        targets={
            1: LayerTarget("buildings", 1, "building", (0, 0, 255)),
            2: LayerTarget("low_vegetation", 2, "low_vegetation", (0, 255, 255)),
        },
        size=(a.shape[1], a.shape[0]),
    )
    whole = Window(0, 0, a.shape[1], a.shape[0])

    def polygonize(grid: tuple[int, int] | None) -> BlockResult:
        res, _ = polygonize_block(
            str(path),
            whole,
            row=0,
            col=0,
            classes=(1, 2),
            ignore=(),
            prob_path=str(probs),
            nodes_needed=False,
            grid=grid,
        )
        return res

    bulk, records = polygonize((1, 1)), polygonize(None)
    assert bulk.inner is not None and not bulk.pieces
    assert len(bulk.inner.cls) == len(records.pieces) > 20
    got = finish_inner(bulk.inner, ctx)
    want = finish(list(records.pieces.values()), ctx)
    assert [b[0] for b in got] == [b[0] for b in want]
    for (_, g_wkb, g_val), (_, w_wkb, w_val) in zip(got, want, strict=True):
        assert g_wkb.tolist() == w_wkb.tolist()
        assert g_val.keys() == w_val.keys()
        for k in g_val:
            np.testing.assert_array_equal(g_val[k], w_val[k])
