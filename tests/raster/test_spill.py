"""The DSM spill: block reads from the decoded copy equal reads from the file; it is bounded,
skipped without room, dropped on a failed write, and never left behind."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

import geoseg.raster.spill as spill_mod
from geoseg.raster import SceneSpec
from geoseg.raster.ground import clear_ground_cache
from geoseg.raster.spill import KEEP_SPILLS, clear_spills, find_spill
from tests.conftest import write_raster

H, W = 4150, 64  # three ground strips of 2040 rows at 5 cm
BANDS = ("red", "green", "blue", "nir", "ndsm")
WINDOWS = [
    Window(0, 0, 64, 64),
    Window(5, 2000, 40, 100),  # across the first strip boundary
    Window(-10, 4100, 90, 80),  # past three edges: boundless
    Window(0, 1900, 64, 2200),  # over all three strips
]


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    clear_ground_cache()
    clear_spills()
    yield tmp
    clear_ground_cache()
    clear_spills()


def scene(tmp_path: Path, name: str = "s") -> SceneSpec:
    rng = np.random.default_rng(1)
    img = write_raster(
        tmp_path / f"{name}_img.tif", rng.integers(1, 255, (4, H, W), dtype=np.uint8)
    )
    dsm = (30 + rng.random((H, W)) * 10).astype(np.float32)
    dsm[100:140, 10:30] += 12  # a building
    dsm[2030:2050, :5] = -9999  # nodata across a strip boundary
    dsm[3000, 7] = np.nan
    path = write_raster(
        tmp_path / f"{name}_dsm.tif", dsm, nodata=-9999, compress="lzw", tiled=True,
        blockxsize=64, blockysize=64,
    )  # fmt: skip
    return SceneSpec(name, img, dsm=path)


def reads(spec: SceneSpec) -> list[tuple]:
    out = []
    with spec.open() as sc:
        for win in WINDOWS:
            raw = sc.read_raw(win, bands=BANDS, derive_ndsm=False)
            nd = sc.read_raw(win, bands=BANDS, derive_ndsm=True)
            dsm = sc.read_raw(win, bands=("dsm",))
            out.append((raw, nd, dsm))
    return out


def spill_dirs(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("geoseg-dsm-*"))


def assert_same(a: list[tuple], b: list[tuple]) -> None:
    for (raw_a, nd_a, dsm_a), (raw_b, nd_b, dsm_b) in zip(a, b, strict=True):
        for x, y in ((raw_a, raw_b), (nd_a, nd_b), (dsm_a, dsm_b)):
            assert np.array_equal(x.valid, y.valid)
            assert x.sources == y.sources
            v = x.valid
            assert np.array_equal(x.elevation[:, v], y.elevation[:, v])
            assert np.array_equal(x.image[:, v], y.image[:, v])
        assert np.array_equal(raw_a.ground.rows, raw_b.ground.rows)


def test_reads_through_the_spill_equal_reads_of_the_file(tmp_path: Path, tmpdir_: Path) -> None:
    spec = scene(tmp_path)
    spilled = reads(spec)  # the first nDSM read estimates the ground and spills the DSM
    with spec.open() as sc:
        spill = find_spill(sc._dsm_key())
    assert spill is not None and spill.complete
    assert len(list(spill.folder.glob("*.npy"))) == 3
    assert spill_dirs(tmpdir_) == [spill.folder]
    assert not spilled[3][0].valid[130:150, :5].any()  # nodata stays invalid through the spill
    assert spilled[3][0].valid[130:150, 5:].all()
    clear_spills()
    assert spill_dirs(tmpdir_) == []
    assert_same(spilled, reads(spec))  # from the file, the ground still cached


def test_no_room_or_a_failed_write_means_no_spill_and_the_same_reads(
    tmp_path: Path, tmpdir_: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = scene(tmp_path)
    clear_ground_cache()
    with monkeypatch.context() as m:
        m.setattr(spill_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
        no_room = reads(spec)
        with spec.open() as sc:
            assert find_spill(sc._dsm_key()) is None
    assert spill_dirs(tmpdir_) == []

    clear_ground_cache()
    calls = []

    def failing_save(path, arr, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.asanyarray(arr))

    with monkeypatch.context() as m:
        m.setattr(spill_mod.np, "save", failing_save)
        failed = reads(spec)
    with spec.open() as sc:
        assert find_spill(sc._dsm_key()) is None
    assert len(calls) == 2 and spill_dirs(tmpdir_) == []
    assert_same(no_room, failed)
    clear_ground_cache()
    assert_same(no_room, reads(spec))  # and with a spill


def test_spills_are_bounded_and_a_killed_process_spill_is_removed(
    tmp_path: Path, tmpdir_: Path
) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    orphan = tmpdir_ / f"geoseg-dsm-{proc.pid}-x"
    orphan.mkdir()
    (orphan / "rows_0.npy").write_bytes(b"x")
    for i in range(KEEP_SPILLS + 1):
        spec = scene(tmp_path, f"s{i}")
        with spec.open() as sc:
            sc.read_raw(Window(0, 0, 8, 8), bands=BANDS, derive_ndsm=False)
        assert not orphan.exists()
        assert len(spill_dirs(tmpdir_)) == min(i + 1, KEEP_SPILLS)
