"""Splitting touching buildings into instances: by height steps and by a contact band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine

from geoseg.vectorize._instances import SplitSource, split_labels, split_piece
from geoseg.vectorize._polygonize import Piece
from tests.conftest import write_raster


def _terrace(
    heights: list[float], unit: int = 30, depth: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """A mask of attached units side by side (with a margin) and their flat roof heights."""
    h, w = depth + 10, unit * len(heights) + 10
    mask = np.zeros((h, w), bool)
    height = np.zeros((h, w), np.float32)
    for i, z in enumerate(heights):
        mask[5 : 5 + depth, 5 + i * unit : 5 + (i + 1) * unit] = True
        height[5 : 5 + depth, 5 + i * unit : 5 + (i + 1) * unit] = z
    return mask, height


def test_without_a_signal_a_region_stays_whole() -> None:
    mask, _ = _terrace([6.0, 9.0])
    labels, n = split_labels(mask)
    assert n == 1 and np.array_equal(labels, mask.astype(np.int32))


def test_height_steps_split_units_exactly_at_the_walls() -> None:
    mask, height = _terrace([6.0, 9.0, 12.5, 10.0])
    labels, n = split_labels(mask, height=height, height_step=1.5, min_part_px=100)
    assert n == 4
    for i in range(4):  # each unit is one label, whole, and nothing else
        unit = labels[5:45, 5 + i * 30 : 5 + (i + 1) * 30]
        assert len(np.unique(unit)) == 1
        assert int((labels == unit[0, 0]).sum()) == 30 * 40


def test_equal_heights_and_small_steps_do_not_split() -> None:
    mask, height = _terrace([6.0, 6.0, 7.0])  # a 1 m step is under the 1.5 m default
    _, n = split_labels(mask, height=height, min_part_px=100)
    assert n == 1


def test_a_gabled_roof_ridge_is_not_a_step() -> None:
    mask, height = _terrace([0.0])
    rows = np.arange(height.shape[0], dtype=np.float32)[:, None]
    # 5 cm pixels, 40 degrees: 0.042 m per pixel up to the ridge at row 25, then down
    height[:] = np.where(mask, 6.0 + 0.042 * (20 - np.abs(rows - 25)), 0.0)
    _, n = split_labels(mask, height=height, min_part_px=100)
    assert n == 1


def test_a_roof_vent_is_not_a_building() -> None:
    mask, height = _terrace([6.0, 6.0])
    height[20:24, 20:24] = 9.0  # 4 x 4 px box, 3 m higher
    labels, n = split_labels(mask, height=height, min_part_px=200)
    assert n == 1 and labels.max() == 1


def test_unknown_heights_never_split_a_building() -> None:
    mask, height = _terrace([6.0, 10.0])
    height[:, 15:20] = np.nan  # a band of missing DSM across the first unit
    labels, n = split_labels(mask, height=height, min_part_px=100)
    assert n == 2 and np.all(labels[mask] > 0)
    assert len(np.unique(labels[5:45, 5:35])) == 1
    height[:, 30:40] = np.nan  # the step itself unknown: nothing to split on
    _, n = split_labels(mask, height=height, min_part_px=100)
    assert n == 1


def test_a_contact_band_splits_houses_of_equal_height() -> None:
    mask, _ = _terrace([6.0, 6.0, 6.0])
    contact = np.zeros(mask.shape, np.uint8)
    for x in (35, 65):  # the walls, blurred over 4 px as a network would
        contact[:, x - 2 : x + 2] = 230
    labels, n = split_labels(mask, contact=contact, min_part_px=100)
    assert n == 3
    for i in range(3):
        assert len(np.unique(labels[5:45, 8 + i * 30 : 2 + (i + 1) * 30])) == 1
    _, n_weak = split_labels(mask, contact=contact, contact_threshold=0.95, min_part_px=100)
    assert n_weak == 1  # under the threshold: no border


def test_split_piece_tiles_the_piece_and_marks_the_wall_nodes(tmp_path: Path) -> None:
    mask, height = _terrace([6.0, 9.0, 12.0])
    _, w = mask.shape
    dsm = write_raster(
        tmp_path / "dsm.tif", height[None], transform=Affine(0.05, 0, 0, 0, -0.05, 5)
    )
    geom = shapely.box(5, 5, 95, 45)  # the mask's pixels, pixel coordinates
    piece = Piece(
        cls=1, geom=geom, count=int(mask.sum()), prob_sum=1000.0, nodes=np.zeros(0, np.int64), row=0
    )
    parts = split_piece(
        piece, SplitSource(cls=1, height=str(dsm), contact=None, min_part_px=100), stride=w + 1
    )
    assert len(parts) == 3
    union = shapely.union_all([p.geom for p in parts])
    assert shapely.equals(union, geom)
    assert sum(p.geom.area for p in parts) == pytest.approx(geom.area)
    assert sum(p.count for p in parts) == piece.count
    assert sum(p.prob_sum for p in parts) == pytest.approx(1000.0)
    # the corners where a wall meets the outline are nodes of every part
    for x in (35, 65):
        for y in (5, 45):
            assert y * (w + 1) + x in set(parts[0].nodes.tolist())
    assert max(p.geom.bounds[2] - p.geom.bounds[0] for p in parts) == 30


def test_split_piece_keeps_a_piece_without_signal(tmp_path: Path) -> None:
    _, height = _terrace([6.0, 6.0])
    dsm = write_raster(
        tmp_path / "dsm.tif", height[None], transform=Affine(0.05, 0, 0, 0, -0.05, 5)
    )
    piece = Piece(
        cls=1,
        geom=shapely.box(5, 5, 65, 45),
        count=2400,
        prob_sum=0.0,
        nodes=np.zeros(0, np.int64),
        row=0,
    )
    out = split_piece(
        piece, SplitSource(cls=1, height=str(dsm), contact=None, min_part_px=100), stride=71
    )
    assert out == [piece]


def test_a_dsm_off_the_class_grid_is_refused_before_any_output(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    classes = write_raster(tmp_path / "c.tif", np.ones((40, 40), np.uint8), nodata=255)
    dsm = write_raster(tmp_path / "dsm.tif", np.zeros((40, 41), np.float32))
    out = tmp_path / "v.gpkg"
    res = CliRunner().invoke(cli, ["vectorize", str(classes), "-o", str(out), "--dsm", str(dsm)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"{dsm}: DSM grid" in lines[0] and "gdalwarp" in lines[0]
    assert sorted(tmp_path.iterdir()) == sorted([classes, dsm])  # nothing written
