"""Faults: a full disk, a SIGKILL at several points, a Dask worker killed mid-run.

A full disk is simulated by making a writer raise ``OSError(ENOSPC)`` part way (GDAL's own
way, a generic write error on a device with no room left, too): the command fails with one
line naming the file, "no space left on device", and how to go on; nothing corrupt is left as
a final output (no temporary file, the final file absent or the previous one intact), and the
same command, run again once there is room, gives the outputs of an uninterrupted run.

A killed command (``slow``) is run again (``train`` with ``--resume``) and gives outputs
identical to an uninterrupted run: the same bytes, or for GeoPackages the same layers (their
bytes hold times) and for training the same weights and metrics (without timings).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import rasterio
import rasterio.shutil
import yaml

from tests.hostile.helpers import run, snapshot
from tests.pipeline.helpers import gpkg_digest

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
FIX = "free space and run again (finished work is kept)"


def _full(path: object) -> OSError:
    """The OSError a write on a full device raises."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _one_line(output: str) -> str:
    errors = [ln for ln in output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def _hidden(root: Path) -> list[str]:
    """Temporary names (``.x.partial.tif``, staging folders) anywhere under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def _digests(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every output under ``root``: GeoPackages by their layers, other files by their bytes."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file() and not rel.startswith(".") and "/." not in rel and p.name not in skip:
            out[rel] = gpkg_digest(p) if p.suffix == ".gpkg" else snapshot(p)[str(p)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Potsdam scene of 128 px, a checkpoint (tile 64) and a class raster."""
    from geoseg.synth import synthesize
    from tests.pipeline.helpers import make_checkpoint

    root = tmp_path_factory.mktemp("faults")
    synthesize(root / "data", scenes=1, size=128, seed=3)
    make_checkpoint(root / "model.pt", tile_size=64)
    return root


def predict_args(world: Path, out: Path) -> list[object]:
    return [
        "predict", world / "data", "-m", world / "model.pt", "-o", out,
        "--device", "cpu", "--workers", 1, "--overlap", 16, "--probabilities",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def predicted(world: Path) -> Path:
    """An uninterrupted prediction: the reference."""
    out = world / "maps-ref"
    rc, output, exc = run(*predict_args(world, out))
    assert (rc, exc) == (0, None), output
    return out


# -- a full disk ---------------------------------------------------------------------------------


def test_disk_full_in_the_cog_writer_keeps_finished_work_and_resumes(
    world: Path, predicted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "maps"
    real_copy = rasterio.shutil.copy

    def copy_then_full(src: Any, dst: Any, **kw: Any) -> None:
        Path(dst).write_bytes(b"II*\x00 half a COG")  # what a full disk leaves
        raise _full(dst)

    monkeypatch.setattr(rasterio.shutil, "copy", copy_then_full)
    rc, output, exc = run(*predict_args(world, out))
    assert exc is None and rc == 1, output
    line = _one_line(output)
    assert re.search(
        r"/maps/2_10_(classes|probs)\.tif: no space left on device while writing it", line
    )
    assert FIX in line and ".partial" not in line, line
    assert not list(out.glob("*.tif")), "no final raster appears"
    assert not list(out.rglob("*.stage")) and not list(out.rglob("*.partial.tif"))
    assert [p.name for p in out.iterdir()] == [".2_10.partial"], "the finished blocks are kept"

    monkeypatch.setattr(rasterio.shutil, "copy", real_copy)
    rc, output, exc = run(*predict_args(world, out))
    assert (rc, exc) == (0, None), output
    assert "resumed" in output
    assert _digests(out, skip=("2_10.json",)) == _digests(predicted, skip=("2_10.json",))
    assert _hidden(out) == []


def test_disk_full_replacing_an_output_leaves_the_previous_one(
    world: Path, predicted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "maps"
    shutil.copytree(predicted, out)
    before = snapshot(out)
    real_copy = rasterio.shutil.copy
    calls: list[object] = []

    def full_on_second(src: Any, dst: Any, **kw: Any) -> None:
        if kw.get("driver") == "COG":  # not the VRT that hands a COG its overviews
            calls.append(dst)
        if len(calls) == 2 and kw.get("driver") == "COG":  # the second raster, after the first
            Path(dst).write_bytes(b"II*\x00")
            raise _full(dst)
        real_copy(src, dst, **kw)

    monkeypatch.setattr(rasterio.shutil, "copy", full_on_second)
    rc, output, exc = run(*predict_args(world, out), "--overwrite")
    assert exc is None and rc == 1, output
    line = _one_line(output)
    second = Path(str(calls[1]))
    final = second.name.split(".")[1] + ".tif"
    assert f"{out / final}: no space left on device" in line, line
    after = snapshot(out)
    finals = {k: v for k, v in after.items() if "/." not in k}
    assert set(finals) <= set(before), sorted(set(finals) - set(before))
    changed = [k for k in finals if finals[k] != before[k] and not k.endswith(".json")]
    # Each output is either the previous file or the new complete one, never a torn file.
    for k in changed:
        with rasterio.open(k) as ds:
            ds.read()
    assert not [k for k in after if k.endswith(".partial.tif") or ".stage" in k]


def test_gdal_write_error_on_a_full_device_is_named_and_others_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.errors import RasterioIOError

    from geoseg.errors import OutputError
    from geoseg.grid import GeoBox
    from geoseg.raster import writers
    from geoseg.schema import POTSDAM

    tf = Affine(0.05, 0, 366000, 0, -0.05, 5808000)
    box = GeoBox(width=32, height=32, transform=tf, crs=CRS.from_epsg(32633))
    blocks = [(rasterio.windows.Window(0, 0, 32, 32), np.zeros((32, 32), np.uint8))]

    def write_error(src: Any, dst: Any, **kw: Any) -> None:
        Path(dst).write_bytes(b"II*\x00")
        raise RasterioIOError("TIFFAppendToStrip:Write error at scanline 0")

    monkeypatch.setattr(rasterio.shutil, "copy", write_error)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(writers.shutil, "disk_usage", lambda p: usage._replace(free=4096))
    with pytest.raises(OutputError, match="c.tif: no space left on device while writing it"):
        writers.write_classes(tmp_path / "c.tif", blocks, geobox=box, schema=POTSDAM)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(writers.shutil, "disk_usage", lambda p: usage._replace(free=1 << 40))
    with pytest.raises(RasterioIOError, match="Write error"):  # room left: not disguised
        writers.write_classes(tmp_path / "c.tif", blocks, geobox=box, schema=POTSDAM)
    assert list(tmp_path.iterdir()) == []


def tile_args(world: Path, out: Path) -> list[object]:
    return ["tile", world / "data", "-o", out, "--size", 32, "--overlap", 0, "--workers", 1]


def test_disk_full_in_the_chip_writer_keeps_complete_chips_and_resumes(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = tmp_path / "ref"
    rc, output, exc = run(*tile_args(world, ref))
    assert (rc, exc) == (0, None), output
    real_open = rasterio.open
    written: list[str] = []

    def open_until_full(path: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        if mode == "w":
            written.append(str(path))
            if len(written) == 6:  # part way
                Path(path).write_bytes(b"II*\x00")
                raise _full(path)
        return real_open(path, mode, *args, **kw)

    store = tmp_path / "store"
    monkeypatch.setattr(rasterio, "open", open_until_full)
    rc, output, exc = run(*tile_args(world, store))
    assert exc is None and rc == 1, output
    line = _one_line(output)
    chip = Path(written[5])
    final = chip.name.split(".")[1] + ".tif"
    assert f"{chip.parent / final}: no space left on device while writing it" in line, line
    assert FIX in line
    assert _hidden(store) == []
    kept = sorted(store.rglob("*_r*_c*.tif"))
    assert 5 <= len(kept) < len(written), "the chips finished before the failure are kept"
    for c in kept:
        with real_open(c) as ds:
            ds.read()

    monkeypatch.setattr(rasterio, "open", real_open)
    rc, output, exc = run(*tile_args(world, store))
    assert (rc, exc) == (0, None), output
    assert f"{len(kept)} already complete" in output, output
    assert _digests(store) == _digests(ref)
    assert _hidden(store) == []


def vectorize_args(predicted: Path, out: Path) -> list[object]:
    return [
        "vectorize", predicted / "2_10_classes.tif", "-o", out, "--centerlines",
        "--probabilities", predicted / "2_10_probs.tif", "--block-size", 64,
    ]  # fmt: skip


def test_disk_full_in_the_geopackage_writer_leaves_the_previous_file(
    predicted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyogrio.raw

    ref = tmp_path / "ref.gpkg"
    rc, output, exc = run(*vectorize_args(predicted, ref))
    assert (rc, exc) == (0, None), output
    out = tmp_path / "out" / "v.gpkg"
    out.parent.mkdir()
    out.write_bytes(b"the previous GeoPackage")
    # the writer hands each layer to GDAL as Arrow; the second layer meets a full disk
    real_write = pyogrio.raw.write_arrow
    calls: list[str] = []

    def write_until_full(table: Any, path: str, *args: Any, **kw: Any) -> Any:
        calls.append(path)
        if len(calls) == 2:
            raise _full(path)
        return real_write(table, path, *args, **kw)

    monkeypatch.setattr(pyogrio.raw, "write_arrow", write_until_full)
    rc, output, exc = run(*vectorize_args(predicted, out), "--overwrite")
    assert exc is None and rc == 1, output
    line = _one_line(output)
    assert f"{out}: no space left on device while writing it; {FIX}" in line, line
    assert out.read_bytes() == b"the previous GeoPackage"
    assert _hidden(out.parent) == []

    monkeypatch.setattr(pyogrio.raw, "write_arrow", real_write)
    rc, output, exc = run(*vectorize_args(predicted, out), "--overwrite")
    assert (rc, exc) == (0, None), output
    assert gpkg_digest(out) == gpkg_digest(ref)
    assert _hidden(out.parent) == []


def test_device_full_message_names_the_final_file() -> None:
    from geoseg.cli.main import device_full_message

    tmp = "/data/maps/.2_10_classes.0123abcd.partial.tif"
    assert device_full_message(_full(tmp)) == (
        f"/data/maps/2_10_classes.tif: no space left on device while writing it; {FIX}"
    )
    assert (
        device_full_message(ENOSPC) == f"no space left on device while writing the outputs; {FIX}"
    )
    eio = OSError(errno.EIO, "Input/output error", "/x/m.pt")
    assert (
        device_full_message(eio) == f"/x/m.pt: an I/O error on the device while writing it; {FIX}"
    )
    assert device_full_message(OSError(errno.ENOENT, "No such file", "/x")) is None
    assert device_full_message(OSError("numpy short write")) is None


TRAIN = ["--model", "fcn_resnet18", "--chip-size", 32, "--epochs", 2, "--batch-size", 4]
TRAIN += ["--lr", 3e-3, "--val-scenes", "s2", "--device", "cpu", "--seed", 0, "--workers", 0]


def _same_training(a: Path, b: Path) -> None:
    """The same weights (checkpoint and resume state) and metrics, timings aside."""
    from geoseg.checkpoint import load_checkpoint
    from geoseg.train import log_path_for
    from tests.train_helpers import rows, same_weights, without_timing

    assert same_weights(load_checkpoint(a).state_dict, load_checkpoint(b).state_dict)
    assert without_timing(rows(log_path_for(a))) == without_timing(rows(log_path_for(b)))


@pytest.mark.usefixtures("one_thread")
def test_disk_full_saving_the_checkpoint_then_resume_gives_the_same_model(
    train_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    ref = tmp_path / "ref" / "m.pt"
    rc, output, exc = run("train", train_store, "-o", ref, *TRAIN)
    assert (rc, exc) == (0, None), output
    out = tmp_path / "out" / "m.pt"
    real_save = torch.save
    saved: list[str] = []

    def save_until_full(obj: Any, f: Any, *args: Any, **kw: Any) -> None:
        saved.append(str(f))
        if len(saved) > 2 and str(f).endswith(".partial.pt"):  # a checkpoint of epoch 2
            Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise _full(f)
        real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", save_until_full)
    rc, output, exc = run("train", train_store, "-o", out, *TRAIN)
    assert exc is None and rc == 1, output
    line = _one_line(output)
    assert f"{out}: no space left on device while writing it; {FIX}" in line, line
    assert _hidden(out.parent) == []
    monkeypatch.setattr(torch, "save", real_save)
    rc, output, exc = run("train", train_store, "-o", out, *TRAIN, "--resume")
    assert (rc, exc) == (0, None), output
    _same_training(out, ref)
    assert _hidden(out.parent) == []


# -- SIGKILL at several points, then the same command again (slow) ------------------------------

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "geoseg.cli", *(str(a) for a in args)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _kill_when(cmd: list[str], trigger: Callable[[], bool], delay: float, log: Path) -> int:
    """Start ``cmd``; once ``trigger()`` holds, wait ``delay`` s and SIGKILL it.

    Returns:
        The exit status: ``-SIGKILL`` when killed, else the status it finished with first.
    """
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=f, env=_env())
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and not trigger():
                assert time.monotonic() < deadline, f"timed out: {cmd}"
                time.sleep(0.01)
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            return proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _again(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` to the end; it must succeed."""
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr


def _glob(root: Path, pattern: str) -> Callable[[], bool]:
    return lambda: any(root.glob(pattern))


def _leftovers_are_a_known_gap(leftovers: dict[str, list[str]], where: str) -> None:
    """Temporaries a SIGKILL left that the next run did not clean: reported, not hidden."""
    left = {k: v for k, v in leftovers.items() if v}
    if left:
        pytest.xfail(f"{where}: the rerun leaves the killed run's temporaries: {left}")


@pytest.fixture(scope="module")
def big_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1536 px class raster of Voronoi cells: a few seconds of vectorizing."""
    import numpy as np

    from tests.conftest import write_raster
    from tests.train_helpers import voronoi_labels

    root = tmp_path_factory.mktemp("big")
    labels = voronoi_labels(np.random.default_rng(4), 1536, cells=300)
    return write_raster(root / "classes.tif", labels, nodata=255, tiled=True)


@pytest.mark.slow
def test_sigkill_vectorize_at_several_points_then_the_same_command(
    big_classes: Path, tmp_path: Path
) -> None:
    args = ["vectorize", big_classes, "--centerlines", "--regularize", "--block-size", 256]
    ref = tmp_path / "ref.gpkg"
    t0 = time.monotonic()
    _again(_cli(*args, "-o", ref), tmp_path / "ref.log")
    took = time.monotonic() - t0  # the whole command, start-up included
    # Kill points relative to this machine's speed, so that they land before the end
    points = {
        "a third of the way": (lambda: True, took / 3),
        "the GeoPackage appears": (None, 0.0),
        "half way": (lambda: True, took / 2),
    }
    killed, leftovers = 0, {}
    for i, (name, (trigger, delay)) in enumerate(points.items()):
        out = tmp_path / f"k{i}"
        out.mkdir()
        cmd = _cli(*args, "-o", out / "v.gpkg")
        rc = _kill_when(cmd, trigger or _glob(out, ".v.*"), delay, tmp_path / f"k{i}.log")
        if rc == -signal.SIGKILL and not (out / "v.gpkg").exists():  # else: killed on exit
            killed += 1
            _again(cmd, tmp_path / f"r{i}.log")
        assert gpkg_digest(out / "v.gpkg") == gpkg_digest(ref), name
        leftovers[name] = _hidden(out)
    assert killed >= 2, "the kills must land before the end"
    _leftovers_are_a_known_gap(leftovers, "vectorize (geoseg/vectorize/_run.py)")


@pytest.mark.slow
def test_sigkill_train_at_several_points_then_resume(train_store: Path, tmp_path: Path) -> None:
    args = ["train", train_store, *TRAIN[:4], "--epochs", 3, *TRAIN[6:]]
    ref = tmp_path / "ref" / "m.pt"
    _again(_cli(*args, "-o", ref), tmp_path / "ref.log")
    points = {
        "saving the first checkpoint": (".m.*.partial.pt", 0.0),
        "after epoch 1": ("m.pt.resume", 0.0),
        "in a later epoch": ("m.pt.resume", 0.8),
    }
    killed, leftovers = 0, {}
    for i, (name, (pattern, delay)) in enumerate(points.items()):
        out = tmp_path / f"k{i}"
        out.mkdir()
        cmd = _cli(*args, "-o", out / "m.pt")
        rc = _kill_when(cmd, _glob(out, pattern), delay, tmp_path / f"k{i}.log")
        if rc == -signal.SIGKILL:
            killed += 1
            # README: an interrupted run continues with --resume; with no state saved yet,
            # the command says to run without it.
            resume = ["--resume"] if (out / "m.pt.resume").exists() else []
            _again([*cmd, *resume], tmp_path / f"r{i}.log")
        _same_training(out / "m.pt", ref)
        leftovers[name] = _hidden(out)
    assert killed >= 2, "the kills must land before the end"
    _leftovers_are_a_known_gap(leftovers, "train (geoseg/train, geoseg/checkpoint.py)")


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic Potsdam scene of 512 px."""
    from geoseg.synth import synthesize

    root = tmp_path_factory.mktemp("big-scene")
    synthesize(root / "data", scenes=1, size=512, seed=6)
    return root / "data"


@pytest.mark.slow
def test_sigkill_tile_at_several_points_gives_the_same_store(
    big_scene: Path, tmp_path: Path
) -> None:
    args = ["tile", big_scene, "--size", 64, "--overlap", 16, "--workers", 2]
    ref = tmp_path / "ref"
    rc, output, exc = run(*args, "-o", ref)
    assert (rc, exc) == (0, None), output
    n = len(list(ref.rglob("*_r*_c*.tif")))

    def chips(out: Path, k: int) -> Callable[[], bool]:
        return lambda: len(list(out.rglob("*_r*_c*.tif"))) >= k

    points = {"first chip": (1, 0.0), "part way": (n // 3, 0.0), "half a second in": (1, 0.5)}
    killed = 0
    for i, (name, (k, delay)) in enumerate(points.items()):
        out = tmp_path / f"k{i}"
        cmd = _cli(*args, "-o", out)
        rc = _kill_when(cmd, chips(out, k), delay, tmp_path / f"k{i}.log")
        if rc == -signal.SIGKILL:
            killed += 1
            _again(cmd, tmp_path / f"r{i}.log")
        assert _digests(out) == _digests(ref), name
        assert _hidden(out) == [], name
    assert killed >= 2, "the kills must land before the end"


@pytest.mark.slow
def test_sigkill_predict_at_several_points_gives_the_same_rasters(
    big_scene: Path, world: Path, tmp_path: Path
) -> None:
    args = ["predict", big_scene, "-m", world / "model.pt", "--device", "cpu", "--workers", 1]
    args += ["--overlap", 16, "--block-size", 128, "--probabilities"]
    ref = tmp_path / "ref"
    _again(_cli(*args, "-o", ref), tmp_path / "ref.log")
    points = {
        "first block": (".2_10.partial/b_*", 0.0),
        "later": (".2_10.partial/b_*", 1.0),
        "writing the rasters": (".*.partial.tif", 0.0),
    }
    killed, leftovers = 0, {}
    for i, (name, (pattern, delay)) in enumerate(points.items()):
        out = tmp_path / f"k{i}"
        cmd = _cli(*args, "-o", out)
        rc = _kill_when(cmd, _glob(out, pattern), delay, tmp_path / f"k{i}.log")
        if rc == -signal.SIGKILL and (out / ".2_10.partial").exists():  # else: killed on exit
            killed += 1
            _again(cmd, tmp_path / f"r{i}.log")
        assert _digests(out, skip=("2_10.json",)) == _digests(ref, skip=("2_10.json",)), name
        leftovers[name] = _hidden(out)
    assert killed >= 2, "the kills must land before the end"
    _leftovers_are_a_known_gap(leftovers, "predict (geoseg/predict)")


@pytest.mark.slow
def test_sigkill_run_at_several_points_then_the_same_command(
    big_scene: Path, world: Path, tmp_path: Path
) -> None:
    from tests.pipeline.helpers import product_digests

    def job(out: Path) -> Path:
        path = tmp_path / f"{out.name}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "inputs": [{"potsdam": str(big_scene)}],
                    "model": str(world / "model.pt"),
                    "output": str(out),
                    "workers": 1,
                    "steps": {
                        "predict": {"tile_size": 64, "overlap": 16, "block_size": 128},
                        "vectorize": {"classes": ["building", "road"]},
                    },
                }
            )
        )
        return path

    ref = tmp_path / "ref"
    _again(_cli("run", job(ref)), tmp_path / "ref.log")
    points = {
        "predicting": ("maps/.2_10.partial/b_*", 0.3),
        "vectorizing": ("vectors/*", 0.0),
        "two seconds in": ("manifest.json", 2.0),
    }
    killed = 0
    for i, (name, (pattern, delay)) in enumerate(points.items()):
        out = tmp_path / f"k{i}"
        cmd = _cli("run", job(out))
        rc = _kill_when(cmd, _glob(out, pattern), delay, tmp_path / f"k{i}.log")
        if rc == -signal.SIGKILL:
            killed += 1
            _again(cmd, tmp_path / f"r{i}.log")
        assert product_digests(out) == product_digests(ref), name
        assert _hidden(out) == [], name
    assert killed >= 2, "the kills must land before the end"


# -- a Dask worker killed mid-run (slow) ---------------------------------------------------------


@pytest.mark.slow
def test_a_killed_dask_worker_of_predict_costs_at_most_a_clean_failure_and_a_rerun(
    big_scene: Path, world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import Client, LocalCluster

    args = ["predict", big_scene, "-m", world / "model.pt", "--device", "cpu", "--workers", 1]
    args += ["--overlap", 16, "--block-size", 128, "--probabilities"]  # options are tagged
    # One torch thread everywhere: the probabilities depend on torch's thread count (see
    # the report of this suite), not on the scheduler.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ref = tmp_path / "ref"
    _again(_cli(*args, "-o", ref), tmp_path / "ref.log")
    out = tmp_path / "out"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        cmd = _cli(*args, "--scheduler", cluster.scheduler_address, "-o", out)
        log = tmp_path / "predict.log"
        with log.open("w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=f, env=_env())
            try:
                deadline = time.monotonic() + 300
                busy: list[str] = []
                while not busy:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "no task reached a worker"
                    busy = [w for w, tasks in client.processing().items() if tasks]
                    time.sleep(0.05)
                time.sleep(0.25)
                pids = client.run(os.getpid, workers=busy[:1])
                os.kill(pids[busy[0]], signal.SIGKILL)
                rc = proc.wait(300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        text = log.read_text()
        assert "Traceback" not in text, text
        if rc != 0:  # a lost task may fail the run: one line, then the same command resumes
            assert rc == 1 and len([ln for ln in text.splitlines() if ln.startswith("Error")]) == 1
            _again(cmd, tmp_path / "again.log")
    assert _digests(out, skip=("2_10.json",)) == _digests(ref, skip=("2_10.json",))
    assert _hidden(out) == []
